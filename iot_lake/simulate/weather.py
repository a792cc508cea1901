"""Third-party hourly weather, delivered as one file per site and day, CSV or JSON by provider.

Some files arrive broken, the way partner feeds do; the truth file says which and how.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np

from iot_lake.fleet import Fleet, Site
from iot_lake.ids import validate_id
from iot_lake.lake import weather_day_prefix
from iot_lake.simulate.signals import STREAM_WEATHER_FILE, day_start_ms, rng_for, weather_at

DEFECTS = ("missing_column", "not_a_number", "garbled", "out_of_range")
COLUMNS = ("site_id", "observed_at", "temperature_c", "humidity_pct", "wind_speed_ms", "precipitation_mm")


@dataclass
class WeatherFile:
    key: str
    body: bytes
    defect: str | None


def weather_rows(fleet: Fleet, site: Site, day: date) -> list[dict]:
    t = day_start_ms(day) + np.arange(24, dtype=np.int64) * 3_600_000
    w = weather_at(fleet, site, t)
    return [
        {
            "site_id": site.site_id,
            "observed_at": datetime.fromtimestamp(int(t[i]) / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "temperature_c": round(float(w.temperature_c[i]), 2),
            "humidity_pct": round(float(w.humidity_pct[i]), 1),
            "wind_speed_ms": round(float(w.wind_speed_ms[i]), 2),
            "precipitation_mm": round(float(w.precipitation_mm[i]), 2),
        }
        for i in range(24)
    ]


def weather_file(fleet: Fleet, site: Site, day: date, bad_rate: float) -> WeatherFile:
    site_index = fleet.sites.index(site)
    as_json = site_index % 2 == 1  # two providers: one sends CSV, the other JSON
    rows = weather_rows(fleet, site, day)
    rng = rng_for(fleet.seed, STREAM_WEATHER_FILE, site_index, day.toordinal())
    defect = DEFECTS[rng.integers(len(DEFECTS))] if rng.random() < bad_rate else None
    columns = list(COLUMNS)
    if defect == "missing_column":
        columns.remove("temperature_c")
    elif defect == "not_a_number":
        rows[int(rng.integers(24))]["temperature_c"] = "N/A"
    elif defect == "out_of_range":
        rows[int(rng.integers(24))]["humidity_pct"] = 180.0
    rows = [{c: r[c] for c in columns} for r in rows]
    if as_json:
        body = json.dumps({"provider": "openmeteo-like", "site_id": site.site_id, "observations": rows}, indent=1)
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        body = buf.getvalue()
    if defect == "garbled":
        body = body[: len(body) // 3] + "\x00\x00<html>502 Bad Gateway</html>"
    ext = "json" if as_json else "csv"
    key = f"{weather_day_prefix(day)}/weather_{validate_id('site', site.site_id)}_{day:%Y%m%d}.{ext}"
    return WeatherFile(key=key, body=body.encode("utf-8"), defect=defect)
