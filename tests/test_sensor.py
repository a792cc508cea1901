"""landing_sensor, evaluated directly with build_sensor_context against a real lake directory."""

from __future__ import annotations

import gzip
import json
import os
import time
from datetime import UTC, datetime, timedelta

from dagster import DagsterInstance, build_sensor_context

from iot_lake.announcements import announce, announcement_key
from iot_lake.lake import TELEMETRY_PREFIX, WEATHER_PREFIX, Lake, telemetry_hour_prefix
from iot_lake.simulate.deliveries import SimConfig
from iot_lake.simulate.runner import Simulator
from resources.lake import LakeResource
from sensors.landing import GRACE_SECONDS, landing_sensor
from tests.conftest import START, simulate


def tick(lake: Lake, cursor: str | None, instance: DagsterInstance):
    context = build_sensor_context(cursor=cursor, resources={"lake": LakeResource(root=lake.url)}, instance=instance)
    return landing_sensor(context)


def test_requests_each_touched_partition_once_and_remembers(tmp_path):
    lake, _ = simulate(tmp_path, hours=48, devices=3)
    instance = DagsterInstance.ephemeral()
    first = tick(lake, None, instance)
    telemetry = [r for r in first.run_requests if r.job_name == "telemetry_hourly_job"]
    weather = [r for r in first.run_requests if r.job_name == "weather_daily_job"]
    assert sorted(r.partition_key for r in telemetry) == [f"2026-11-{20 + h // 24}-{h % 24:02d}:00" for h in range(48)]
    assert [r.partition_key for r in weather] == ["2026-11-20", "2026-11-21"]
    assert all(r.tags["iot_lake/new_objects"] == "12" for r in telemetry)

    again = tick(lake, first.cursor, instance)
    assert again.run_requests == [] and again.asset_events == []

    # A repeated evaluation from the same cursor asks for the same runs: run keys dedupe them.
    replay = tick(lake, None, instance)
    assert [r.run_key for r in replay.run_requests] == [r.run_key for r in first.run_requests]

    # One late object in an hour that was already processed (the newest, still open): exactly that
    # partition, a new run key.
    late_key = f"{telemetry_hour_prefix(START + timedelta(hours=47))}/iot-lake-telemetry-1-2026-11-21-23-59-00-late.gz"
    lake.write_bytes(late_key, gzip.compress(b'{"device_id": "dev-0001"}\n'))
    third = tick(lake, again.cursor, instance)
    assert [(r.partition_key, r.tags["iot_lake/new_objects"]) for r in third.run_requests] == [
        ("2026-11-21-23:00", "1")
    ]
    original = next(r for r in first.run_requests if r.partition_key == "2026-11-21-23:00")
    assert third.run_requests[0].run_key != original.run_key
    assert tick(lake, third.cursor, instance).run_requests == []


def test_unreadable_and_misplaced_objects_are_recorded_never_fatal(tmp_path):
    lake = Lake(str(tmp_path))
    prefix = telemetry_hour_prefix(START)
    lake.write_bytes(f"{prefix}/a.gz", b"not gzip")
    lake.write_bytes(f"{prefix}/b.gz", b"")
    lake.write_bytes(f"{prefix}/c.gz", gzip.compress(b"{}\n"))
    lake.write_bytes("landing/telemetry/stray-object.gz", gzip.compress(b"{}\n"))
    lake.write_bytes("landing/telemetry/2019/01/01/00/old.gz", gzip.compress(b"{}\n"))
    lake.write_bytes("landing/thirdparty/weather/2026/11/20/readme.txt", b"hello")
    result = tick(lake, None, DagsterInstance.ephemeral())

    reasons = {
        e.metadata["object"].value.rsplit("/", 1)[1]: e.metadata["unreadable_reason"].value for e in result.asset_events
    }
    assert reasons["a.gz"] == "not gzip (bad magic bytes)"
    assert reasons["b.gz"] == "empty object"
    assert reasons["stray-object.gz"] == "key does not follow the landing layout"
    assert reasons["old.gz"].startswith("outside the partitions of telemetry_hourly_job")
    assert reasons["readme.txt"] == "not a .csv or .json file"
    assert "c.gz" not in reasons
    # Unreadable objects still reach their partition's inventory; misplaced ones start no run.
    assert sorted((r.job_name, r.partition_key, r.tags["iot_lake/new_objects"]) for r in result.run_requests) == [
        ("telemetry_hourly_job", "2026-11-20-00:00", "3"),
        ("weather_daily_job", "2026-11-20", "1"),
    ]
    assert tick(lake, result.cursor, DagsterInstance.ephemeral()).asset_events == []


