"""Shared by the serving API tests (tests/test_api.py, tests/test_workbench.py): a case store with two
open cases, and a lake with a registry, curated telemetry, the hot state, aggregates, detector scores
and forecasts of three origins, as the jobs write them (Spark's column types)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import write_deltalake

from iot_lake.api.app import create_app
from iot_lake.api.keys import ApiKeys
from iot_lake.api.readings import DEVIATIONS, FORECASTS
from iot_lake.cases.store import CaseStore
from iot_lake.curated.aggregates import AGGREGATE_TABLES, GRAINS
from iot_lake.curated.state import DEVICE_STATE
from iot_lake.lake import registry_key
from tests.cases_helpers import T0, point

NOW = T0 + timedelta(hours=2)
# Forecast origins -> their yhat: T0's covers T0..T0+24h, T0+1h's later buckets, T0+3h's is made after NOW.
ORIGINS = {T0: 10.0, T0 + timedelta(hours=1): 20.0, T0 + timedelta(hours=3): 30.0}
TS = pa.timestamp("us", tz="UTC")


def make_lake(root: Path, device: str = "dev-001") -> str:
    """A lake with a registry snapshot, a curated telemetry table whose newest reading is T0+1h, the
    device's hot state, its 1- and 5-minute aggregates from T0 to NOW, and forecasts of three origins."""
    lake = root / "lake"
    day = T0.date() - timedelta(days=1)
    devices = [{"device_id": device, "site_id": "site-1", "model": "tx-9", "firmware": "1.2"}]
    metrics = [{"device_id": device, "metric": "temperature", "unit": "degF", "canonical_unit": "degC"}]
    for table, rows in (("devices", devices), ("device_metrics", metrics)):
        path = lake / registry_key(day, table)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), path)
    ts = pa.array([T0, T0 + timedelta(hours=1)], TS)
    write_deltalake(str(lake / "curated" / "telemetry"), pa.table({"event_ts": ts, "value": [1.0, 2.0]}))
    _serving_tables(lake, device)
    return str(lake)


def _serving_tables(lake: Path, device: str) -> None:
    state = {"device_id": device, "metric": "temperature", "site_id": "site-1", "event_ts": T0 + timedelta(hours=1)}
    state |= {"message_id": "m-9", "value": 21.5, "unit": "degC", "updated_at": T0 + timedelta(hours=1, minutes=3)}
    write_deltalake(str(lake / DEVICE_STATE), pa.Table.from_pylist([state], _schema(state)))
    for grain, seconds in GRAINS.items():
        buckets = [T0 + timedelta(seconds=seconds * i) for i in range(int((NOW - T0).total_seconds()) // seconds)]
        rows = [_bucket(device, start, i) for i, start in enumerate(buckets)]
        write_deltalake(
            str(lake / AGGREGATE_TABLES[grain]),
            pa.Table.from_pylist(rows, _schema(rows[0])),
            partition_by=["event_date"],
        )
    # The detector scored minutes T0+60..T0+69; T0+62 was anomalous.
    minutes = [T0 + timedelta(minutes=60 + m) for m in range(10)]
    scored = [
        {"device_id": device, "metric": "temperature", "ts": ts, "score": 0.9 if m == 2 else round(0.1 * (m % 5), 1)}
        | {"is_anomalous": m == 2, "event_date": ts.date()}
        for m, ts in enumerate(minutes)
    ]
    write_deltalake(
        str(lake / DEVIATIONS), pa.Table.from_pylist(scored, _schema(scored[0])), partition_by=["event_date"]
    )
    forecasts = [
        {
            "device_id": device,
            "metric": "temperature",
            "bucket_start": origin + timedelta(minutes=5 * step),
            "yhat": yhat,
        }
        | {"lo_80": yhat - 1, "hi_80": yhat + 1, "lo_95": yhat - 2, "hi_95": yhat + 2, "origin": origin}
        | {"model_version": f"v{int(yhat)}", "method": "lightgbm", "origin_date": origin.date()}
        for origin, yhat in ORIGINS.items()
        for step in range(288)
    ]
    write_deltalake(
        str(lake / FORECASTS), pa.Table.from_pylist(forecasts, _schema(forecasts[0])), partition_by=["origin_date"]
    )


def _bucket(device: str, start, i: int) -> dict:
    return {
        "device_id": device,
        "site_id": "site-1",
        "metric": "temperature",
        "unit": "degC",
        "bucket_start": start,
    } | {
        "readings": 3,
        "mean": float(i),
        "min": i - 1.0,
        "max": i + 1.0,
        "stddev": 1.0,
        "last": float(i),
        "last_ts": start,
        "event_date": start.date(),
    }


def _schema(row: dict) -> pa.Schema:
    """Spark's types: UTC timestamps, dates, doubles, longs, strings."""
    types = {datetime: TS, date: pa.date32(), float: pa.float64(), int: pa.int64(), str: pa.string(), bool: pa.bool_()}
    return pa.schema([(k, types[type(v)]) for k, v in row.items()])


def open_cases(url: str) -> list[str]:
    """Two open cases on two devices (the second one never back in band)."""
    with CaseStore(url) as store:
        store.observe_many([point(0), point(1), point(2, anomalous=False)])
        store.observe_many([point(5, device="dev-002"), point(6, device="dev-002")])
        return [c.case_key for c in store.list_cases()]


def make_app(root: Path, per_second: int = 1000, device: str = "dev-001", limits_path: str | None = None):
    url = f"sqlite:///{root / 'cases.sqlite'}"
    keys = open_cases(url)
    lake = make_lake(root, device)
    app = create_app(url, lake, per_second=per_second, clock=lambda: NOW, limits_path=limits_path)
    tokens = {scope: ApiKeys(url).create(f"{scope}-person", scope) for scope in ("read", "operator")}
    return app, url, keys, tokens


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}
