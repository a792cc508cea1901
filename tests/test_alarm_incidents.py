"""One incident per series whether its CloudWatch alarm or its case came first (IncidentManagerSink
with link_alarm_incidents): a series with a stack alarm only ever has the incident the alarm's action
starts. At the boto3 boundary with botocore's Stubber and the shapes CloudWatch and Incident Manager
return."""

from __future__ import annotations

from datetime import timedelta

import boto3
import pytest
from botocore.stub import ANY, Stubber

from iot_lake.cases.model import SITE_LINKED, case_key
from iot_lake.cases.outbox import deliver_pending
from iot_lake.cases.sinks import IncidentManagerSink, OutboxEvent, build_sinks, fold_alarm_incidents
from iot_lake.cases.store import CaseStore
from iot_lake.detect.metrics import alarm_name
from tests.cases_helpers import T0, point
from tests.conftest import REGION

ACCOUNT = "123456789012"
PLAN = f"arn:aws:ssm-incidents::{ACCOUNT}:response-plan/iot-lake"
KEY = case_key("dev-001", "temperature", T0)
ALARM = alarm_name("site-1", "dev-001", "temperature")
OPEN = {"filters": [{"key": "status", "condition": {"equals": {"stringValues": ["OPEN"]}}}]}
ALARM_INCIDENT = f"arn:aws:ssm-incidents::{ACCOUNT}:incident-record/iot-lake/6ec6f5c1-ab12-4f5e-9d0a-2f5e3c7b9a10"
ALARM_ARN = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{ALARM}"
DESCRIBE = {"AlarmNames": [ALARM], "AlarmTypes": ["MetricAlarm"]}
CASE_INCIDENT = f"arn:aws:ssm-incidents::{ACCOUNT}:incident-record/iot-lake/0b7e4c2d-77aa-4d1b-8b3e-9a1c5d2e4f60"


def alarm_record(alarm: str = ALARM, arn: str = ALARM_INCIDENT, minutes: int = 3) -> dict:
    """An incident a CloudWatch alarm's action started through the response plan."""
    return {
        "arn": arn,
        "creationTime": T0 + timedelta(minutes=minutes),
        "impact": 2,
        "status": "OPEN",
        "title": "iot-lake: a series left its forecast band",  # the response plan's template
        "incidentRecordSource": {
            "createdBy": f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/ssm-incidents.amazonaws.com/"
            "AWSServiceRoleForIncidentManager",
            "invokedBy": "cloudwatch.amazonaws.com",
            "resourceArn": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{alarm}",
            "source": "aws.cloudwatch",
        },
    }


def case_record(title: str) -> dict:
    """An incident the case sink started with StartIncident."""
    return {
        "arn": CASE_INCIDENT,
        "creationTime": T0,
        "impact": 1,
        "status": "OPEN",
        "title": title,
        "incidentRecordSource": {
            "createdBy": f"arn:aws:sts::{ACCOUNT}:assumed-role/iot-lake-dagster/run",
            "source": "aws.ssm-incidents.custom",
        },
    }


def stack_alarm(state: str = "OK", actions: tuple[str, ...] | None = None) -> dict:
    """The stack's deviation alarm as DescribeAlarms returns it (deploy/cdk: response plan and SNS)."""
    if actions is None:
        actions = (
            f"arn:aws:ssm-incidents::{ACCOUNT}:responseplan/iot-lake",
            f"arn:aws:sns:{REGION}:{ACCOUNT}:iot-lake-cases",
        )
    return {
        "AlarmName": ALARM,
        "AlarmArn": ALARM_ARN,
        "ActionsEnabled": True,
        "AlarmActions": list(actions),
        "StateValue": state,
        "StateReason": "Threshold Crossed: 3 out of the last 5 datapoints were greater than the threshold",
        "ComparisonOperator": "GreaterThanThreshold",
        "Threshold": 0.0,
        "EvaluationPeriods": 5,
        "DatapointsToAlarm": 3,
    }


def stubbed() -> tuple:
    keys = {"region_name": REGION, "aws_access_key_id": "x", "aws_secret_access_key": "x"}
    client, cloudwatch = boto3.client("ssm-incidents", **keys), boto3.client("cloudwatch", **keys)
    return client, IncidentManagerSink(PLAN, client=client, link_alarm_incidents=True, cloudwatch=cloudwatch)


