"""Curating landing hours in batches leaves exactly what curating them one by one leaves.

The telemetry job curates a run's hours in batches (telemetry_job.plan_batches, curate_batch): one
parse, dedupe, insert, quarantine replace and aggregates refresh for up to a day of hours. Here the
same faulty landing hours, plus crafted objects for what the simulator leaves to chance (a key
landed again in a later hour with an earlier ingestion time, an object delivered again an hour
later, a record a day late, an object that is not gzip), and an hour with nothing landed, are
curated by the job (main(), in a subprocess as SparkRunner runs it):

- hour by hour: one main() call per hour;
- in one batch: one main() call over all the hours;
- in batches of two hours (--batch-hours 2), so keys also repeat across batches;

and every table (curated rows, quarantine, 1- and 5-minute aggregates) and every per-hour report
must be the same. Re-running the batch changes no table, and its reports are those of re-running
each hour.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from iot_lake.curated.aggregates import AGGREGATE_TABLES
from iot_lake.curated.records import Record, parse_line
from iot_lake.curated.registries import load_registry
from iot_lake.curated.telemetry_job import CURATED_TELEMETRY, QUARANTINE_TELEMETRY, plan_batches
from iot_lake.lake import Lake, registry_key, registry_rows, telemetry_hour_prefix
from iot_lake.sources.telemetry import inventory_key, iter_lines, land_inventory
from tests.conftest import START, land_faulty_hours

ROOT = Path(__file__).resolve().parents[1]
SIMULATED = 4  # hours the simulator delivers; the hour after them lands nothing
HOURS = [START + timedelta(hours=h) for h in range(SIMULATED + 1)]
TABLES = (CURATED_TELEMETRY, QUARANTINE_TELEMETRY, *AGGREGATE_TABLES.values())
COUNTS = ("objects", "lines_landed", "curated_new", "duplicates_in_batch", "duplicates_existing", "quarantined")


def _iso(t) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _put(lake: Lake, hour, name: str, lines: list[str | dict]) -> str:
    key = f"{telemetry_hour_prefix(hour)}/iot-lake-telemetry-1-{hour:%Y-%m-%d-%H}-59-00-{name}.gz"
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    lake.write_bytes(key, gzip.compress(text.encode(), mtime=0))
    return key


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Lake:
    lake = land_faulty_hours(tmp_path_factory.mktemp("batches_source"), hours=SIMULATED)
    registry = load_registry(lake, START.date())
    good = next(
        json.loads(raw)
        for obj in lake.list(telemetry_hour_prefix(START))
        for raw in iter_lines(lake, obj.key)
        if isinstance(parse_line(raw.decode(), registry), Record)
    )
    template = {k: good[k] for k in ("device_id", "site_id", "metric", "value", "unit")}

    def record(message_id: str, at, ingested=True, **fields) -> dict:
        rec = {**template, "ts": _iso(at), "message_id": message_id, **fields}
        if ingested:
            rec["ingested_at"] = _iso(at + timedelta(seconds=2))
        return rec

    t = START + timedelta(minutes=20)
    # A key in hour 0, and again in hour 2 with another value and no ingestion time (which sorts
    # first): hour by hour, hour 0's copy is curated before hour 2 is read, so it must stay the
    # kept one in a batch too.
    _put(lake, HOURS[0], "first", [record("again-1", t, value=1.0), record("twice-in-hour", t)] * 2)
    _put(lake, HOURS[2], "again", [record("again-1", t, ingested=False, value=2.0)])
    # The same object delivered again an hour later, under another key.
    redelivered = [record(f"redelivered-{i}", t + timedelta(seconds=i)) for i in range(3)]
    _put(lake, HOURS[1], "delivered-a", redelivered)
    _put(lake, HOURS[2], "delivered-b", redelivered)
    # A day late (the previous event date), and a malformed line beside it.
    _put(lake, HOURS[3], "late", [record("a-day-late", t - timedelta(days=1)), '{"device_id": "dev-', "[1, 2]"])
    lake.write_bytes(f"{telemetry_hour_prefix(HOURS[3])}/iot-lake-telemetry-1-not-gzip.gz", b"PK\x03\x04 not gzip")
    for hour in HOURS:
        land_inventory(lake, hour)
    assert not json.loads(lake.read_bytes(inventory_key(HOURS[-1])))["objects"]  # the hour with nothing landed
    return lake


def _copy(source: Lake, tmp_path_factory, name: str) -> Lake:
    lake = Lake(str(tmp_path_factory.mktemp(name)))
    shutil.copytree(source.path(""), lake.path(""), dirs_exist_ok=True)
    return lake


def _job(lake: Lake, *runs: tuple[list, list[str]]) -> list[dict]:
    """main() once per (hours, extra arguments), in one process as tests/job_runs.py runs it; the
    per-hour reports it printed, in order."""
    argvs = [
        ["--lake", lake.url, *(a for h in hours for a in ("--hour", h.isoformat())), *flags] for hours, flags in runs
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "tests.job_runs", *map(json.dumps, argvs)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"hour"')]


def _tables(lake: Lake) -> dict[str, list[tuple]]:
    out = {}
    for key in TABLES:
        table: pa.Table = DeltaTable(lake.path(key)).to_pyarrow_table()
        columns = sorted(table.column_names)
        rows = zip(*(table.column(c).to_pylist() for c in columns))
        # Ordered by what must be equal (every table has a key among it), not by floats.
        out[key] = sorted(rows, key=lambda row: repr([v for v in row if not isinstance(v, float)]))
    return out


def assert_same_tables(actual: dict, expected: dict) -> None:
    # Exactly, floats too: an aggregate's mean and stddev are summed over sorted values, so other
    # files and batches give the same bits (iot_lake.curated.aggregates). NaN is no float here.
    for key in TABLES:
        assert len(actual[key]) == len(expected[key]) > 0, key
        for x, y in zip(actual[key], expected[key]):
            assert x == y, f"{key}:\n {x}\n {y}"


@pytest.fixture(scope="module")
def hour_by_hour(source, tmp_path_factory):
    lake = _copy(source, tmp_path_factory, "hour_by_hour")
    reports = _job(lake, *(([hour], []) for hour in HOURS))
    curated = DeltaTable(lake.path(CURATED_TELEMETRY)).to_pyarrow_table().to_pylist()
    assert [(r["value"], r["ingested_at"] is None) for r in curated if r["message_id"] == "again-1"] == [(1.0, False)]
    return _tables(lake), reports


def test_a_batch_leaves_what_hour_by_hour_runs_leave_and_a_rerun_changes_nothing(
    source, hour_by_hour, tmp_path_factory
):
    expected_tables, expected_reports = hour_by_hour
    # What the scenario must cover, or equality would prove little.
    by_hour = {r["hour"]: r for r in expected_reports}
    assert [r["hour"] for r in expected_reports] == [h.isoformat() for h in HOURS]
    assert all(r["lines_landed"] and r["duplicates_in_batch"] and r["quarantined"] for r in expected_reports[:-1])
    assert by_hour[HOURS[2].isoformat()]["duplicates_existing"] >= 4  # again-1 and the redelivered object
    assert sum(r["late_records"] for r in expected_reports) and sum(r["unreadable_objects"] for r in expected_reports)
    assert expected_reports[-1]["objects"] == 0

    lake = _copy(source, tmp_path_factory, "one_batch")
    assert plan_batches(lake, HOURS) == [HOURS]
    reports = _job(lake, (HOURS, []), (HOURS, []))
    first, rerun = reports[: len(HOURS)], reports[len(HOURS) :]
    assert first == expected_reports
    assert all(_accounted(r) for r in reports)
    assert_same_tables(_tables(lake), expected_tables)

    # The re-run: every key is already curated, and nothing changes.
    assert rerun == [
        {**r, "curated_new": 0, "duplicates_existing": r["curated_new"] + r["duplicates_existing"]}
        for r in expected_reports
    ]
    assert_same_tables(_tables(lake), expected_tables)


def _accounted(r: dict) -> bool:
    return (
        r["lines_landed"] == r["curated_new"] + r["duplicates_in_batch"] + r["duplicates_existing"] + r["quarantined"]
    )


def test_batches_of_two_hours_leave_the_same(source, hour_by_hour, tmp_path_factory):
    """Keys repeat across batches too; the batch holding only the empty hour writes nothing."""
    expected_tables, expected_reports = hour_by_hour
    lake = _copy(source, tmp_path_factory, "two_hour_batches")
    assert plan_batches(lake, HOURS, max_hours=2) == [HOURS[0:2], HOURS[2:4], HOURS[4:]]
    assert _job(lake, (HOURS, ["--batch-hours", "2"])) == expected_reports
    assert_same_tables(_tables(lake), expected_tables)


def test_batches_stay_within_their_bounds(source, tmp_path_factory):
    lake = _copy(source, tmp_path_factory, "plan")
    lines = [
        sum(o["records"] + o["malformed_lines"] for o in json.loads(lake.read_bytes(inventory_key(h)))["objects"])
        for h in HOURS
    ]
    budget = lines[0] + lines[1]
    batches = plan_batches(lake, HOURS, max_lines=budget)
    assert batches[0] == HOURS[:2] and [h for b in batches for h in b] == HOURS
    assert all(len(b) == 1 or sum(lines[HOURS.index(h)] for h in b) <= budget for b in batches)
    assert plan_batches(lake, HOURS, max_lines=1) == [[h] for h in HOURS]  # an hour over the budget alone
    assert plan_batches(lake, list(reversed(HOURS)), max_hours=3) == [HOURS[:3], HOURS[3:]]
    # The next day's hours: one batch, whether or not a new registry snapshot landed for them
    # (each object is validated against its own day's: test_a_batch_across_registry_snapshots...).
    next_day = [START + timedelta(days=1, hours=h) for h in (0, 1)]
    for hour in next_day:
        land_inventory(lake, hour)
    assert plan_batches(lake, [*HOURS, *next_day]) == [[*HOURS, *next_day]]
    lake.write_bytes(f"landing/historical/device_registry/{next_day[0]:%Y/%m/%d}/devices.parquet", b"only listed")
    assert plan_batches(lake, [*HOURS, *next_day]) == [[*HOURS, *next_day]]
    with pytest.raises(RuntimeError, match="materialize landing/telemetry"):
        plan_batches(lake, [START + timedelta(days=3)])


def test_a_batch_across_registry_snapshots_validates_each_hour_against_its_own_day(source, tmp_path_factory):
    """A device retired in the next day's registry snapshot: its lines of that day are rejected as
    unknown, its lines of the day before curated, in one batch exactly as in hour-by-hour runs."""
    lake = _copy(source, tmp_path_factory, "two_snapshots_by_hour")
    day, next_day = START.date(), START + timedelta(days=1)
    devices = registry_rows(lake, day, "devices")
    retired = devices[0]["device_id"]
    for table in ("devices", "device_metrics"):
        kept = [r for r in registry_rows(lake, day, table) if r["device_id"] != retired]
        lake.write_bytes(registry_key(next_day.date(), table), _parquet(kept))
    at = next_day + timedelta(minutes=5)
    lines = [_line(lake, day, d, f"next-day-{i}", at + timedelta(seconds=i)) for i, d in enumerate(devices[:2])]
    _put(lake, next_day, "next-day", lines)
    land_inventory(lake, next_day)
    hours = [*HOURS, next_day]
    batch = _copy(lake, tmp_path_factory, "two_snapshots_batch")
    assert plan_batches(batch, hours) == [hours]

    by_hour_reports = _job(lake, *(([hour], []) for hour in hours))
    assert _job(batch, (hours, [])) == by_hour_reports
    assert_same_tables(_tables(batch), _tables(lake))
    # The snapshots took effect: the retired device's line of the next day is quarantined as
    # unknown, the other device's curated, and the retired device's earlier lines stay curated.
    assert by_hour_reports[-1]["quarantine_reasons"] == {"unknown_device": 1}
    assert by_hour_reports[-1]["curated_new"] == 1
    curated = DeltaTable(batch.path(CURATED_TELEMETRY)).to_pyarrow_table().to_pylist()
    assert {r["message_id"] for r in curated if r["message_id"].startswith("next-day")} == {"next-day-1"}
    assert any(r["device_id"] == retired and r["event_ts"].date() == day for r in curated)


def _parquet(rows: list[dict]) -> bytes:
    import io

    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out.getvalue()


def _line(lake: Lake, day, device: dict, message_id: str, at) -> dict:
    """A valid line of one of the device's metrics as of ``day``'s registry: a mid-range value."""
    rule = next(r for r in registry_rows(lake, day, "device_metrics") if r["device_id"] == device["device_id"])
    return {
        "device_id": device["device_id"],
        "site_id": device["site_id"],
        "metric": rule["metric"],
        "unit": rule["unit"],
        "value": (rule["min_value"] + rule["max_value"]) / 2,
        "ts": _iso(at),
        "message_id": message_id,
        "ingested_at": _iso(at + timedelta(seconds=2)),
    }
