"""Curated telemetry on Sail: exact row accounting, dedupe, quarantine, idempotent re-runs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, timedelta

import pytest
from deltalake import DeltaTable

from iot_lake.curated.object_counts import OBJECT_COUNTS
from iot_lake.curated.records import Record, parse_line
from iot_lake.curated.registries import load_registry
from iot_lake.curated.telemetry_job import (
    CURATED_TELEMETRY,
    QUARANTINE_TELEMETRY,
    CurateReport,
    curate_hour,
    per_hour_metadata,
)
from iot_lake.lake import TELEMETRY_PREFIX, telemetry_hour_of_key
from iot_lake.sources.telemetry import UnreadableObject, iter_lines, land_inventory
from tests.conftest import HOURS, START, simulate


def _table(lake, key):
    return DeltaTable(lake.path(key)).to_pyarrow_table()


def _rows(lake, key) -> list[str]:
    return sorted(json.dumps(row, default=str, sort_keys=True) for row in _table(lake, key).to_pylist())


def _object_counts(lake) -> dict[str, tuple]:
    """The stored counts per object: (landing hour, curated rows), the time of counting left out."""
    rows = _table(lake, OBJECT_COUNTS).to_pylist()
    assert len({r["source_object"] for r in rows}) == len(rows)  # one row per object, never appended
    return {r["source_object"]: (r["landing_hour"], r["curated_rows"]) for r in rows}


def _counted_by_hand(lake) -> dict[str, tuple]:
    """What the counts must be: every inventoried object of the hours, with its rows in curated/telemetry."""
    curated = Counter(_table(lake, CURATED_TELEMETRY).column("source_object").to_pylist())
    keys = {o.key for o in lake.list(TELEMETRY_PREFIX) if telemetry_hour_of_key(o.key)}
    return {k: (telemetry_hour_of_key(k), curated[k]) for k in keys}


def _expected_keys(lake):
    """Valid natural keys in everything readable that landed, computed without Spark."""
    registry = load_registry(lake, START.date())
    keys = set()
    for obj in lake.list(TELEMETRY_PREFIX):
        try:
            for raw in iter_lines(lake, obj.key):
                r = parse_line(raw.decode(), registry, telemetry_hour_of_key(obj.key))
                if isinstance(r, Record):
                    keys.add((r.device_id, r.metric, r.event_ts, r.message_id))
        except UnreadableObject:
            pass
    return keys


def test_every_landed_line_is_curated_duplicate_or_quarantined(landed, spark):
    reports = [curate_hour(spark, landed, START + timedelta(hours=h)) for h in range(HOURS)]
    for r in reports:
        assert r.accounted, r
        assert r.lines_landed > 0 and r.quarantined > 0 and r.duplicates_in_batch > 0
    curated = _table(landed, CURATED_TELEMETRY)
    rows = set(zip(*(curated.column(c).to_pylist() for c in ("device_id", "metric", "event_ts", "message_id"))))
    assert len(rows) == curated.num_rows == sum(r.curated_new for r in reports)  # no duplicate row
    assert rows == _expected_keys(landed)  # none lost, none invented
    # Late records sit in their event-time partition, not the landing hour's.
    assert set(curated.column("event_date").to_pylist()) == {date(2026, 11, 19), date(2026, 11, 20)}
    assert sum(r.late_records for r in reports) > 0
    assert set(curated.column("unit").to_pylist()) <= {"degC", "mm/s", "kPa", "kW"}

    quarantine = _table(landed, QUARANTINE_TELEMETRY).to_pylist()
    assert len([q for q in quarantine if q["reason"] != "unreadable_object"]) == sum(r.quarantined for r in reports)
    assert all(q["source_object"].startswith(TELEMETRY_PREFIX) for q in quarantine)
    rejected = [q for q in quarantine if q["reason"] != "unreadable_object"]
    assert all(q["raw_line"] and q["line_number"] >= 1 and q["detail"] for q in rejected)
    unreadable = [q for q in quarantine if q["reason"] == "unreadable_object"]
    assert len(unreadable) == sum(r.unreadable_objects for r in reports) > 0
    assert all("truncated" in q["detail"] for q in unreadable)


def test_rerunning_an_hour_changes_nothing(landed, spark):
    for h in range(HOURS):
        curate_hour(spark, landed, START + timedelta(hours=h))
    before_curated = _rows(landed, CURATED_TELEMETRY)
    before_quarantine = _table(landed, QUARANTINE_TELEMETRY).num_rows
    again = curate_hour(spark, landed, START + timedelta(hours=1))
    assert again.accounted and again.curated_new == 0 and again.duplicates_existing > 0
    assert _rows(landed, CURATED_TELEMETRY) == before_curated
    assert _table(landed, QUARANTINE_TELEMETRY).num_rows == before_quarantine
    # The per-object counts the warehouse sums are the table's, and a re-run stores the same ones.
    assert _object_counts(landed) == _counted_by_hand(landed)
    assert sum(n for _, n in _object_counts(landed).values()) == len(before_curated)


def test_object_counts_are_replaced_per_object_and_backfilled_once(landed, spark):
    """Counts are stored per object (a re-run replaces them, adds none); a lake curated before the
    counts table existed gets every object's counts from the first run that finds the table missing."""
    for h in range(HOURS):
        curate_hour(spark, landed, START + timedelta(hours=h))
    expected = _counted_by_hand(landed)
    assert _object_counts(landed) == expected and sum(n for _, n in expected.values()) > 0
    curate_hour(spark, landed, START + timedelta(hours=2))
    assert _object_counts(landed) == expected
    landed.delete(OBJECT_COUNTS, recursive=True)  # as before the table existed
    curate_hour(spark, landed, START)  # re-curating one hour counts every hour's objects
    assert _object_counts(landed) == expected


