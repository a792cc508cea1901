"""The historical database source: seeding, registry snapshot, incremental readings extract and the
Dagster assets, against real engines: SQLite in tmp_path and a PostgreSQL server the suite starts."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, materialize

from assets.landing.historian import device_registry, historical_readings
from iot_lake.fleet import METRICS, build_fleet
from iot_lake.lake import Lake
from iot_lake.simulate.deliveries import SimConfig
from iot_lake.simulate.historian import seed_historian
from iot_lake.sources import historian as hist
from iot_lake.sources.historian import (
    COMMIT_LAG,
    READINGS_SCHEMA,
    create_engine,
    device_metrics,
    devices,
    land_readings,
    land_registry,
    metadata,
    readings,
    sites,
)
from resources.historian import HistorianResource
from resources.lake import LakeResource
from tests import postgres
from tests.unavailable import assert_skipped_locally_and_failed_in_ci

CFG = SimConfig(devices=4, seed=1, history_days=2)  # seed 1: one of the four devices is imperial
START = date(2026, 11, 20)  # seeded history: Nov 18 and 19; extracting Nov 20 takes all of it
DAY1, DAY2, DAY3, DAY4 = (START + timedelta(days=i) for i in range(4))
LATER = datetime(2026, 12, 1, tzinfo=UTC)  # "now" for extracts: after every day used here
HOSTILE = "x'; DROP TABLE readings; --"  # 27 characters: fits VARCHAR(32) on PostgreSQL


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@pytest.fixture(scope="module")
def fleet():
    f = build_fleet(CFG.devices, CFG.seed)
    assert any(d.model == "TX-200US" for d in f.devices), "the fixture fleet should include an imperial device"
    return f


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """An empty historical database: a fresh SQLite file, or the session's PostgreSQL database with
    every table dropped before and after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'historian.sqlite'}"
        return
    url = request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
    metadata.drop_all(engine)
    try:
        yield url
    finally:
        metadata.drop_all(engine)
        engine.dispose()


@pytest.fixture
def engine(db_url):
    e = create_engine(db_url)
    yield e
    e.dispose()


@pytest.fixture
def lake(tmp_path):
    return Lake(str(tmp_path / "lake"))


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def all_ids(engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(readings.c.reading_id)).scalars())


def landed_ids(lake: Lake, day: date) -> list[int]:
    """reading_ids in a day's landed Parquet files (a list: duplicates must stay visible)."""
    ids = []
    for obj in lake.list(hist.readings_prefix(day)):
        table = pq.read_table(lake.path(obj.key))
        assert table.schema.equals(READINGS_SCHEMA)
        ids.extend(table.column("reading_id").to_pylist())
    return ids


def manifest(lake: Lake, day: date) -> dict:
    return json.loads(lake.read_bytes(f"{hist.readings_prefix(day)}/_manifest.json"))


# (device_id, metric, recorded_at) is unique: give every inserted row its own recorded_at, away from
# the seeded window. The extract only looks at loaded_at.
RECORDED = datetime(2026, 1, 1)
_SECONDS = itertools.count(1)


def add_readings(engine, loaded_at: list[datetime], device_id: str = "dev-0001") -> set[int]:
    """Insert one row per loaded_at (naive UTC, as the database keeps it); their new reading_ids."""
    rows = [
        {
            "device_id": device_id,
            "metric": "power",
            "recorded_at": RECORDED + timedelta(seconds=next(_SECONDS)),
            "value": 40.0 + i,
            "unit": "kW",
            "loaded_at": t,
        }
        for i, t in enumerate(loaded_at)
    ]
    before = all_ids(engine)
    with engine.begin() as conn:
        conn.execute(readings.insert(), rows)
    new = all_ids(engine) - before
    assert len(new) == len(rows)
    return new


def at(day: date, *hms: int) -> datetime:
    return datetime(day.year, day.month, day.day, *hms)


# --- seeding and the registry snapshot ---------------------------------------------------------