def linked(token: str = KEY) -> tuple:
    """The case's timeline event on the alarm's incident (Stubber expected parameters)."""
    return (
        "create_timeline_event",
        {"incidentRecordArn": ALARM_INCIDENT, "eventId": "e1"},
        {
            "clientToken": token,
            "incidentRecordArn": ALARM_INCIDENT,
            "eventTime": T0,
            "eventType": "Custom Event",
            "eventData": ANY,
        },
    )


def test_alarm_first_the_case_joins_the_alarms_incident(tmp_path):
    client, sink = stubbed()
    other = alarm_record(alarm_name("site-1", "dev-002", "temperature"), arn=CASE_INCIDENT)  # another series
    with (
        Stubber(client) as stub,
        Stubber(sink.cloudwatch),  # no call: the alarm has fired
        CaseStore(f"sqlite:///{tmp_path / 'c.sqlite'}", sinks=[sink], clock=lambda: T0) as store,
    ):
        stub.add_response("list_incident_records", {"incidentRecordSummaries": [other], "nextToken": "p2"}, OPEN)
        stub.add_response(
            "list_incident_records", {"incidentRecordSummaries": [alarm_record()]}, {**OPEN, "nextToken": "p2"}
        )
        stub.add_response(*linked())
        store.observe(point(0, score=7.0))
        report = deliver_pending(store, [sink], T0)
        assert (report.delivered, report.failed) == (1, 0), report.errors
        stub.assert_no_pending_responses()  # no start_incident: one incident
        stub.add_response("list_incident_records", {"incidentRecordSummaries": [alarm_record()]}, OPEN)
        assert sink.fold_alarm_incidents() == []  # nothing to fold: the case has no incident of its own
        stub.assert_no_pending_responses()


def test_alarm_not_fired_the_case_drives_it_and_joins_the_one_incident_it_starts(tmp_path):
    client, sink = stubbed()
    with (
        Stubber(client) as stub,
        Stubber(sink.cloudwatch) as cloudwatch,
        CaseStore(f"sqlite:///{tmp_path / 'c.sqlite'}", sinks=[sink], clock=lambda: T0) as store,
    ):
        stub.add_response("list_incident_records", {"incidentRecordSummaries": []}, OPEN)
        cloudwatch.add_response("describe_alarms", {"MetricAlarms": [stack_alarm()]}, DESCRIBE)
        reason = f"iot-lake case {KEY} opened (critical)"
        cloudwatch.add_response(
            "set_alarm_state", {}, {"AlarmName": ALARM, "StateValue": "ALARM", "StateReason": reason}
        )
        store.observe(point(0, score=7.0))
        report = deliver_pending(store, [sink], T0)
        assert (report.delivered, report.failed, report.linked) == (1, 0, 0), report.errors
        stub.assert_no_pending_responses()  # no start_incident: the alarm's action starts the one incident
        cloudwatch.assert_no_pending_responses()

        # The next delivery, before the alarm's incident is listed: nothing to link yet, nothing started.
        stub.add_response("list_incident_records", {"incidentRecordSummaries": []}, OPEN)
        report = deliver_pending(store, [sink], T0 + timedelta(minutes=1))
        assert (report.linked, report.errors) == (0, [])
        # Once it is, the case goes on it, once: later deliveries call nothing.
        stub.add_response("list_incident_records", {"incidentRecordSummaries": [alarm_record()]}, OPEN)
        stub.add_response(*linked())
        assert deliver_pending(store, [sink], T0 + timedelta(minutes=5)).linked == 1
        report = deliver_pending(store, [sink], T0 + timedelta(minutes=10))
        assert (report.linked, report.errors) == (0, [])  # an unstubbed call would be an error
        stub.assert_no_pending_responses()
        stub.add_response("list_incident_records", {"incidentRecordSummaries": [alarm_record()]}, OPEN)
        assert fold_alarm_incidents([sink])["folded"] == []  # the alarm's incident is the only one
        stub.assert_no_pending_responses()


