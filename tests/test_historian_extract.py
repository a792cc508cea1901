"""The historical database extract, against SQLite and a real PostgreSQL server."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, materialize

from assets.landing import device_registry, historical_readings
from iot_lake.fleet import build_fleet
from iot_lake.lake import Lake
from iot_lake.simulate.deliveries import SimConfig
from iot_lake.simulate.historian import seed_historian
from iot_lake.sources.historian import create_engine, land_readings, land_registry, metadata, readings, registry_key
from resources import HistorianResource, LakeResource
from tests import pg_server
from tests.pg_server import postgres_url  # noqa: F401  (session fixture)

START = date(2026, 11, 20)
CFG = SimConfig(devices=3, seed=4, history_days=2)
HISTORY_ROWS = 3 * 4 * 2 * 96  # devices x metrics x days x 15-minute periods


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/historian.sqlite"
        return
    url = request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    metadata.drop_all(engine)  # every test starts from an empty database
    engine.dispose()
    yield url


def _ids(lake: Lake, day: date) -> list[int]:
    ids = []
    for obj in lake.list(f"landing/historical/readings/{day:%Y/%m/%d}"):
        ids.extend(pq.read_table(lake.path(obj.key)).column("reading_id").to_pylist())
    return ids


def _add_readings(url: str, loaded_at: datetime, n: int, device_id: str = "dev-0001") -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(readings.insert(), [
            {"device_id": device_id, "metric": "power", "recorded_at": loaded_at - timedelta(minutes=30 + i),
             "value": 50.0 + i, "unit": "kW", "loaded_at": loaded_at} for i in range(n)
        ])
    engine.dispose()


def test_registry_snapshot_and_idempotent_seed(db_url, tmp_path):
    fleet = build_fleet(CFG.devices, CFG.seed)
    first = seed_historian(db_url, fleet, CFG, START)
    again = seed_historian(db_url, fleet, CFG, START)
    assert first == again == {"sites": 1, "devices": 3, "device_metrics": 12, "readings": HISTORY_ROWS}
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(readings)).scalar() == HISTORY_ROWS
    lake = Lake(str(tmp_path / "lake"))
    result = land_registry(lake, engine, START)
    engine.dispose()
    assert result.rows == {"sites": 1, "devices": 3, "device_metrics": 12}
    metrics = pq.read_table(lake.path(registry_key(START, "device_metrics"))).to_pylist()
    temperature = next(m for m in metrics if m["metric"] == "temperature")
    assert (temperature["min_value"], temperature["max_value"], temperature["canonical_unit"]) == (-40.0, 150.0, "degC")
    assert {m["unit"] for m in metrics} <= {"degC", "degF", "mm/s", "kPa", "psi", "kW"}


def test_readings_extract_is_incremental_idempotent_and_gapless(db_url, tmp_path):
    seed_historian(db_url, build_fleet(CFG.devices, CFG.seed), CFG, START)
    lake = Lake(str(tmp_path / "lake"))
    engine = create_engine(db_url)
    now = datetime(2026, 11, 26, tzinfo=timezone.utc)
    day1, day2, day3 = START, START + timedelta(days=1), START + timedelta(days=2)

    m1 = land_readings(lake, engine, day1, now=now)
    assert m1.low is None and m1.rows == HISTORY_ROWS == len(set(_ids(lake, day1)))
    assert datetime.fromisoformat(m1.high) == datetime(2026, 11, 21, tzinfo=timezone.utc)

    _add_readings(db_url, datetime(2026, 11, 21, 8), 5)
    _add_readings(db_url, datetime(2026, 11, 22, 9), 7, device_id="dev-0002")
    m3 = land_readings(lake, engine, day3, now=now)  # out of order: day 3 before day 2
    assert m3.low == m1.high and m3.rows == 12  # everything after day 1's watermark so far
    m2 = land_readings(lake, engine, day2, now=now)
    assert m2.rows == 0 and m2.high == m2.low  # day 3 already took it: no overlap

    ids_before = sorted(_ids(lake, day1))
    again = land_readings(lake, engine, day1, now=now)
    assert sorted(_ids(lake, day1)) == ids_before and (again.low, again.high) == (m1.low, m1.high)

    _add_readings(db_url, datetime(2026, 11, 23, 1), 3)
    m4 = land_readings(lake, engine, day3 + timedelta(days=1), now=now)
    assert m4.rows == 3 and m4.low == m3.high

    every = [i for d in (day1, day2, day3, day3 + timedelta(days=1)) for i in _ids(lake, d)]
    with engine.connect() as conn:
        all_ids = set(conn.execute(sa.select(readings.c.reading_id)).scalars())
    engine.dispose()
    assert len(every) == len(set(every)) and set(every) == all_ids  # no gap, no duplicate


def test_values_are_parameters_never_sql(db_url, tmp_path):
    seed_historian(db_url, build_fleet(CFG.devices, CFG.seed), CFG, START)
    hostile = "d'; DROP TABLE readings;--"  # fits the 32-character id column
    _add_readings(db_url, datetime(2026, 11, 20, 12), 2, device_id=hostile)
    lake = Lake(str(tmp_path / "lake"))
    engine = create_engine(db_url)
    m = land_readings(lake, engine, START, now=datetime(2026, 11, 26, tzinfo=timezone.utc))
    assert m.rows == HISTORY_ROWS + 2
    table = pq.read_table(lake.path(m.files[0]))
    assert table.column("device_id").to_pylist().count(hostile) == 2
    assert sa.inspect(engine).has_table("readings")
    engine.dispose()


def test_historian_assets_materialize(db_url, tmp_path):
    seed_historian(db_url, build_fleet(CFG.devices, CFG.seed), CFG, START)
    resources = {"lake": LakeResource(root=str(tmp_path / "lake")), "historian": HistorianResource(url=db_url)}
    result = materialize([device_registry, historical_readings], partition_key="2026-11-20",
                         resources=resources, instance=DagsterInstance.ephemeral())
    assert result.success
    mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    readings_meta = mats["landing/historical_readings"].materialization.metadata
    assert readings_meta["rows"].value == HISTORY_ROWS
    assert readings_meta["watermark_high"].value == "2026-11-21T00:00:00+00:00"
    registry_meta = mats["landing/device_registry"].materialization.metadata
    assert registry_meta["devices_rows"].value == 3
    check = result.get_asset_check_evaluations()[0]
    assert check.check_name == "registry_complete" and check.passed


def test_missing_server_is_a_visible_skip_locally_and_a_failure_in_ci(monkeypatch):
    monkeypatch.setattr(pg_server, "_find_bin", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL server binary"):
        pg_server.server_binaries()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL server binary"):
        pg_server.server_binaries()