def test_seed_is_idempotent_and_registry_lands_as_parquet(db_url, engine, lake, fleet):
    first = seed_historian(db_url, fleet, CFG, START)
    expected_readings = CFG.devices * len(METRICS) * CFG.history_days * 96  # 15-minute means, 2 days
    assert first == {"sites": len(fleet.sites), "devices": 4, "device_metrics": 16, "readings": expected_readings}

    def snapshot():
        with engine.connect() as conn:
            return {
                t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in (sites, devices, device_metrics, readings)
            }, set(
                conn.execute(
                    sa.select(
                        readings.c.device_id,
                        readings.c.metric,
                        readings.c.recorded_at,
                        readings.c.value,
                        readings.c.loaded_at,
                    )
                ).all()
            )

    counts, content = snapshot()
    assert counts == {"sites": 1, "devices": 4, "device_metrics": 16, "readings": expected_readings}
    assert seed_historian(db_url, fleet, CFG, START) == first
    assert snapshot() == (counts, content)  # same rows, same loaded_at: nothing doubled or moved

    # loaded_at = recorded_at + 35 minutes, all inside the history window
    with engine.connect() as conn:
        lo, hi, bad = conn.execute(
            sa.select(
                sa.func.min(readings.c.recorded_at),
                sa.func.max(readings.c.loaded_at),
                sa.func.count().filter(readings.c.loaded_at <= readings.c.recorded_at),
            )
        ).one()
    assert (lo, hi, bad) == (datetime(2026, 11, 18), datetime(2026, 11, 20, 0, 20), 0)  # 23:45 + 35 min

    result = land_registry(lake, engine, START)
    prefix = "landing/historical/device_registry/2026/11/20"
    assert result.rows == {"sites": 1, "devices": 4, "device_metrics": 16}
    assert result.keys == [f"{prefix}/{t}.parquet" for t in ("sites", "devices", "device_metrics")]
    assert sorted(o.key for o in lake.list("landing/historical/device_registry")) == sorted(result.keys)

    site_rows = pq.read_table(lake.path(f"{prefix}/sites.parquet")).to_pylist()
    assert [s["site_id"] for s in site_rows] == [s.site_id for s in fleet.sites]
    assert site_rows[0]["updated_at"] == datetime(2026, 11, 18, tzinfo=UTC)  # tz-aware UTC

    device_rows = pq.read_table(lake.path(f"{prefix}/devices.parquet")).to_pylist()
    assert [(d["device_id"], d["model"], d["installed_on"]) for d in device_rows] == [
        (d.device_id, d.model, d.installed_on) for d in fleet.devices
    ]

    metric_rows = pq.read_table(lake.path(f"{prefix}/device_metrics.parquet")).to_pylist()
    assert len(metric_rows) == CFG.devices * 4
    by_key = {(m["device_id"], m["metric"]): m for m in metric_rows}
    for d in fleet.devices:
        for name, spec in d.metrics.items():
            m = by_key[(d.device_id, name)]
            assert m["unit"] == spec.unit  # the unit the device reports in
            assert (m["canonical_unit"], m["min_value"], m["max_value"]) == (
                METRICS[name].unit,
                METRICS[name].min_value,
                METRICS[name].max_value,
            )
    imperial = next(d for d in fleet.devices if d.model == "TX-200US")
    assert by_key[(imperial.device_id, "temperature")]["unit"] == "degF"
    assert by_key[(imperial.device_id, "pressure")]["unit"] == "psi"
    assert by_key[(imperial.device_id, "temperature")]["canonical_unit"] == "degC"


# --- the incremental readings extract ----------------------------------------------------------


