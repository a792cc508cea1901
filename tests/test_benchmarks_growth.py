"""The growth benchmark (benchmarks/growth): the month of history it makes from one hour's rows, in
Delta and in the warehouse's DuckDB, its verdicts, and the whole benchmark at its smoke size."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from benchmarks.growth.history import replicate_delta, replicate_duckdb, replicate_object_counts
from benchmarks.growth.run import PARTS, TARGET, results
from benchmarks.results import read
from iot_lake.lake import telemetry_hour_of_key

REPO = Path(__file__).resolve().parents[1]
HOUR = datetime(2026, 11, 21, 12, tzinfo=UTC)


def _minutes(hour: datetime, devices: list[str], late: int = 0) -> pa.Table:
    """1-minute rows of an hour, and ``late`` rows of earlier minutes (late records), as curated holds them."""
    stamps = [hour + timedelta(minutes=m) for m in range(60)] + [
        hour - timedelta(hours=3, minutes=m) for m in range(late)
    ]
    rows = [(d, t) for d in devices for t in stamps]
    return pa.table(
        {
            "device_id": [d for d, _ in rows],
            "metric": ["temperature"] * len(rows),
            "bucket_start": pa.array([t for _, t in rows], pa.timestamp("us", tz="UTC")),
            "mean": [float(i) for i in range(len(rows))],
            "event_date": pa.array([t.date() for _, t in rows], pa.date32()),
        }
    )


def test_a_delta_tables_hour_is_copied_back_an_hour_at_a_time_with_its_partitions(tmp_path):
    uri = str(tmp_path / "telemetry_1min")
    write_deltalake(uri, _minutes(HOUR, ["d1", "d2"], late=5), partition_by=["event_date"])
    added = replicate_delta(uri, "bucket_start", HOUR, 47)

    table = DeltaTable(uri).to_pyarrow_table()
    assert added == 47 * 120  # the hour's rows; its late ones (earlier hours') are gone
    assert table.num_rows == 48 * 120
    keys = pc.binary_join_element_wise(
        table["device_id"], pc.cast(pc.cast(table["bucket_start"], pa.int64()), pa.string()), "|"
    )
    assert len(pc.unique(keys)) == table.num_rows  # no key twice
    assert pc.min(table["bucket_start"]).as_py() == HOUR - timedelta(hours=47)
    # Every row's partition is the date of its own time.
    dates = pc.cast(pc.cast(table["bucket_start"], pa.timestamp("us")), pa.date32())
    assert pc.all(pc.equal(dates, table["event_date"])).as_py()
    days = {p["event_date"] for p in DeltaTable(uri).partitions()}
    assert days == {(HOUR.date() - timedelta(days=n)).isoformat() for n in range(3)}


def test_the_object_counts_are_copied_back_with_each_copys_objects_in_its_own_hour(tmp_path):
    uri = str(tmp_path / "telemetry_object_counts")
    objects = [
        f"landing/telemetry/{h:%Y/%m/%d/%H}/fh-{i}.json.gz" for h in (HOUR - timedelta(hours=1), HOUR) for i in (1, 2)
    ]
    hours = [telemetry_hour_of_key(k) for k in objects]
    counts = pa.table(
        {
            "source_object": objects,
            "landing_hour": pa.array(hours, pa.timestamp("us", tz="UTC")),
            "curated_rows": pa.array([5, 6, 7, 8], pa.int64()),
            "counted_at": pa.array(hours, pa.timestamp("us", tz="UTC")),
            "landing_date": pa.array([h.date() for h in hours], pa.date32()),
        }
    )
    write_deltalake(uri, counts, partition_by=["landing_date"])
    assert replicate_object_counts(uri, HOUR, 25) == 50

    table = DeltaTable(uri).to_pyarrow_table().to_pylist()
    assert len(table) == 52 and len({r["source_object"] for r in table}) == 52  # an object counted once
    assert all(telemetry_hour_of_key(r["source_object"]) == r["landing_hour"] for r in table)
    assert all(r["landing_date"] == r["landing_hour"].date() for r in table)
    assert sum(r["curated_rows"] for r in table) == 26 * 15  # the hour's counts, the hour before's replaced


def test_a_warehouse_tables_hour_is_copied_back_in_duckdb(tmp_path):
    database = str(tmp_path / "warehouse.duckdb")
    with duckdb.connect(database) as con:
        con.execute("create schema marts")
        con.execute(
            "create table marts.fct_telemetry_hourly "
            "(device_id varchar, metric varchar, hour_start timestamp, event_date date, readings bigint)"
        )
        naive = HOUR.replace(tzinfo=None)
        con.executemany(
            "insert into marts.fct_telemetry_hourly values (?, 'temperature', ?, ?, 360)",
            [
                ("d1", naive, naive.date()),
                ("d2", naive, naive.date()),
                ("d1", naive - timedelta(hours=1), naive.date()),
            ],
        )
    assert replicate_duckdb(database, "marts.fct_telemetry_hourly", "hour_start", HOUR, 25) == 50
    with duckdb.connect(database, read_only=True) as con:
        rows = con.execute(
            "select count(*), count(distinct (device_id, hour_start)), min(hour_start), "
            "count(*) filter (where cast(hour_start as date) <> event_date) from marts.fct_telemetry_hourly"
        ).fetchone()
    # The row an hour before HOUR (a late record's) gave way to the first copy, not doubled by it.
    assert rows[0] == 52 and rows[1] == 52
    assert rows[2] == HOUR.replace(tzinfo=None) - timedelta(hours=25)
    assert rows[3] == 0  # every copy's date is its hour's


def test_only_curated_deviations_and_the_hourly_facts_are_judged():
    parts = list(PARTS)
    reference = [dict.fromkeys(parts, 10.0)]
    grown = [{**dict.fromkeys(parts, 12.0), "curated": 14.0, "warehouse": 40.0}]
    out = {r.measure.split(":")[0]: r for r in results(reference, grown, dict.fromkeys(parts, 20.0), 720, 30.0)}
    assert out["curated telemetry + 1-/5-minute aggregates"].met is False  # 1.4
    assert out["deviations (deviations_job)"].met is True  # 1.2
    assert out["warehouse hourly facts (warehouse_hourly_job)"].target == TARGET
    assert out["warehouse staging, dimensions, cases (warehouse_job)"].met is None  # 4x, information
    assert out["landing inventory"].met is None
    assert all("720th hour (719 hours of tables)" in r.measure for r in out.values())
    assert "72nd hour" in results(reference, grown, dict.fromkeys(parts, 20.0), 72, 30.0)[0].measure
    # The deviations' first hour of a day (a full replay, no kept states) is said beside them.
    assert out["deviations (deviations_job)"].note.endswith("the first hour of its day (a full replay): 30.0 s")
    assert "first hour of its day" not in out["curated telemetry + 1-/5-minute aggregates"].note


@pytest.mark.slow
def test_the_smoke_run_measures_every_part_against_the_short_tables(tmp_path):
    out = tmp_path / "growth.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.growth", "--quick", "--workdir", str(tmp_path), "--json", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    rows = read(out)
    assert [r.measure.split(":")[0] for r in rows] == [label for label, _ in PARTS.values()]
    assert all(r.value > 0 and r.reference_value > 0 for r in rows)
    assert sum(r.target is not None for r in rows) == 3
    assert json.loads(out.read_text())[0]["benchmark"] == "growth"
