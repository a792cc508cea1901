"""One incident per series whether its CloudWatch alarm or its case started it (IncidentManagerSink
with link_alarm_incidents), at the boto3 boundary with botocore's Stubber and the record shapes
Incident Manager returns."""

from __future__ import annotations

from datetime import timedelta

import boto3
from botocore.stub import ANY, Stubber

from iot_lake.cases.model import case_key
from iot_lake.cases.outbox import deliver_pending
from iot_lake.cases.sinks import IncidentManagerSink, build_sinks, fold_alarm_incidents
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


def stubbed() -> tuple:
    client = boto3.client("ssm-incidents", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    return client, IncidentManagerSink(PLAN, client=client, link_alarm_incidents=True)


def test_alarm_first_the_case_joins_the_alarms_incident(tmp_path):
    client, sink = stubbed()
    other = alarm_record(alarm_name("site-1", "dev-002", "temperature"), arn=CASE_INCIDENT)  # another series
    with (
        Stubber(client) as stub,
        CaseStore(f"sqlite:///{tmp_path / 'c.sqlite'}", sinks=[sink], clock=lambda: T0) as store,
    ):
        stub.add_response("list_incident_records", {"incidentRecordSummaries": [other], "nextToken": "p2"}, OPEN)
        stub.add_response(
            "list_incident_records", {"incidentRecordSummaries": [alarm_record()]}, {**OPEN, "nextToken": "p2"}
        )
        stub.add_response(
            "create_timeline_event",
            {"incidentRecordArn": ALARM_INCIDENT, "eventId": "e1"},
            {
                "clientToken": KEY,
                "incidentRecordArn": ALARM_INCIDENT,
                "eventTime": T0,
                "eventType": "Custom Event",
                "eventData": ANY,
            },
        )
        store.observe(point(0, score=7.0))
        report = deliver_pending(store, [sink], T0)
        assert (report.delivered, report.failed) == (1, 0), report.errors
        stub.assert_no_pending_responses()  # no start_incident: one incident
        stub.add_response("list_incident_records", {"incidentRecordSummaries": [alarm_record()]}, OPEN)
        assert sink.fold_alarm_incidents() == []  # nothing to fold: the case has no incident of its own
        stub.assert_no_pending_responses()


def test_case_first_the_alarms_later_incident_is_folded_into_the_cases(tmp_path):
    client, sink = stubbed()
    title = f"critical: dev-001 temperature out of band at site-1 [{ALARM}]"
    with (
        Stubber(client) as stub,
        CaseStore(f"sqlite:///{tmp_path / 'c.sqlite'}", sinks=[sink], clock=lambda: T0) as store,
    ):
        stub.add_response("list_incident_records", {"incidentRecordSummaries": []}, OPEN)
        stub.add_response(
            "start_incident",
            {"incidentRecordArn": CASE_INCIDENT},
            {"clientToken": KEY, "responsePlanArn": PLAN, "title": title, "impact": 1, "triggerDetails": ANY},
        )
        store.observe(point(0, score=7.0))
        assert deliver_pending(store, [sink], T0).delivered == 1
        # The alarm fires minutes later; its action starts a second incident, which the next run folds.
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