def test_rerun_is_idempotent_whatever_the_session_time_zone(landed, spark):
    curate_hour(spark, landed, START)
    before = _rows(landed, QUARANTINE_TELEMETRY)
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")  # as a cluster might be set up
    try:
        curate_hour(spark, landed, START)
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
    assert _rows(landed, QUARANTINE_TELEMETRY) == before
    assert _object_counts(landed) == {k: v for k, v in _counted_by_hand(landed).items() if v[0] == START}


def test_missing_inputs_fail_with_a_clear_message(tmp_path, spark):
    lake, _ = simulate(tmp_path, hours=1, devices=2)
    with pytest.raises(RuntimeError, match="materialize landing/telemetry"):
        curate_hour(spark, lake, START)
    land_inventory(lake, START)
    with pytest.raises(RuntimeError, match="materialize landing/device_registry"):
        curate_hour(spark, lake, START)


def test_job_script_runs_standalone(landed):
    out = subprocess.run(
        [sys.executable, "-m", "iot_lake.curated.telemetry_job", "--lake", landed.url, "--hour", START.isoformat()],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert (
        report["lines_landed"]
        == report["curated_new"] + report["duplicates_in_batch"] + report["duplicates_existing"] + report["quarantined"]
    )
    assert report["curated_new"] > 0


def test_registry_is_the_newest_snapshot_on_or_before_the_hour(landed):
    from iot_lake.sources.historian import latest_registry_day

    for later in (START.date() + timedelta(days=2), START.date() + timedelta(days=9)):
        landed.write_bytes(f"landing/historical/device_registry/{later:%Y/%m/%d}/devices.parquet", b"not read")
    assert latest_registry_day(landed, START.date()) == START.date()
    assert latest_registry_day(landed, START.date() + timedelta(days=5)) == START.date() + timedelta(days=2)
    assert latest_registry_day(landed, START.date() - timedelta(days=1)) is None


def test_the_first_ingestion_of_a_key_is_the_one_kept(spark):
    from datetime import datetime

    from iot_lake.curated.telemetry_job import CURATED_COLUMNS, later_copies

    t = datetime(2026, 11, 20, 10, tzinfo=UTC)
    late, later = t + timedelta(minutes=1), t + timedelta(minutes=2)
    rows = [  # (message id, ingested_at, source object, line number, value)
        ("a", later, "obj-1", 1, 1.0),
        ("a", late, "obj-2", 9, 2.0),  # first ingestion of a
        ("b", late, "obj-2", 5, 3.0),
        ("b", late, "obj-1", 7, 4.0),  # same ingestion time: the first object
        ("c", late, "obj-1", 8, 5.0),
        ("c", late, "obj-1", 3, 6.0),  # same object: the first line
        ("d", None, "obj-3", 1, 7.0),  # no ingestion time sorts first
        ("d", t, "obj-1", 1, 8.0),
        ("e", later, "obj-1", 2, 9.0),  # once
    ]
    valid = spark.createDataFrame(
        [
            ("dev-0001", "site-01", "temperature", v, "degC", v, "degC", t, m, ing, src, t.date(), n)
            for m, ing, src, n, v in rows
        ],
        ", ".join(
            f"{c} {ty}"
            for c, ty in zip(
                [*CURATED_COLUMNS, "line_number"],
                [
                    "string",
                    "string",
                    "string",
                    "double",
                    "string",
                    "double",
                    "string",
                    "timestamp",
                    "string",
                    "timestamp",
                    "string",
                    "date",
                    "bigint",
                ],
            )
        ),
    )
    later = {(r["message_id"], r["value"]) for r in later_copies(valid).collect()}
    kept = {m: v for m, _, _, _, v in rows if (m, v) not in later}
    assert kept == {"a": 2.0, "b": 4.0, "c": 6.0, "d": 7.0, "e": 9.0} and len(later) == len(rows) - len(kept)


def test_an_hours_run_tables_its_counts_and_a_range_run_points_to_them():
    """Dagster copies a range run's metadata into each hour's materialization, so only one hour's
    run carries the per-hour table; a range's hours are counted in the lake (object counts)."""
    counts = {"lines_landed": 0, "curated_new": 0}
    one = per_hour_metadata([CurateReport("2026-11-20-08:00", lines_landed=5, curated_new=4)], counts)
    assert one == {"raw_value": [{"hour": "2026-11-20-08:00", "lines_landed": 5, "curated_new": 4}], "type": "json"}
    hours = [CurateReport(f"2026-11-20-{h:02d}:00", lines_landed=5, curated_new=5) for h in range(8, 11)]
    pointer = per_hour_metadata(hours, counts)
    assert pointer["type"] == "text" and "curated/telemetry_object_counts" in pointer["raw_value"]