def test_object_listed_late_with_an_older_mtime_is_not_missed(tmp_path):
    lake = Lake(str(tmp_path))
    prefix = telemetry_hour_prefix(START)
    lake.write_bytes(f"{prefix}/first.gz", gzip.compress(b"{}\n"))
    first = tick(lake, None, DagsterInstance.ephemeral())
    # S3 stamps a multipart upload with its start time: it can appear after newer objects.
    lake.write_bytes(f"{prefix}/slow-upload.gz", gzip.compress(b"{}\n"))
    backdated = time.time() - GRACE_SECONDS / 2
    os.utime(lake.path(f"{prefix}/slow-upload.gz"), (backdated, backdated))
    second = tick(lake, first.cursor, DagsterInstance.ephemeral())
    assert [r.tags["iot_lake/new_objects"] for r in second.run_requests] == ["1"]
    cursor = json.loads(second.cursor)
    assert len(cursor["recent"]) == 2  # both remembered within the grace window


def test_hidden_side_files_are_ignored(tmp_path):
    lake, _ = simulate(tmp_path, hours=1, devices=2)
    first = tick(lake, None, DagsterInstance.ephemeral())
    lake.write_text("landing/_inventory/telemetry/2026/11/20/00.json", "{}")
    lake.fs.pipe_file(lake.path(f"{telemetry_hour_prefix(START)}/.partial.gz.tmp"), b"x")
    assert tick(lake, first.cursor, DagsterInstance.ephemeral()).run_requests == []


def test_an_old_hour_is_seen_through_its_announcement_only(tmp_path):
    lake, _ = simulate(tmp_path, hours=48, devices=2)
    instance = DagsterInstance.ephemeral()
    first = tick(lake, None, instance)
    old = f"{telemetry_hour_prefix(START)}/iot-lake-telemetry-1-2026-11-20-00-30-00-imported.gz"
    open_hour = f"{telemetry_hour_prefix(START + timedelta(hours=46))}/iot-lake-telemetry-1-2026-11-21-22-30-00-late.gz"
    for key in (old, open_hour):
        lake.write_bytes(key, gzip.compress(b'{"device_id": "dev-0001"}\n'))
    # Weather: the days from two before the newest (2026-11-21) are open, the 17th is not.
    old_weather = "landing/thirdparty/weather/2026/11/17/weather_site-01_20261117.csv"
    lake.write_text(old_weather, "site_id\n")

    # Documented: the listing covers the open hours only, so the old hour's object is not seen...
    second = tick(lake, first.cursor, instance)
    assert [(r.partition_key, r.tags["iot_lake/new_objects"]) for r in second.run_requests] == [
        ("2026-11-21-22:00", "1")
    ]
    assert tick(lake, second.cursor, instance).run_requests == []

    # ...until it is announced; naming the open hour's object again requests it no second time.
    announce(lake, "import", [old, open_hour, old_weather])
    lake.write_text(announcement_key("broken", datetime.now(UTC)), "not json")
    third = tick(lake, second.cursor, instance)
    assert [(r.partition_key, r.tags["iot_lake/new_objects"]) for r in third.run_requests] == [
        ("2026-11-20-00:00", "1"),
        ("2026-11-17", "1"),
    ]
    assert tick(lake, third.cursor, instance).run_requests == []


def test_objects_landing_hour_by_hour_are_requested_exactly_once(tmp_path):
    lake = Lake(str(tmp_path))
    sim = Simulator(SimConfig(devices=2, seed=7), lake)
    instance = DagsterInstance.ephemeral()
    cursor, requested = None, 0
    for hour in range(26):  # across midnight, so a weather day lands too
        sim.backfill(START + timedelta(hours=hour), START + timedelta(hours=hour + 1))
        result = tick(lake, cursor, instance)
        cursor, requested = (
            result.cursor,
            requested + sum(int(r.tags["iot_lake/new_objects"]) for r in result.run_requests),
        )
    landed = [*lake.list(TELEMETRY_PREFIX), *lake.list(WEATHER_PREFIX)]
    assert requested == len(landed) > 26
    assert tick(lake, cursor, instance).run_requests == []
    # The window followed the newest hour: it starts two hours before it, not at the first.
    assert json.loads(cursor)["newest"]["telemetry"] == "2026/11/21/01"


def test_switching_back_from_the_queue_lists_everything_once(tmp_path):
    lake, _ = simulate(tmp_path, hours=2, devices=2)
    instance = DagsterInstance.ephemeral()
    result = tick(lake, json.dumps({"receipts": ["handle-of-a-message"]}), instance)
    assert [(r.partition_key, r.tags["iot_lake/new_objects"]) for r in result.run_requests] == [
        ("2026-11-20-00:00", "12"),
        ("2026-11-20-01:00", "12"),
    ]


def test_the_date_walk_lists_exactly_the_folders_in_range_across_a_year_end(tmp_path):
    lake = Lake(str(tmp_path))
    hours = [datetime(2026, 12, 31, 20, tzinfo=UTC) + timedelta(hours=h) for h in range(8)]
    for hour in hours:
        lake.write_bytes(f"{telemetry_hour_prefix(hour)}/x.gz", b"x")
    lake.write_bytes(f"{TELEMETRY_PREFIX}/2026/12/31/stray.gz", b"x")  # not in an hour folder
    listed = lake.list_between(TELEMETRY_PREFIX, ("2026", "12", "31", "22"), ("2027", "01", "01", "01"))
    assert [o.key for o in listed] == [f"{telemetry_hour_prefix(h)}/x.gz" for h in hours[2:6]]
