"""The production code paths at the boto3 boundary, against moto: no real AWS is ever called.

Kinesis: the CLI publishing to a stream (read back shard by shard), PutRecords partial failures
(botocore Stubber) and the request limits. S3: the simulator writing a lake in a bucket served by
a moto server, the landing inventory reading it back, and the landing sensor listing it. SQS: the
landing sensor receiving S3 Event Notifications.
"""

from __future__ import annotations

import gzip
import json
import re
import time
import uuid
from collections import Counter
from datetime import timedelta
from urllib.parse import quote_plus

import boto3
import pytest
from botocore.stub import Stubber
from click.testing import CliRunner
from dagster import AssetObservation, DagsterInstance, build_sensor_context
from moto import mock_aws

from iot_lake.cli import main
from iot_lake.fleet import build_fleet
from iot_lake.lake import TELEMETRY_PREFIX, Lake, telemetry_hour_prefix
from iot_lake.simulate.deliveries import SimConfig
from iot_lake.simulate.kinesis import MAX_BYTES, MAX_RECORDS, KinesisPublisher
from iot_lake.simulate.runner import Simulator
from iot_lake.sources.telemetry import inventory_hour
from resources.lake import LakeResource
from sensors.landing import landing_sensor
from tests.conftest import START
from tests.iam_audit import SETUP_CREDENTIALS
from tests.kinesis_helpers import read_stream, report_value

REGION = "us-east-1"
STREAM = "iot-lake-test"


@pytest.fixture(autouse=True)
def _fake_aws(fake_aws):
    """Fake credentials and no developer AWS config, so nothing here can reach a real account."""


# --------------------------------------------------------------------------------------------
# Kinesis
# --------------------------------------------------------------------------------------------


SIM_ARGS = [
    "--devices",
    "2",
    "--days",
    "0.05",
    "--start",
    "2026-11-20",
    "--seed",
    "7",
    "--no-db",
    "--truncated-rate",
    "0",
]  # 0.05 days = 72 min: two hours, so two publish calls


