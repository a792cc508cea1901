"""Seeds the historical database: the device registry and past readings of the simulated fleet."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from iot_lake.fleet import METRICS, Fleet
from iot_lake.simulate.deliveries import SimConfig, series_day
from iot_lake.sources.historian import create_engine, device_metrics, devices, metadata, readings, sites
from iot_lake.units import from_canonical

READING_STEP_MIN = 15  # the historian kept 15-minute means
LOAD_DELAY = timedelta(minutes=20)  # rows entered the database a little after the period closed


def _registry_rows(fleet: Fleet, as_of: datetime) -> dict[sa.Table, list[dict]]:
    return {
        sites: [
            {
                "site_id": s.site_id,
                "name": s.name,
                "latitude": s.latitude,
                "longitude": s.longitude,
                "timezone": s.timezone,
                "updated_at": as_of,
            }
            for s in fleet.sites
        ],
        devices: [
            {
                "device_id": d.device_id,
                "site_id": d.site_id,
                "model": d.model,
                "firmware": d.firmware,
                "installed_on": d.installed_on,
                "updated_at": as_of,
            }
            for d in fleet.devices
        ],
        device_metrics: [
            {
                "device_id": d.device_id,
                "metric": m.metric,
                "unit": m.unit,
                "canonical_unit": METRICS[m.metric].unit,
                "min_value": METRICS[m.metric].min_value,
                "max_value": METRICS[m.metric].max_value,
                "updated_at": as_of,
            }
            for d in fleet.devices
            for m in d.metrics.values()
        ],
    }


def seed_historian(url: str, fleet: Fleet, cfg: SimConfig, start: date) -> dict[str, int]:
    """Create the schema, upsert the registry and replace the readings of the history window.

    Idempotent: seeding the same fleet and window twice leaves the same rows (same loaded_at), so
    an extract of an already-extracted window reads the same readings again.
    """
    engine = create_engine(url)
    if engine.dialect.name == "sqlite" and engine.url.database:
        Path(engine.url.database).resolve().parent.mkdir(parents=True, exist_ok=True)
    metadata.create_all(engine)
    as_of = datetime(start.year, start.month, start.day) - timedelta(days=cfg.history_days)
    history = [start - timedelta(days=cfg.history_days - i) for i in range(cfg.history_days)]
    rows = []
    for day in history:
        for d in fleet.devices:
            for metric, spec in d.metrics.items():
                s = series_day(fleet, cfg, d, metric, day)
                bucket = (s.t_ms // (READING_STEP_MIN * 60_000))[s.keep]
                values = from_canonical(s.values[s.keep], METRICS[metric].unit, spec.unit)
                uniq, inverse = np.unique(bucket, return_inverse=True)
                means = np.bincount(inverse, weights=values) / np.bincount(inverse)
                for b, mean in zip(uniq.tolist(), means.tolist()):
                    recorded = datetime.fromtimestamp(b * READING_STEP_MIN * 60, tz=UTC).replace(tzinfo=None)
                    rows.append(
                        {
                            "device_id": d.device_id,
                            "metric": metric,
                            "recorded_at": recorded,
                            "value": round(mean, 4),
                            "unit": spec.unit,
                            "loaded_at": recorded + timedelta(minutes=READING_STEP_MIN) + LOAD_DELAY,
                        }
                    )
    registry = _registry_rows(fleet, as_of)
    with engine.begin() as conn:
        # Children first on delete, parents first on insert: foreign keys hold throughout.
        for table in reversed(list(registry)):
            keys = [c.name for c in table.primary_key.columns]
            for row in registry[table]:
                conn.execute(table.delete().where(sa.and_(*(table.c[k] == row[k] for k in keys))))
        for table, table_rows in registry.items():
            conn.execute(table.insert(), table_rows)
        if history:
            lo = datetime(history[0].year, history[0].month, history[0].day)
            hi = datetime(start.year, start.month, start.day)
            conn.execute(
                readings.delete().where(
                    readings.c.recorded_at >= lo,
                    readings.c.recorded_at < hi,
                    readings.c.device_id.in_([d.device_id for d in fleet.devices]),
                )
            )
            if rows:
                conn.execute(readings.insert(), rows)
    engine.dispose()
    return {
        "sites": len(registry[sites]),
        "devices": len(registry[devices]),
        "device_metrics": len(registry[device_metrics]),
        "readings": len(rows),
    }