def test_first_extract_takes_all_history_and_next_day_exactly_the_new_rows(db_url, engine, lake, fleet):
    seeded = seed_historian(db_url, fleet, CFG, START)["readings"]
    history = all_ids(engine)
    assert len(history) == seeded

    m1 = land_readings(lake, engine, DAY1, now=LATER)
    assert m1.low is None
    assert datetime.fromisoformat(m1.high) == midnight(DAY2)
    assert m1.rows == seeded
    ids1 = landed_ids(lake, DAY1)
    assert len(ids1) == len(set(ids1)) and set(ids1) == history
    assert manifest(lake, DAY1)["rows"] == seeded and manifest(lake, DAY1)["files"] == m1.files
    # Every column round-trips: naive UTC in the database, tz-aware UTC in the lake.
    landed_rows = sorted(tuple(r.values()) for f in m1.files for r in pq.read_table(lake.path(f)).to_pylist())
    with engine.connect() as conn:
        db_rows = sorted(
            (
                r.reading_id,
                r.device_id,
                r.metric,
                r.recorded_at.replace(tzinfo=UTC),
                r.value,
                r.unit,
                r.loaded_at.replace(tzinfo=UTC),
            )
            for r in conn.execute(sa.select(readings))
        )
    assert landed_rows == db_rows
    imperial = next(d for d in fleet.devices if d.model == "TX-200US")
    assert {r[5] for r in landed_rows if r[1] == imperial.device_id and r[2] == "temperature"} == {"degF"}

    # Next day's rows, including one exactly on each bound: (low, high] is exclusive below, inclusive above.
    on_day2 = add_readings(engine, [at(DAY2, 0, 0, 0, 1), at(DAY2, 9, 30), at(DAY2, 23, 59, 59), at(DAY3)])
    on_day3 = add_readings(engine, [at(DAY3, 0, 0, 0, 1)], device_id="dev-0002")

    m2 = land_readings(lake, engine, DAY2, now=LATER)
    assert m2.low == m1.high
    assert datetime.fromisoformat(m2.high) == midnight(DAY3)
    assert m2.rows == 4 and set(landed_ids(lake, DAY2)) == on_day2

    # Re-running day 1 reads exactly its own rows again, with the same bounds.
    again = land_readings(lake, engine, DAY1, now=LATER)
    assert (again.low, again.high, again.rows) == (m1.low, m1.high, m1.rows)
    assert sorted(landed_ids(lake, DAY1)) == sorted(ids1)
    # ... and so does re-running day 2, even after day 1 was re-run.
    assert set(landed_ids(lake, DAY2)) == on_day2
    again2 = land_readings(lake, engine, DAY2, now=LATER)
    assert (again2.low, again2.high) == (m2.low, m2.high) and set(landed_ids(lake, DAY2)) == on_day2

    m3 = land_readings(lake, engine, DAY3, now=LATER)
    assert m3.low == m2.high and set(landed_ids(lake, DAY3)) == on_day3