def test_a_site_event_after_a_driven_alarm_waits_for_the_alarms_incident():
    client, sink = stubbed()
    site = {"key": "site-1|2026", "site_id": "site-1", "devices": ["dev-001", "dev-002"], "case_keys": [KEY, "k2"]}
    payload = {
        "severity": "critical",
        "device_id": "dev-002",
        "metric": "temperature",
        "incident_start": T0.isoformat(),
        "case_key": "k2",
        "at": T0.isoformat(),
        "site": site,
    }
    event = OutboxEvent(id=7, case_key=KEY, event=SITE_LINKED, payload=payload, receipt=ALARM_ARN)
    with Stubber(client) as stub:
        stub.add_response("list_incident_records", {"incidentRecordSummaries": []}, OPEN)
        with pytest.raises(RuntimeError, match="has not started"):  # the outbox retries it
            sink.deliver(event)
        stub.add_response("list_incident_records", {"incidentRecordSummaries": [alarm_record()]}, OPEN)
        stub.add_response(
            "create_timeline_event",
            {"incidentRecordArn": ALARM_INCIDENT, "eventId": "e2"},
            {
                "clientToken": f"{SITE_LINKED}|k2|site-1|2026",
                "incidentRecordArn": ALARM_INCIDENT,
                "eventTime": T0,
                "eventType": "Custom Event",
                "eventData": ANY,
            },
        )
        assert sink.deliver(event) == ALARM_INCIDENT
        stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    "alarms",
    [
        pytest.param([], id="no-stack-alarm"),
        pytest.param([stack_alarm(actions=(f"arn:aws:sns:{REGION}:{ACCOUNT}:t",))], id="alarm-without-incidents"),
        pytest.param([stack_alarm("ALARM")], id="alarm-fired-its-incident-closed"),
    ],
)
def test_no_alarm_to_start_it_the_case_starts_the_incident_and_a_later_alarms_is_folded(tmp_path, alarms):
    client, sink = stubbed()
    title = f"critical: dev-001 temperature out of band at site-1 [{ALARM}]"
    with (
        Stubber(client) as stub,
        Stubber(sink.cloudwatch) as cloudwatch,
        CaseStore(f"sqlite:///{tmp_path / 'c.sqlite'}", sinks=[sink], clock=lambda: T0) as store,
    ):
        stub.add_response("list_incident_records", {"incidentRecordSummaries": []}, OPEN)
        cloudwatch.add_response("describe_alarms", {"MetricAlarms": alarms}, DESCRIBE)  # no set_alarm_state
        stub.add_response(
            "start_incident",
            {"incidentRecordArn": CASE_INCIDENT},
            {"clientToken": KEY, "responsePlanArn": PLAN, "title": title, "impact": 1, "triggerDetails": ANY},
        )
        store.observe(point(0, score=7.0))
        assert deliver_pending(store, [sink], T0).delivered == 1
        cloudwatch.assert_no_pending_responses()
        # The alarm fires minutes later (or the stack defines it then): a second incident, which the next
        # run folds.
        records = [
            case_record(title),
            alarm_record(alarm_name("site-2", "dev-001", "temperature"), arn="x"),
            alarm_record(),
        ]
        stub.add_response("list_incident_records", {"incidentRecordSummaries": records}, OPEN)
        stub.add_response(
            "create_timeline_event",
            {"incidentRecordArn": CASE_INCIDENT, "eventId": "e1"},
            {
                "clientToken": f"folded|{ALARM_INCIDENT}",
                "incidentRecordArn": CASE_INCIDENT,
                "eventTime": T0 + timedelta(minutes=3),
                "eventType": "Custom Event",
                "eventData": ANY,
            },
        )
        stub.add_response("update_incident_record", {}, {"arn": ALARM_INCIDENT, "status": "RESOLVED", "summary": ANY})
        assert fold_alarm_incidents([sink]) == {"folded": [ALARM_INCIDENT], "error": None}
        stub.assert_no_pending_responses()
        stub.add_client_error("list_incident_records", "ThrottlingException", http_status_code=400)
        assert "ThrottlingException" in fold_alarm_incidents([sink])["error"]  # reported, not raised


def test_prod_links_alarm_incidents():
    sinks = build_sinks("prod", lake_root="s3://l", region=REGION, sns_topic_arn="t", incident_response_plan_arn=PLAN)
    assert [s.link_alarm_incidents for s in sinks if isinstance(s, IncidentManagerSink)] == [True]