def cli_to_stream(tmp_path, stream: str, *extra: str) -> str:
    result = CliRunner().invoke(
        main, ["simulate", *SIM_ARGS, *extra, "--lake", str(tmp_path / stream), "--to", "kinesis", stream]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_cli_publishes_every_simulated_record_to_kinesis(tmp_path):
    # Expected, independently: the same seed and window written as Firehose objects.
    result = CliRunner().invoke(main, ["simulate", *SIM_ARGS, "--lake", str(tmp_path / "firehose")])
    assert result.exit_code == 0, result.output
    firehose = Lake(str(tmp_path / "firehose"))
    expected = [
        line
        for obj in firehose.list(TELEMETRY_PREFIX)
        for line in gzip.decompress(firehose.read_bytes(obj.key)).decode().splitlines()
    ]
    assert len(expected) == report_value(result.output, "lines") > 500  # more than one PutRecords batch

    with mock_aws():
        client = boto3.client("kinesis", region_name=REGION)
        client.create_stream(StreamName=STREAM, ShardCount=2)
        output = cli_to_stream(tmp_path, STREAM)
        records = read_stream(client, STREAM)

    assert "kinesis:" + STREAM in output
    assert report_value(output, "objects") == 0  # nothing written as Firehose objects
    assert len(records) == len(expected) == report_value(output, "lines") == report_value(output, "published")
    assert {shard for shard, _, _ in records} == {"shardId-000000000000", "shardId-000000000001"}
    payloads = [data.decode() for _, _, data in records]
    assert all(p.endswith("\n") and p.count("\n") == 1 for p in payloads)  # one NDJSON line per record
    assert Counter(p[:-1] for p in payloads) == Counter(expected)

    # Partition keys are the sending devices' ids (the line's own device_id may be a bad one).
    devices = {d.device_id for d in build_fleet(2, 7).devices}
    assert {key for _, key, _ in records} == devices
    checked = 0
    for _, key, data in records:
        try:
            doc = json.loads(data)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("device_id") in devices:
            assert doc["device_id"] == key, data
            checked += 1
    assert checked > 0.9 * len(records)


def test_same_seed_publishes_the_same_payloads(tmp_path):
    with mock_aws():
        client = boto3.client("kinesis", region_name=REGION)
        for stream in ("a", "b", "c"):
            client.create_stream(StreamName=stream, ShardCount=2)
        cli_to_stream(tmp_path, "a")
        cli_to_stream(tmp_path, "b")
        cli_to_stream(tmp_path, "c", "--seed", "8")
        a, b, c = (read_stream(client, s) for s in ("a", "b", "c"))
    assert [(shard, key, data) for shard, key, data in a] == [(shard, key, data) for shard, key, data in b]
    assert Counter(data for *_, data in a) != Counter(data for *_, data in c)


def test_simulator_report_counts_each_published_record_once(tmp_path):
    """report.published is the number of records that reached the stream, over several hours."""
    with mock_aws():
        client = boto3.client("kinesis", region_name=REGION)
        client.create_stream(StreamName=STREAM, ShardCount=1)
        publisher = KinesisPublisher(STREAM, client=client)
        report = Simulator(SimConfig(devices=2, seed=7), Lake(str(tmp_path)), publisher).backfill(
            START, START + timedelta(hours=3)
        )
        in_stream = len(read_stream(client, STREAM))
    assert report.lines == in_stream == publisher.sent == report.published


# --- PutRecords partial failures (Stubber on a real client) -----------------------------------

OK = {"SequenceNumber": "1", "ShardId": "shardId-000000000000"}
THROTTLED = {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard"}


def stubbed_client():
    client = boto3.client("kinesis", region_name=REGION)
    return client, Stubber(client)


def entries(lines, keys):
    return [{"Data": (line + "\n").encode(), "PartitionKey": key} for line, key in zip(lines, keys)]


def test_partial_failure_resends_only_the_failed_entries():
    client, stubber = stubbed_client()
    lines = [json.dumps({"n": i}) for i in range(5)]
    keys = [f"dev-000{i}" for i in range(5)]
    sent = entries(lines, keys)
    stubber.add_response(
        "put_records",
        {"FailedRecordCount": 2, "Records": [OK, THROTTLED, OK, THROTTLED, OK]},
        {"StreamName": STREAM, "Records": sent},
    )
    stubber.add_response("put_records", {"Records": [OK, OK]}, {"StreamName": STREAM, "Records": [sent[1], sent[3]]})
    sleeps = []
    publisher = KinesisPublisher(STREAM, client=client, sleep=sleeps.append)
    with stubber:
        assert publisher.publish(lines, keys) == 5
        stubber.assert_no_pending_responses()
    assert publisher.sent == 5
    assert len(sleeps) == 1 and sleeps[0] > 0  # backed off once before the resend


def test_failures_across_batches_and_calls_are_counted_once():
    client, stubber = stubbed_client()
    lines = [f"line-{i}" for i in range(MAX_RECORDS + 2)]
    keys = ["dev-0001"] * len(lines)
    sent = entries(lines, keys)
    first = [OK] * MAX_RECORDS
    first[7] = THROTTLED
    stubber.add_response(
        "put_records", {"FailedRecordCount": 1, "Records": first}, {"StreamName": STREAM, "Records": sent[:MAX_RECORDS]}
    )
    stubber.add_response("put_records", {"Records": [OK]}, {"StreamName": STREAM, "Records": [sent[7]]})
    stubber.add_response("put_records", {"Records": [OK, OK]}, {"StreamName": STREAM, "Records": sent[MAX_RECORDS:]})
    stubber.add_response(
        "put_records",
        {"Records": [OK]},  # an empty key is sent as "unknown"
        {"StreamName": STREAM, "Records": [{"Data": b"again\n", "PartitionKey": "unknown"}]},
    )
    publisher = KinesisPublisher(STREAM, client=client, sleep=lambda s: None)
    with stubber:
        assert publisher.publish(lines, keys) == MAX_RECORDS + 2
        assert publisher.publish(["again"], [""]) == 1  # this call's count, not a running total
        stubber.assert_no_pending_responses()
    assert publisher.sent == MAX_RECORDS + 3


def test_persistent_failure_raises_naming_the_error_code():
    client, stubber = stubbed_client()
    lines, keys = ["a", "b", "c"], ["dev-0001", "dev-0002", "dev-0003"]
    sent = entries(lines, keys)
    stubber.add_response(
        "put_records", {"FailedRecordCount": 1, "Records": [OK, THROTTLED, OK]}, {"StreamName": STREAM, "Records": sent}
    )
    for _ in range(2):
        stubber.add_response(
            "put_records",
            {"FailedRecordCount": 1, "Records": [THROTTLED]},
            {"StreamName": STREAM, "Records": [sent[1]]},
        )
    publisher = KinesisPublisher(STREAM, client=client, max_attempts=3, sleep=lambda s: None)
    with stubber, pytest.raises(RuntimeError, match="ProvisionedThroughputExceededException") as exc:
        publisher.publish(lines, keys)
    stubber.assert_no_pending_responses()  # exactly max_attempts calls
    assert "1 records still rejected" in str(exc.value) and "after 3 attempts" in str(exc.value)
    assert publisher.sent == 2


# --- PutRecords limits, enforced by moto as by Kinesis ----------------------------------------


def record_batches(client) -> list[list[dict]]:
    batches: list[list[dict]] = []
    client.meta.events.register(
        "before-parameter-build.kinesis.PutRecords", lambda params, **_: batches.append(list(params["Records"]))
    )
    return batches


def test_batches_at_most_500_records():
    lines = [json.dumps({"i": i}) for i in range(1200)]
    keys = [f"dev-{i % 7:04d}" for i in range(1200)]
    with mock_aws():
        client = boto3.client("kinesis", region_name=REGION)
        client.create_stream(StreamName=STREAM, ShardCount=1)
        batches = record_batches(client)
        assert KinesisPublisher(STREAM, client=client).publish(lines, keys) == 1200
        records = read_stream(client, STREAM)
    assert [len(b) for b in batches] == [500, 500, 200]
    assert [(key, data.decode()) for _, key, data in records] == [(k, line + "\n") for line, k in zip(lines, keys)]


def test_batches_split_at_five_mib_counting_partition_keys():
    key = "dev-0001"
    big = "x" * (1024 * 1024 - len(key) - 1)  # data (line + newline) plus key is exactly 1 MiB
    lines, keys = [big] * 5 + ["y"], [key] * 6  # the first five make exactly 5 MiB
    with mock_aws():
        client = boto3.client("kinesis", region_name=REGION)
        client.create_stream(StreamName=STREAM, ShardCount=1)
        batches = record_batches(client)
        assert KinesisPublisher(STREAM, client=client).publish(lines, keys) == 6
        records = read_stream(client, STREAM)
    assert [len(b) for b in batches] == [5, 1]
    assert [sum(len(r["Data"]) + len(r["PartitionKey"]) for r in b) for b in batches] == [MAX_BYTES, 10]
    assert [data for *_, data in records] == [(line + "\n").encode() for line in lines]


# --------------------------------------------------------------------------------------------
# S3 (moto server; s3fs talks HTTP to it like to S3)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def bucket(moto_endpoint, monkeypatch) -> str:
    """A fresh bucket; boto3 and s3fs clients without an explicit endpoint go to moto too."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    name = f"lake-{uuid.uuid4().hex[:12]}"
    s3().create_bucket(Bucket=name)
    return name


def s3():
    return boto3.client("s3", region_name=REGION)  # endpoint from AWS_ENDPOINT_URL_S3


def s3_lake(bucket: str, endpoint: str) -> Lake:
    return Lake(
        f"s3://{bucket}/lake",
        storage_options={
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": REGION},
        },
    )


def test_simulator_writes_firehose_objects_to_s3(bucket, moto_endpoint, tmp_path):
    cfg = SimConfig(devices=2, seed=7, truncated_rate=0.1)
    end = START + timedelta(hours=2)
    lake = s3_lake(bucket, moto_endpoint)
    before = time.time()
    report = Simulator(cfg, lake).backfill(START, end)
    local = Lake(str(tmp_path))
    local_report = Simulator(cfg, local).backfill(START, end)
    assert report == local_report

    listed = list(lake.list(TELEMETRY_PREFIX))
    assert len(listed) == report.objects == 24  # one object per 5-minute buffer
    for obj in listed:
        assert re.fullmatch(r"landing/telemetry/2026/11/20/0[01]/iot-lake-telemetry-1-[\w-]+\.gz", obj.key), obj.key
        assert before - 5 <= obj.mtime <= time.time() + 5
    assert [(o.key, o.size) for o in listed] == [(o.key, o.size) for o in local.list(TELEMETRY_PREFIX)]
    assert sum(o.size for o in listed) == report.bytes

    # The objects are where boto3 finds them, under the lake's prefix, with the same bytes.
    in_bucket = {
        o["Key"]: o["Size"] for o in s3().list_objects_v2(Bucket=bucket, Prefix="lake/landing/telemetry/")["Contents"]
    }
    assert in_bucket == {f"lake/{o.key}": o.size for o in listed}
    first = listed[0].key
    assert s3().get_object(Bucket=bucket, Key=f"lake/{first}")["Body"].read() == local.read_bytes(first)
    assert lake.uri(first) == f"s3://{bucket}/lake/{first}"

    total_records = 0
    for hour in (START, START + timedelta(hours=1)):
        remote, here = inventory_hour(lake, hour), inventory_hour(local, hour)
        assert remote.totals == here.totals
        assert [(o.key, o.records, o.readable, o.error) for o in remote.objects] == [
            (o.key, o.records, o.readable, o.error) for o in here.objects
        ]
        total_records += remote.totals["records"] + remote.totals["malformed_lines"]
    assert any(not o.readable for h in (START, START + timedelta(hours=1)) for o in inventory_hour(lake, h).objects)
    assert total_records > 0.5 * report.lines


def test_landing_sensor_on_s3(bucket, moto_endpoint):
    instance = DagsterInstance.ephemeral()
    resource = LakeResource(root=f"s3://{bucket}/lake", region=REGION)  # endpoint from AWS_ENDPOINT_URL_S3

    def tick(cursor):
        return landing_sensor(build_sensor_context(cursor=cursor, resources={"lake": resource}, instance=instance))

    empty = tick(None)  # before anything landed
    assert empty.run_requests == [] and empty.asset_events == []

    writer = s3_lake(bucket, moto_endpoint)  # another client, as Firehose writes
    Simulator(SimConfig(devices=2, seed=7, truncated_rate=0), writer).backfill(START, START + timedelta(hours=2))
    first = tick(empty.cursor)
    assert [(r.job_name, r.partition_key, r.tags["iot_lake/new_objects"]) for r in first.run_requests] == [
        ("telemetry_hourly_job", "2026-11-20-00:00", "12"),
        ("telemetry_hourly_job", "2026-11-20-01:00", "12"),
    ]
    assert first.asset_events == []

    second = tick(first.cursor)
    assert second.run_requests == [] and second.asset_events == []

    junk = f"{telemetry_hour_prefix(START)}/iot-lake-telemetry-1-2026-11-20-00-59-59-junk.gz"
    s3().put_object(Bucket=bucket, Key=f"lake/{junk}", Body=b"this is not gzip\n")
    third = tick(second.cursor)
    assert [(r.partition_key, r.tags["iot_lake/new_objects"]) for r in third.run_requests] == [
        ("2026-11-20-00:00", "1")
    ]
    assert third.run_requests[0].run_key != first.run_requests[0].run_key
    [event] = third.asset_events
    assert isinstance(event, AssetObservation) and event.partition == "2026-11-20-00:00"
    assert event.metadata["unreadable_reason"].value == "not gzip (bad magic bytes)"
    assert event.metadata["object"].value == f"s3://{bucket}/lake/{junk}"

    # A good object landing late in an hour this process has listed before is read, not flagged.
    late = f"{telemetry_hour_prefix(START)}/iot-lake-telemetry-1-2026-11-20-00-59-59-late.gz"
    s3().put_object(Bucket=bucket, Key=f"lake/{late}", Body=gzip.compress(b'{"device_id": "dev-0001"}\n'))
    fourth = tick(third.cursor)
    assert [(r.partition_key, r.tags["iot_lake/new_objects"]) for r in fourth.run_requests] == [
        ("2026-11-20-00:00", "1")
    ]
    assert fourth.asset_events == []

    assert tick(fourth.cursor).run_requests == []


# --------------------------------------------------------------------------------------------
# SQS: the landing sensor's prod trigger
# --------------------------------------------------------------------------------------------


def s3_event(bucket: str, key: str, size: int, event: str = "ObjectCreated:Put") -> dict:
    """One record as S3 Event Notifications send it: the key URL-encoded, spaces as '+'."""
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventTime": "2026-12-05T10:00:00.000Z",
        "eventName": event,
        "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key, safe="/"), "size": size}},
    }


def queue_depth(sqs, url: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_landing_sensor_from_s3_event_notifications_on_sqs(aws, moto_endpoint):
    # The sensor's own calls (boto3's default session, and its s3fs reads signed as the Dagster role)
    # are audited against the Dagster role's policy (the aws fixture) for this lake's bucket; the
    # set-up is another principal's, in a session of its own with the tests' key.
    setup = boto3.Session(region_name=REGION, **SETUP_CREDENTIALS)
    sqs, bucket = setup.client("sqs"), f"lake-{uuid.uuid4().hex[:12]}"
    setup.client("s3").create_bucket(Bucket=bucket)
    aws.iam_recorder.lake_buckets.append(bucket)
    url = sqs.create_queue(QueueName=f"landing-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    instance = DagsterInstance.ephemeral()
    resource = LakeResource(root=f"s3://{bucket}/lake", region=REGION, landing_queue_url=url)

    def tick(cursor):
        return landing_sensor(build_sensor_context(cursor=cursor, resources={"lake": resource}, instance=instance))

    good = f"{telemetry_hour_prefix(START)}/iot-lake-telemetry-1-2026-11-20-00-10-00-a b.gz"
    body = gzip.compress(b'{"device_id": "dev-0001"}\n')
    setup.client("s3").put_object(Bucket=bucket, Key=f"lake/{good}", Body=body)
    event = s3_event(bucket, f"lake/{good}", len(body))
    messages = [
        {"Records": [event]},
        {"Records": [event]},  # S3 delivers at least once, too
        {
            "Type": "Notification",
            "Message": json.dumps(
                {"Records": [s3_event(bucket, "lake/landing/thirdparty/weather/2026/11/20/w.csv", 9)]}
            ),
        },
        {"Records": [s3_event(bucket, "lake/landing/_announcements/2026/12/05/10/x.json", 9)]},
        {"Records": [s3_event(bucket, "other-lake/landing/telemetry/2026/11/20/00/x.gz", 9)]},
        {"Records": [s3_event(bucket, f"lake/{good}", len(body), event="ObjectRemoved:Delete")]},
        {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": bucket},
    ]
    for message in messages:
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(message))

    first = tick(None)
    assert sorted((r.job_name, r.partition_key, r.tags["iot_lake/new_objects"]) for r in first.run_requests) == [
        ("telemetry_hourly_job", "2026-11-20-00:00", "1"),
        ("weather_daily_job", "2026-11-20", "1"),
    ]
    # Received, not deleted: the cursor holds them until Dagster has stored this tick's runs.
    assert len(json.loads(first.cursor)["receipts"]) == len(messages) and queue_depth(sqs, url) == len(messages)

    # The tick's result was lost (the daemon died): the messages come back once their visibility
    # times out, and the same objects ask for the same runs under the same run keys.
    for receipt in json.loads(first.cursor)["receipts"]:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=receipt, VisibilityTimeout=0)
    again = tick(None)
    assert sorted(r.run_key for r in again.run_requests) == sorted(r.run_key for r in first.run_requests)

    settled = tick(again.cursor)  # deletes what the stored tick received
    assert settled.run_requests == [] and queue_depth(sqs, url) == 0


REFUSED_KEYS = ["/etc/passwd", "../x", "landing/../../x", "a/./b", "s3://other/x", "a\\b", "a\x00b", "a\nb"]


def test_lake_keys_from_data_cannot_leave_the_bucket_prefix(bucket, moto_endpoint, tmp_path):
    """Keys read from data (inventories, announcements, the champion pointer) reach Lake.path/uri:
    on S3 as on a disk, one that would leave the lake root is refused before any call."""
    for lake in (s3_lake(bucket, moto_endpoint), Lake(str(tmp_path / "lake"))):
        lake.write_text("models/forecast/champion.json", "{}")
        for key in REFUSED_KEYS:
            for use in (lake.path, lake.uri, lake.read_bytes, lake.exists):
                with pytest.raises(ValueError, match="lake key"):
                    use(key)
        assert lake.read_bytes("models/forecast/champion.json") == b"{}"