def test_extract_streams_in_chunks_ordered_by_loaded_at(db_url, engine, fleet):
    seeded = seed_historian(db_url, fleet, CFG, START)["readings"]
    batches = list(hist.extract_readings(engine, None, midnight(DAY2), chunk_rows=100))
    assert len(batches) == -(-seeded // 100) and all(b.num_rows <= 100 for b in batches)
    assert all(b.schema.equals(READINGS_SCHEMA) for b in batches)
    keys = [
        (t, i) for b in batches for t, i in zip(b.column("loaded_at").to_pylist(), b.column("reading_id").to_pylist())
    ]
    assert len(keys) == seeded and keys == sorted(keys)
    # (low, high]: a bound exactly on a loaded_at excludes it below and includes it above
    first_loaded = keys[0][0]
    at_first = sum(1 for t, _ in keys if t == first_loaded)
    assert sum(b.num_rows for b in hist.extract_readings(engine, None, first_loaded)) == at_first
    assert sum(b.num_rows for b in hist.extract_readings(engine, first_loaded, midnight(DAY2))) == seeded - at_first


def test_a_partial_day_is_completed_by_its_rerun_without_overlap(db_url, engine, lake, fleet):
    seed_historian(db_url, fleet, CFG, START)
    land_readings(lake, engine, DAY1, now=LATER)
    morning = add_readings(engine, [at(DAY2, 8)])
    partial = land_readings(lake, engine, DAY2, now=midnight(DAY2) + timedelta(hours=12))  # run at noon
    # The bound stays COMMIT_LAG behind the clock so rows of still-open transactions are not skipped.
    assert datetime.fromisoformat(partial.high) == midnight(DAY2) + timedelta(hours=12) - COMMIT_LAG
    assert set(landed_ids(lake, DAY2)) == morning

    evening = add_readings(engine, [at(DAY2, 18)])
    full = land_readings(lake, engine, DAY2, now=LATER)  # the nightly re-run, after the day is over
    assert full.low == partial.low and datetime.fromisoformat(full.high) == midnight(DAY3)
    assert set(landed_ids(lake, DAY2)) == morning | evening


# Orders in which the daily extracts run (day numbers; repeats are re-runs).
ORDERS = {
    "in_order": [1, 2, 3, 4],
    "day3_before_day2": [1, 3, 2, 4],
    "latest_first": [4, 3, 2, 1],
    "middle_first": [2, 4, 1, 3],
    "reruns_interleaved": [1, 3, 1, 2, 4, 3, 2],
}


@pytest.mark.parametrize("order", list(ORDERS.values()), ids=list(ORDERS))
def test_days_in_any_order_leave_no_gap_and_no_overlap(db_url, engine, lake, fleet, order):
    seed_historian(db_url, fleet, CFG, START)
    days = {1: DAY1, 2: DAY2, 3: DAY3, 4: DAY4}
    new = {
        n: add_readings(engine, [at(days[n], 3), at(days[n], 15), at(days[n] + timedelta(days=1))]) for n in (2, 3, 4)
    }  # each day's last row is loaded exactly at its midnight: still that day's
    expected_total = all_ids(engine)

    for n in order:
        land_readings(lake, engine, days[n], now=LATER)

    landed = {n: landed_ids(lake, days[n]) for n in days}
    union = [i for ids in landed.values() for i in ids]
    assert len(union) == len(set(union)), "a reading was landed by two days"
    assert set(union) == expected_total, "a reading was landed by no day"

    if order == ORDERS["day3_before_day2"]:
        # Day 3 ran right after day 1: it took everything after day 1's watermark, day 2 came up empty.
        assert set(landed[3]) == new[2] | new[3] and landed[2] == []
        assert manifest(lake, DAY3)["low"] == manifest(lake, DAY1)["high"]
        m1, m2 = manifest(lake, DAY1), manifest(lake, DAY2)
        assert m2["rows"] == 0 and m2["low"] == m2["high"] == m1["high"]  # an empty range at day 1's watermark
    if order == ORDERS["in_order"]:
        assert all(set(landed[n]) == new[n] for n in (2, 3, 4))
        for a, b in ((DAY1, DAY2), (DAY2, DAY3), (DAY3, DAY4)):
            assert manifest(lake, b)["low"] == manifest(lake, a)["high"]
    if order == ORDERS["latest_first"]:
        assert set(landed[4]) == expected_total and landed[1] == landed[2] == landed[3] == []


def test_rows_arriving_between_out_of_order_runs_are_not_lost(db_url, engine, lake, fleet):
    seed_historian(db_url, fleet, CFG, START)
    land_readings(lake, engine, DAY1, now=LATER)
    first = add_readings(engine, [at(DAY2, 6), at(DAY3, 6)])
    m3 = land_readings(lake, engine, DAY3, now=LATER)
    assert set(landed_ids(lake, DAY3)) == first
    assert land_readings(lake, engine, DAY2, now=LATER).rows == 0
    late = add_readings(engine, [at(DAY4, 1)])
    m4 = land_readings(lake, engine, DAY4, now=LATER)
    assert m4.low == m3.high and set(landed_ids(lake, DAY4)) == late
    union = [i for d in (DAY1, DAY2, DAY3, DAY4) for i in landed_ids(lake, d)]
    assert len(union) == len(set(union)) and set(union) == all_ids(engine)


def test_rerun_removes_stale_parts_of_an_earlier_extract(db_url, engine, lake, fleet):
    seed_historian(db_url, fleet, CFG, START)
    m1 = land_readings(lake, engine, DAY1, now=LATER)
    assert m1.files == [f"{hist.readings_prefix(DAY1)}/part-00000.parquet"]
    stale = f"{hist.readings_prefix(DAY1)}/part-00001.parquet"  # as left by an earlier, larger extract
    lake.write_bytes(stale, lake.read_bytes(m1.files[0]))
    again = land_readings(lake, engine, DAY1, now=LATER)
    assert not lake.exists(stale)
    assert [o.key for o in lake.list(hist.readings_prefix(DAY1))] == again.files == m1.files
    ids = landed_ids(lake, DAY1)
    assert len(ids) == len(set(ids)) == again.rows


def test_a_clock_behind_the_watermark_gives_an_empty_range_never_an_inverted_one(db_url, engine, lake, fleet):
    seed_historian(db_url, fleet, CFG, START)
    m1 = land_readings(lake, engine, DAY1, now=LATER)
    skewed = land_readings(lake, engine, DAY2, now=midnight(DAY1) + timedelta(hours=12))  # before day 1's high
    assert skewed.low == skewed.high == m1.high and skewed.rows == 0
    new = add_readings(engine, [at(DAY2, 5)])
    assert land_readings(lake, engine, DAY2, now=LATER).low == m1.high
    assert set(landed_ids(lake, DAY2)) == new


# --- values travel as parameters, never as SQL --------------------------------------------------


def test_hostile_device_id_round_trips_as_data(db_url, engine, lake, fleet):
    seed_historian(db_url, fleet, CFG, START)
    with engine.begin() as conn:
        conn.execute(
            devices.insert().values(
                device_id=HOSTILE,
                site_id=fleet.sites[0].site_id,
                model="TX-100",
                firmware="1.0.0",
                installed_on=date(2024, 1, 1),
                updated_at=datetime(2026, 11, 1),
            )
        )
    hostile_ids = add_readings(engine, [at(DAY1, 10), at(DAY1, 11)], device_id=HOSTILE)
    total = count(engine, readings)

    m = land_readings(lake, engine, DAY1, now=LATER)
    assert m.rows == total
    landed = [r for f in m.files for r in pq.read_table(lake.path(f)).to_pylist()]
    hostile_rows = [r for r in landed if r["device_id"] == HOSTILE]
    assert {r["reading_id"] for r in hostile_rows} == hostile_ids

    registry = land_registry(lake, engine, DAY1)
    assert registry.rows["devices"] == CFG.devices + 1
    landed_devices = pq.read_table(lake.path(hist.registry_key(DAY1, "devices"))).column("device_id").to_pylist()
    assert HOSTILE in landed_devices

    assert sa.inspect(engine).has_table("readings")
    assert count(engine, readings) == total


def test_extract_bounds_are_bound_parameters(db_url, engine, lake, fleet):
    seed_historian(db_url, fleet, CFG, START)
    land_readings(lake, engine, DAY1, now=LATER)
    statements = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def capture(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    land_readings(lake, engine, DAY2, now=LATER)
    selects = [(s, p) for s, p in statements if "FROM readings" in s]
    assert len(selects) == 1
    statement, parameters = selects[0]
    assert "2026" not in statement  # no value was formatted into the SQL text
    values = list(parameters.values()) if isinstance(parameters, dict) else list(parameters)
    assert len(values) == 2  # low and high


# --- the Dagster assets ---------------------------------------------------------------------------


def test_historian_assets_materialize_a_daily_partition(db_url, engine, tmp_path, fleet):
    # A complete past day, so the asset's real "now" never cuts the extract short.
    day = datetime.now(UTC).date() - timedelta(days=3)
    seeded = seed_historian(db_url, fleet, CFG, day)
    resources = {"lake": LakeResource(root=str(tmp_path / "lake")), "historian": HistorianResource(url=db_url)}

    def run():
        result = materialize(
            [device_registry, historical_readings],
            partition_key=day.isoformat(),
            resources=resources,
            instance=DagsterInstance.ephemeral(),
        )
        assert result.success
        mats = {
            m.asset_key.to_user_string(): m.materialization.metadata for m in result.get_asset_materialization_events()
        }
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        return mats, checks

    mats, checks = run()
    assert set(mats) == {"landing/device_registry", "landing/historical_readings"}
    r = mats["landing/historical_readings"]
    assert r["rows"].value == seeded["readings"] == r["dagster/row_count"].value
    assert r["watermark_low"].value == "(beginning)"
    assert r["watermark_high"].value == midnight(day + timedelta(days=1)).isoformat()
    g = mats["landing/device_registry"]
    assert (g["sites_rows"].value, g["devices_rows"].value, g["device_metrics_rows"].value) == (1, 4, 16)
    assert g["database"].value == engine.url.render_as_string(hide_password=True)
    assert checks["registry_complete"].passed

    lake = Lake(str(tmp_path / "lake"))
    assert set(landed_ids(lake, day)) == all_ids(engine)
    assert lake.exists(hist.registry_key(day, "device_metrics"))

    mats2, _ = run()  # re-materializing the partition is idempotent
    r2 = mats2["landing/historical_readings"]
    assert (r2["rows"].value, r2["watermark_low"].value, r2["watermark_high"].value) == (
        r["rows"].value,
        r["watermark_low"].value,
        r["watermark_high"].value,
    )


def test_registry_check_fails_on_an_empty_registry(db_url, engine, tmp_path):
    metadata.create_all(engine)  # schema, but nothing seeded
    day = datetime.now(UTC).date() - timedelta(days=3)
    result = materialize(
        [device_registry],
        partition_key=day.isoformat(),
        raise_on_error=False,
        resources={"lake": LakeResource(root=str(tmp_path / "lake")), "historian": HistorianResource(url=db_url)},
        instance=DagsterInstance.ephemeral(),
    )
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "registry_complete")
    assert not check.passed
    assert check.metadata["empty_tables"].value == "sites, devices, device_metrics"


# --- the server fixture itself ---------------------------------------------------------------------


def test_missing_server_binary_is_a_visible_skip_locally_and_a_failure_in_ci(monkeypatch):
    monkeypatch.setattr(postgres, "find_server_bindir", lambda: None)
    assert_skipped_locally_and_failed_in_ci(
        monkeypatch,
        postgres.server_bindir,
        skip="PostgreSQL server binary not found",
        fail="PostgreSQL server binary not found",
    )
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        postgres.server_bindir()


def test_newest_server_version_is_preferred():
    assert postgres._version_key("/usr/lib/postgresql/15/bin") > postgres._version_key("/usr/lib/postgresql/9.6/bin")


def test_a_row_committed_just_after_an_extract_is_not_skipped(db_url, engine, lake, fleet):
    """A transaction open during the extract commits a row with an earlier loaded_at: the next range has it."""
    seed_historian(db_url, fleet, CFG, START)
    run_at = midnight(DAY2) + timedelta(hours=12)
    land_readings(lake, engine, DAY1, now=LATER)
    land_readings(lake, engine, DAY2, now=run_at)
    straggler = add_readings(engine, [run_at - timedelta(minutes=1)])  # committed after the run
    land_readings(lake, engine, DAY3, now=LATER)
    assert straggler <= set(landed_ids(lake, DAY2)) | set(landed_ids(lake, DAY3))


# --- schema drift in the historian ----------------------------------------------------------------


def _alter(engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


def test_a_drifted_readings_table_lands_as_the_database_has_it_and_is_reported(db_url, engine, lake, fleet):
    """A column added and one renamed in the historian: the extract lands what is there (no crash, no
    row lost) and the curated history's drift report names the differences and the likely rename."""
    from iot_lake.curated.history_job import schema_drift

    seeded = seed_historian(db_url, fleet, CFG, START)["readings"]
    _alter(
        engine,
        "ALTER TABLE readings ADD COLUMN quality VARCHAR(8)",
        "ALTER TABLE readings RENAME COLUMN value TO reading_value",
        "UPDATE readings SET quality = 'good'",
    )
    m = land_readings(lake, engine, DAY1, now=LATER)
    assert m.rows == seeded
    [part] = [pq.read_table(lake.path(f)) for f in m.files]
    assert {"quality", "reading_value"} <= set(part.column_names) and "value" not in part.column_names
    assert set(part.column("quality").to_pylist()) == {"good"}
    drift = schema_drift(part.schema)
    assert drift.added == {"quality": "string", "reading_value": "double"}
    assert drift.missing == {"value": "double"} and drift.renamed == {"value": "reading_value"}


def test_a_text_value_in_a_numeric_column_lands_as_text_for_the_curated_side_to_reject(db_url, engine, lake, fleet):
    """SQLite keeps what it is given: one unparseable value makes the chunk's column text, not a crash;
    every row lands, and the drift report says the value column's rows are rejected (quarantined)."""
    from iot_lake.curated.history_job import schema_drift

    if engine.dialect.name != "sqlite":
        pytest.skip("a typed database refuses the text outright")
    seeded = seed_historian(db_url, fleet, CFG, START)["readings"]
    _alter(engine, "UPDATE readings SET value = '12,5' WHERE reading_id = 1")
    m = land_readings(lake, engine, DAY1, now=LATER)
    tables = [pq.read_table(lake.path(f)) for f in m.files]
    assert sum(t.num_rows for t in tables) == seeded
    assert any(t.schema.field("value").type == pa.string() for t in tables)
    assert "12,5" in [v for t in tables for v in t.column("value").to_pylist()]
    assert schema_drift(pa.unify_schemas([t.schema for t in tables], promote_options="permissive")).retyped == {
        "value": "double -> string (rows rejected)"
    }


def test_a_lost_watermark_fails_the_extract_saying_which_column_and_what_is_there(db_url, engine, lake, fleet):
    seed_historian(db_url, fleet, CFG, START)
    _alter(engine, "ALTER TABLE readings RENAME COLUMN loaded_at TO ingested")
    with pytest.raises(hist.HistorianSchemaError, match="no loaded_at column .*ingested"):
        land_readings(lake, engine, DAY1, now=LATER)
