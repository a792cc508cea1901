"""The prod sinks against moto (CloudWatch, SNS, EventBridge) and botocore's Stubber (Incident Manager)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import boto3
import sqlalchemy as sa
from botocore.stub import ANY, Stubber

from iot_lake.cases.model import case_key
from iot_lake.cases.outbox import deliver_pending
from iot_lake.cases.schema import outbox
from iot_lake.cases.sinks import (
    CLOUDWATCH_NAMESPACE,
    CloudWatchSink,
    EventBridgeSink,
    IncidentManagerSink,
    SnsSink,
    build_sinks,
    client_token,
)
from iot_lake.cases.store import CaseStore
from tests.cases_helpers import T0, point
from tests.conftest import REGION

KEY = case_key("dev-001", "temperature", T0)
PLAN = "arn:aws:ssm-incidents::123456789012:response-plan/iot-lake"


def run_case(tmp_path, sinks):
    """Open a case (critical), acknowledge it, and deliver everything."""
    with CaseStore(f"sqlite:///{tmp_path / 'cases.sqlite'}", sinks=sinks, clock=lambda: T0) as store:
        store.observe(point(0, score=7.0))
        store.acknowledge(KEY, actor="ana")
        return deliver_pending(store, sinks, T0)


def sqs_queue(aws, name: str) -> tuple[str, str]:
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    return url, sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def received(aws, url: str, expected: int) -> list[dict]:
    sqs, messages = aws.client("sqs"), []
    for _ in range(5):
        messages += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if len(messages) >= expected:
            break
    return messages


def test_cloudwatch_gets_the_scores_and_the_series_alarm(aws, tmp_path):
    sink = CloudWatchSink(REGION)
    report = run_case(tmp_path, [sink])
    assert (report.delivered, report.failed) == (2, 0), report.errors
    cloudwatch = aws.client("cloudwatch")
    dimensions = [{"Name": "DeviceId", "Value": "dev-001"}, {"Name": "Metric", "Value": "temperature"}]
    listed = cloudwatch.list_metrics(Namespace=CLOUDWATCH_NAMESPACE)["Metrics"]
    assert {(m["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"]))) for m in listed} == {
        (name, (("DeviceId", "dev-001"), ("Metric", "temperature"))) for name in ("CaseMaxResidual", "ActiveCase")
    }
    stats = cloudwatch.get_metric_statistics(
        Namespace=CLOUDWATCH_NAMESPACE,
        MetricName="CaseMaxResidual",
        Dimensions=dimensions,
        StartTime=T0 - timedelta(minutes=5),
        EndTime=T0 + timedelta(minutes=5),
        Period=60,
        Statistics=["Maximum", "SampleCount"],
    )["Datapoints"]
    assert [(p["Maximum"], p["SampleCount"]) for p in stats] == [(7.0, 2.0)]  # opened, acknowledged

    [alarm] = cloudwatch.describe_alarms(AlarmNamePrefix="iot-lake-case-")["MetricAlarms"]
    definition = sink.alarm_definition("dev-001", "temperature")
    assert alarm["AlarmName"] == definition["AlarmName"] == "iot-lake-case-dev-001-temperature"
    assert (
        alarm["MetricName"],
        alarm["Namespace"],
        alarm["Threshold"],
        alarm["ComparisonOperator"],
        alarm["Statistic"],
        alarm["Period"],
    ) == ("CaseMaxResidual", CLOUDWATCH_NAMESPACE, 6.0, "GreaterThanOrEqualToThreshold", "Maximum", 300)
    assert sorted(alarm["Dimensions"], key=lambda d: d["Name"]) == dimensions


def test_sns_publishes_every_event_with_the_case_key_attribute(aws, tmp_path):
    topic = aws.client("sns").create_topic(Name=f"cases-{uuid.uuid4().hex[:8]}")["TopicArn"]
    url, arn = sqs_queue(aws, f"cases-{uuid.uuid4().hex[:8]}")
    aws.client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    report = run_case(tmp_path, [SnsSink(topic, REGION)])
    assert report.delivered == 2, report.errors
    notes = [json.loads(m["Body"]) for m in received(aws, url, 2)]
    assert sorted(json.loads(n["Message"])["event"] for n in notes) == ["acknowledged", "opened"]
    assert {n["MessageAttributes"]["case_key"]["Value"] for n in notes} == {KEY}
    assert {n["MessageAttributes"]["severity"]["Value"] for n in notes} == {"critical"}
    assert {n["Subject"] for n in notes} == {
        "[iot-lake] case opened: dev-001 temperature (critical)",
        "[iot-lake] case acknowledged: dev-001 temperature (critical)",
    }


def test_eventbridge_puts_the_events_on_the_bus(aws, tmp_path):
    events, bus = aws.client("events"), f"cases-{uuid.uuid4().hex[:8]}"
    events.create_event_bus(Name=bus)
    url, arn = sqs_queue(aws, bus)
    events.put_rule(Name="all-cases", EventBusName=bus, EventPattern=json.dumps({"source": ["iot-lake.cases"]}))
    events.put_targets(Rule="all-cases", EventBusName=bus, Targets=[{"Id": "queue", "Arn": arn}])
    report = run_case(tmp_path, [EventBridgeSink(bus, REGION)])
    assert report.delivered == 2, report.errors
    got = [json.loads(m["Body"]) for m in received(aws, url, 2)]
    assert sorted((e["source"], e["detail-type"], e["detail"]["case_key"]) for e in got) == [
        ("iot-lake.cases", "Case acknowledged", KEY),
        ("iot-lake.cases", "Case opened", KEY),
    ]


def test_eventbridge_rejected_entry_is_a_failure(tmp_path):
    client = boto3.client("events", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_response(
            "put_events",
            {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "InternalFailure", "ErrorMessage": "try again"}]},
        )
        sink = EventBridgeSink("bus", client=client)
        with CaseStore(f"sqlite:///{tmp_path / 'cases.sqlite'}", sinks=[sink], clock=lambda: T0) as store:
            store.observe(point(0))
            report = deliver_pending(store, [sink], T0)
    assert report.failed == 1 and "InternalFailure try again" in report.errors[0]


def test_incident_manager_starts_one_incident_per_case_and_reopening(tmp_path):
    client = boto3.client("ssm-incidents", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    sink = IncidentManagerSink(PLAN, client=client)
    with (
        Stubber(client) as stub,
        CaseStore(f"sqlite:///{tmp_path / 'cases.sqlite'}", sinks=[sink], clock=lambda: T0) as store,
    ):
        expected = {
            "responsePlanArn": PLAN,
            "title": "critical: dev-001 temperature out of band at site-1",
            "impact": 1,
            "triggerDetails": {"source": "iot-lake.cases", "timestamp": T0, "rawData": ANY},
        }
        stub.add_response("start_incident", {"incidentRecordArn": "arn:incident/1"}, {**expected, "clientToken": KEY})
        stub.add_response(
            "start_incident", {"incidentRecordArn": "arn:incident/2"}, {**expected, "clientToken": f"{KEY}|reopened-1"}
        )
        store.observe(point(0, score=7.0))
        store.acknowledge(KEY, actor="ana")  # not an incident event: no outbox row for this sink
        store.observe(point(1, anomalous=False))
        store.observe(point(31, anomalous=False))
        assert deliver_pending(store, [sink], T0).delivered == 1
        store.observe(point(40, score=7.0))  # reopened
        assert deliver_pending(store, [sink], T0).delivered == 1
        assert deliver_pending(store, [sink], T0 + timedelta(days=1)).delivered == 0
        stub.assert_no_pending_responses()


def test_client_tokens_stay_within_the_api_limit():
    long_key = "d" * 120 + "|temperature|2026-11-20T10:00:00+00:00"
    assert client_token("short", 0) == "short"
    assert len(client_token(long_key, 0)) == 64 and client_token(long_key, 0) != client_token(long_key, 1)


def test_prod_sinks_are_built_without_touching_aws(monkeypatch):
    def no_clients(*args, **kwargs):
        raise AssertionError("a client was created while building the sinks")

    monkeypatch.setattr(boto3, "client", no_clients)
    sinks = build_sinks("prod", lake_root="s3://lake", region=REGION, sns_topic_arn="arn:aws:sns:us-east-1:1:t")
    assert [s.name for s in sinks] == ["cloudwatch", "sns"]
    sinks = build_sinks(
        "prod",
        lake_root="s3://lake",
        region=REGION,
        sns_topic_arn="arn:aws:sns:us-east-1:1:t",
        event_bus_name="bus",
        incident_response_plan_arn=PLAN,
        webhook_url="https://hooks/x",
    )
    assert [s.name for s in sinks] == ["cloudwatch", "sns", "eventbridge", "incident-manager", "webhook"]


def test_a_site_incident_starts_one_incident_and_publishes_once(aws, tmp_path):
    """Three devices of site-1 within 15 minutes: one Incident Manager incident with the other two
    cases as timeline events on it, one SNS message; the site incident's end is one more of each."""
    topic = aws.client("sns").create_topic(Name=f"cases-{uuid.uuid4().hex[:8]}")["TopicArn"]
    url, arn = sqs_queue(aws, f"cases-{uuid.uuid4().hex[:8]}")
    aws.client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    client = boto3.client("ssm-incidents", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    sinks = [IncidentManagerSink(PLAN, client=client), SnsSink(topic, REGION), CloudWatchSink(REGION)]
    devices = {"dev-001": 0, "dev-002": 5, "dev-003": 12}
    keys = [case_key(device, "temperature", T0 + timedelta(minutes=m)) for device, m in devices.items()]
    incident = "arn:aws:ssm-incidents::123456789012:incident-record/iot-lake/1"
    timeline = {
        "incidentRecordArn": incident,
        "eventTime": T0,
        "eventType": "Custom Event",
        "eventData": ANY,
        "clientToken": ANY,
    }
    with (
        Stubber(client) as stub,
        CaseStore(f"sqlite:///{tmp_path / 'cases.sqlite'}", sinks=sinks, clock=lambda: T0) as store,
    ):
        stub.add_response(
            "start_incident",
            {"incidentRecordArn": incident},
            {
                "responsePlanArn": PLAN,
                "title": "critical: dev-001 temperature out of band at site-1",
                "impact": 1,
                "triggerDetails": ANY,
                "clientToken": KEY,
            },
        )
        for _ in range(3):  # dev-002 and dev-003 linked, then the site incident resolved
            stub.add_response("create_timeline_event", {"eventId": "e", "incidentRecordArn": incident}, timeline)
        for device, minute in devices.items():
            store.observe(point(minute, score=7.0, device=device))
        [site] = store.site_incidents()
        assert site.case_keys == tuple(keys)
        report = deliver_pending(store, sinks, T0)
        assert (report.failed, report.waiting) == (0, 0), report.errors
        # Delivered again later: nothing goes twice.
        assert deliver_pending(store, sinks, T0 + timedelta(hours=1)).delivered == 0

        messages = [json.loads(json.loads(m["Body"])["Message"]) for m in received(aws, url, 1)]
        # The page left before there was a site incident; it became the site incident's anchor.
        assert [(m["event"], m["case_key"], m["site_incident"]) for m in messages] == [("opened", KEY, None)]
        assert site.anchor_case_key == KEY
        # CloudWatch does not page: each device has its scores and its alarm.
        alarms = aws.client("cloudwatch").describe_alarms(AlarmNamePrefix="iot-lake-case-")["MetricAlarms"]
        assert sorted(a["AlarmName"] for a in alarms) == [f"iot-lake-case-{d}-temperature" for d in devices]

        for key in keys:
            store.resolve(key, actor="ana")
        assert deliver_pending(store, sinks, T0).failed == 0
        stub.assert_no_pending_responses()
    last = [json.loads(m["Body"]) for m in received(aws, url, 2)]
    assert [n["Subject"] for n in last] == [
        "[iot-lake] case resolved: dev-001 temperature (critical)",
        "[iot-lake] site incident resolved: site-1 (3 devices)",
    ]


def test_without_the_anchors_receipt_the_site_incident_starts_its_own_incident_once(tmp_path):
    """The anchor paged before receipts were kept (version 1 delivered it): the site incident gets an
    incident of its own, and later events of it go to that one."""
    client = boto3.client("ssm-incidents", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    sink = IncidentManagerSink(PLAN, client=client)
    own = "arn:aws:ssm-incidents::123456789012:incident-record/iot-lake/site"
    with (
        Stubber(client) as stub,
        CaseStore(f"sqlite:///{tmp_path / 'cases.sqlite'}", sinks=[sink], clock=lambda: T0) as store,
    ):
        store.observe(point(0, device="dev-001"))
        with store.engine.begin() as conn:  # delivered by version 1: no receipt
            conn.execute(sa.update(outbox).values(delivered_at=T0, attempts=1))
        store.observe(point(5, device="dev-002"))
        store.observe(point(9, device="dev-003"))
        [site] = store.site_incidents()
        stub.add_response(
            "start_incident",
            {"incidentRecordArn": own},
            {
                "responsePlanArn": PLAN,
                "title": "warning: 2 devices out of band at site-1",
                "impact": 3,
                "triggerDetails": ANY,
                "clientToken": client_token(site.site_incident_key, 0),
            },
        )
        for _ in range(2):
            stub.add_response(
                "create_timeline_event",
                {"eventId": "e", "incidentRecordArn": own},
                {
                    "incidentRecordArn": own,
                    "eventTime": T0,
                    "eventType": "Custom Event",
                    "eventData": ANY,
                    "clientToken": ANY,
                },
            )
        assert deliver_pending(store, [sink], T0).delivered == 2
        stub.assert_no_pending_responses()
