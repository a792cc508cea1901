"""The benchmark's historian extract: ``days`` of 15-minute readings of a ``devices`` fleet, as the
extract lands them (Parquet parts of 500,000 rows and a manifest per extract day), plus the registry.

Two extract days: the first holds the whole history; the second re-loads 1% of its readings (half
unchanged, half corrected) and adds imperfect rows (0.1% each: an unknown device, a unit that does
not convert, a value out of range, a null value), so both sides validate, quarantine and dedupe.
Built once per size under the work directory; each measured run copies it to a fresh lake.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from iot_lake.fleet import METRICS, build_fleet
from iot_lake.lake import Lake
from iot_lake.settings import local_historian_url
from iot_lake.simulate.deliveries import SimConfig
from iot_lake.simulate.historian import seed_historian
from iot_lake.sources.historian import create_engine, land_registry
from iot_lake.sources.readings import READINGS_SCHEMA, readings_manifest_key, readings_prefix
from iot_lake.units import from_canonical

EXTRACT_DAY = date(2026, 11, 20)
PART_ROWS = 500_000
STEP = timedelta(minutes=15)
_READY = ".ready"


@dataclass(frozen=True)
class Source:
    root: Path
    days: list[date]  # the extract days
    rows: int  # rows landed, both days


def _registry(lake: Lake, devices: int, seed: int):
    fleet = build_fleet(devices, seed)
    url = local_historian_url(lake.url)
    seed_historian(url, fleet, SimConfig(devices=devices, seed=seed, history_days=0), EXTRACT_DAY)
    engine = create_engine(url)
    try:
        land_registry(lake, engine, EXTRACT_DAY)
    finally:
        engine.dispose()
    return fleet


def _readings(fleet, days: int, rng: np.random.Generator) -> pa.Table:
    start = datetime.combine(EXTRACT_DAY - timedelta(days=days), datetime.min.time(), tzinfo=UTC)
    steps = days * 24 * 4
    times = np.array([int((start + i * STEP).timestamp() * 1e6) for i in range(steps)], dtype=np.int64)
    columns: dict[str, list] = {name: [] for name in ("device_id", "metric", "recorded_at", "value", "unit")}
    for device in fleet.devices:
        for metric, spec in device.metrics.items():
            rule = METRICS[metric]
            canonical = rule.min_value + (rule.max_value - rule.min_value) * (0.3 + 0.1 * rng.random(steps))
            columns["device_id"].append(np.full(steps, device.device_id, dtype=object))
            columns["metric"].append(np.full(steps, metric, dtype=object))
            columns["recorded_at"].append(times)
            columns["value"].append(np.round(from_canonical(canonical, rule.unit, spec.unit), 4))
            columns["unit"].append(np.full(steps, spec.unit, dtype=object))
    recorded = np.concatenate(columns["recorded_at"])
    n = len(recorded)
    return pa.table(
        {
            "reading_id": pa.array(np.arange(1, n + 1), pa.int64()),
            "device_id": pa.array(np.concatenate(columns["device_id"]), pa.string()),
            "metric": pa.array(np.concatenate(columns["metric"]), pa.string()),
            "recorded_at": pa.array(recorded, READINGS_SCHEMA.field("recorded_at").type),
            "value": pa.array(np.concatenate(columns["value"]), pa.float64()),
            "unit": pa.array(np.concatenate(columns["unit"]), pa.string()),
            "loaded_at": pa.array(recorded + 35 * 60 * 1_000_000, READINGS_SCHEMA.field("loaded_at").type),
        },
        schema=READINGS_SCHEMA,
    )


def _second_extract(first: pa.Table, rng: np.random.Generator) -> pa.Table:
    n = first.num_rows
    reloaded = first.take(pa.array(np.sort(rng.choice(n, max(2, n // 100), replace=False))))
    values = reloaded.column("value").to_numpy().copy()
    values[::2] += 0.5  # half of them corrected
    reloaded = reloaded.set_column(reloaded.schema.get_field_index("value"), "value", pa.array(values))
    bad = first.take(pa.array(rng.choice(n, max(4, n // 250), replace=False))).to_pylist()
    for i, row in enumerate(bad):
        kind = i % 4
        row["device_id"] = "dev-unknown" if kind == 0 else row["device_id"]
        row["unit"] = "bar" if kind == 1 else row["unit"]
        row["value"] = 1e9 if kind == 2 else (None if kind == 3 else row["value"])
    rows = pa.concat_tables([reloaded, pa.Table.from_pylist(bad, schema=READINGS_SCHEMA)])
    loaded = pa.array(
        np.full(
            rows.num_rows,
            int(datetime.combine(EXTRACT_DAY + timedelta(days=1), datetime.min.time(), tzinfo=UTC).timestamp() * 1e6),
        ),
        READINGS_SCHEMA.field("loaded_at").type,
    )
    return rows.set_column(rows.schema.get_field_index("loaded_at"), "loaded_at", loaded)


def _land(lake: Lake, day: date, table: pa.Table) -> None:
    files = []
    for i, offset in enumerate(range(0, max(table.num_rows, 1), PART_ROWS)):
        key = f"{readings_prefix(day)}/part-{i:05d}.parquet"
        sink = pa.BufferOutputStream()
        pq.write_table(table.slice(offset, PART_ROWS), sink, compression="zstd")
        lake.write_bytes(key, sink.getvalue().to_pybytes())
        files.append(key)
    extracted = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC) + timedelta(minutes=30)
    manifest = {
        "day": day.isoformat(),
        "low": None,
        "high": extracted.isoformat(),
        "rows": table.num_rows,
        "files": files,
        "extracted_at": extracted.isoformat(),
    }
    lake.write_text(readings_manifest_key(day), json.dumps(manifest))


def history_source(workdir: Path, devices: int, days: int, seed: int = 42) -> Source:
    root = workdir / f"history-{devices}x{days}-{seed}"
    extract_days = [EXTRACT_DAY, EXTRACT_DAY + timedelta(days=1)]
    if (root / _READY).exists():
        return Source(root, extract_days, int((root / _READY).read_text()))
    shutil.rmtree(root, ignore_errors=True)
    lake = Lake(str(root))
    rng = np.random.default_rng(seed)
    first = _readings(_registry(lake, devices, seed), days, rng)
    second = _second_extract(first, rng)
    _land(lake, extract_days[0], first)
    _land(lake, extract_days[1], second)
    rows = first.num_rows + second.num_rows
    (root / _READY).write_text(str(rows))
    return Source(root, extract_days, rows)


def fresh_lake(source: Source, path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(source.root, path, ignore=shutil.ignore_patterns(_READY))
    return path
