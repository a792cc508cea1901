"""Conflicting duplicates on Sail: a later copy of a message that says something else is quarantined.

A gateway that reuses message ids, or firmware that re-sends a message with a new value, must be
visible: the later copy goes to quarantine as ``conflicting_duplicate`` with both payloads in its
detail, within a batch and against the curated table, and row accounting still holds.
"""

from __future__ import annotations

import gzip
import json
from datetime import timedelta

from deltalake import DeltaTable

from iot_lake.curated.registries import load_registry
from iot_lake.curated.telemetry_job import CURATED_TELEMETRY, QUARANTINE_TELEMETRY, curate_batch, curate_hour
from iot_lake.lake import Lake, telemetry_hour_prefix
from iot_lake.sources.telemetry import land_inventory
from tests.conftest import START, land_faulty_hours


def _line(lake: Lake, message_id: str, minute: int, value_step: int, landing_hour) -> dict:
    """A valid reading of the registry's first device metric, ``value_step`` tenths above mid-range."""
    (device, metric), rule = sorted(load_registry(lake, START.date()).rules.items())[0]
    assert rule.unit == rule.canonical_unit  # values below are then canonical as written
    value = round((rule.min_value + rule.max_value) / 2 + value_step / 10, 1)
    ts = START + timedelta(minutes=minute)
    return {
        "device_id": device,
        "site_id": "",
        "metric": metric,
        "value": value,
        "unit": rule.unit,
        "ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "message_id": message_id,
        "ingested_at": (max(ts, landing_hour) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _land(lake: Lake, hour, name: str, lines: list[dict]) -> None:
    lake.write_bytes(f"{telemetry_hour_prefix(hour)}/{name}", gzip.compress("\n".join(map(json.dumps, lines)).encode()))
    land_inventory(lake, hour)


def _quarantine(lake: Lake, name: str) -> list[dict]:
    rows = DeltaTable(lake.path(QUARANTINE_TELEMETRY)).to_pyarrow_table().to_pylist()
    return sorted((q for q in rows if q["source_object"].endswith(name)), key=lambda q: q["line_number"])


def _curated_ids(lake: Lake, message_ids: set[str]) -> list[tuple]:
    table = DeltaTable(lake.path(CURATED_TELEMETRY)).to_pyarrow_table().to_pylist()
    return sorted(
        (r["message_id"], r["event_ts"], r["reported_value"]) for r in table if r["message_id"] in message_ids
    )


def test_a_later_copy_with_another_payload_is_quarantined_within_the_hour(tmp_path, spark):
    lake = land_faulty_hours(tmp_path, hours=1)
    line = lambda m, minute, step: _line(lake, m, minute, step, START)  # noqa: E731
    _land(
        lake,
        START,
        "gateway.gz",
        [
            line("m-1", 10, 0),
            line("m-1", 10, 5),  # same message, another value: conflicting
            line("m-1", 10, 0),  # an exact copy: a duplicate
            line("m-2", 11, 0),
            line("m-2", 12, 0),  # same message, another time: conflicting
            line("m-3", 13, 0),
        ],
    )
    report = curate_hour(spark, lake, START)
    assert report.accounted, report
    assert report.quarantine_reasons["conflicting_duplicate"] == 2
    quarantined = _quarantine(lake, "gateway.gz")
    assert [(q["line_number"], q["reason"]) for q in quarantined] == [
        (2, "conflicting_duplicate"),
        (5, "conflicting_duplicate"),
    ]
    first = line("m-1", 10, 0)
    assert quarantined[0]["detail"].startswith(f"message m-1: {first['value'] + 0.5}")
    assert f"its first copy: {first['value']}" in quarantined[0]["detail"] and "gateway.gz" in quarantined[0]["detail"]
    raw = json.loads(quarantined[1]["raw_line"])  # the copy's own fields, to replay or inspect
    assert raw["message_id"] == "m-2" and raw["value"] == first["value"] and raw["device_id"] == first["device_id"]
    curated = _curated_ids(lake, {"m-1", "m-2", "m-3"})
    assert [(m, v) for m, _, v in curated] == [
        ("m-1", first["value"]),
        ("m-2", first["value"]),
        ("m-3", first["value"]),
    ]


def test_a_copy_that_contradicts_the_table_is_quarantined_and_reruns_change_nothing(tmp_path, spark):
    lake = land_faulty_hours(tmp_path, hours=2)
    later = START + timedelta(hours=1)
    _land(lake, START, "first.gz", [_line(lake, "m-1", 10, 0, START), _line(lake, "m-2", 20, 0, START)])
    _land(
        lake,
        later,
        "again.gz",
        [
            _line(lake, "m-1", 10, 3, later),  # contradicts the curated m-1: conflicting
            _line(lake, "m-2", 20, 0, later),  # agrees with the curated m-2: a duplicate
            _line(lake, "m-4", 70, 0, later),  # new
        ],
    )
    by_hour = [curate_hour(spark, lake, START), curate_hour(spark, lake, later)]
    assert all(r.accounted for r in by_hour), by_hour
    assert by_hour[1].quarantine_reasons["conflicting_duplicate"] == 1
    [conflict] = _quarantine(lake, "again.gz")
    assert conflict["line_number"] == 1 and conflict["reason"] == "conflicting_duplicate"
    assert "first.gz" in conflict["detail"]
    curated = _curated_ids(lake, {"m-1", "m-2", "m-4"})
    assert [m for m, _, _ in curated] == ["m-1", "m-2", "m-4"]
    assert curated[0][2] == _line(lake, "m-1", 10, 0, START)["value"]  # the first copy stays

    # A re-run of the later hour finds the same conflict and changes nothing.
    again = curate_hour(spark, lake, later)
    assert again.accounted and again.curated_new == 0
    assert again.quarantine_reasons == by_hour[1].quarantine_reasons
    assert _quarantine(lake, "again.gz") == [conflict]
    assert _curated_ids(lake, {"m-1", "m-2", "m-4"}) == curated


def test_one_batch_over_both_hours_decides_as_hour_by_hour_runs(tmp_path, spark):
    lake = land_faulty_hours(tmp_path, hours=2)
    later = START + timedelta(hours=1)
    _land(lake, START, "first.gz", [_line(lake, "m-1", 10, 0, START)])
    _land(lake, later, "again.gz", [_line(lake, "m-1", 10, 3, later), _line(lake, "m-1", 10, 0, later)])
    reports = curate_batch(spark, lake, [START, later])
    assert all(r.accounted for r in reports), reports
    assert reports[1].quarantine_reasons["conflicting_duplicate"] == 1
    assert [q["line_number"] for q in _quarantine(lake, "again.gz")] == [1]
    assert [m for m, _, _ in _curated_ids(lake, {"m-1"})] == ["m-1"]
