"""Alerts on failed runs and failed checks: real Dagster runs on a real (temporary) instance, the
sensors evaluated over them, the alerts in the local sinks exactly once, and SNS on moto."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC

import pytest
from botocore.stub import ANY, Stubber
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    DagsterEventType,
    DagsterInstance,
    MaterializeResult,
    asset,
    build_run_status_sensor_context,
    build_sensor_context,
    materialize,
)

from iot_lake.cases.alerts import list_alerts
from iot_lake.cases.sinks import ALERT_SOURCE, IncidentManagerSink, OutboxEvent
from iot_lake.cases.store import CaseStore
from resources.cases import CasesResource
from sensors.alerts import check_failure_alerts, run_failure_alerts
from tests.conftest import REGION

UI = "http://dagster.example:3000"


@asset(key=["ops", "boom"])
def boom() -> None:
    raise ValueError("the forecast table has no rows for 2026-11-20")


@asset(
    key=["curated", "checked"],
    check_specs=[
        AssetCheckSpec("rows_balance", asset=["curated", "checked"]),
        AssetCheckSpec("plausible", asset=["curated", "checked"]),
        AssetCheckSpec("present", asset=["curated", "checked"]),
    ],
)
def checked() -> MaterializeResult:
    return MaterializeResult(
        check_results=[
            AssetCheckResult(
                check_name="rows_balance",
                passed=False,
                severity=AssetCheckSeverity.ERROR,
                metadata={"lines_landed": 10, "accounted": 9},
                description="1 line unaccounted for",
            ),
            AssetCheckResult(check_name="plausible", passed=False, severity=AssetCheckSeverity.WARN),
            AssetCheckResult(check_name="present", passed=True),
        ]
    )


@asset(
    key=["curated", "blocked"],
    check_specs=[AssetCheckSpec("row_accounting", asset=["curated", "blocked"], blocking=True)],
)
def blocked() -> MaterializeResult:
    return MaterializeResult(
        check_results=[
            AssetCheckResult(check_name="row_accounting", passed=False, description="3 lines unaccounted for")
        ]
    )


@asset(key=["curated", "downstream"], deps=[blocked])
def downstream() -> None:
    pass


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance:
        yield instance


@pytest.fixture
def cases(tmp_path) -> CasesResource:
    return CasesResource(url=f"sqlite:///{tmp_path}/cases.sqlite", lake_root=str(tmp_path / "lake"), ui_url=UI)


def jsonl_alerts(tmp_path) -> list[dict]:
    path = tmp_path / "lake" / "cases" / "_events" / "events.jsonl"
    return (
        [d for d in map(json.loads, path.read_text().splitlines()) if d.get("kind") == "alert"] if path.exists() else []
    )


def failure_context(instance, run_id: str, cases: CasesResource):
    record = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_FAILURE).records[0]
    return build_run_status_sensor_context(
        sensor_name="run_failure_alerts",
        dagster_event=record.event_log_entry.dagster_event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run_id),
        resources={"cases": cases},
    ).for_run_failure()


def test_a_failed_run_is_alerted_once_with_its_step_error_and_link(instance, cases, tmp_path, caplog):
    result = materialize([boom], instance=instance, raise_on_error=False)
    assert not result.success
    caplog.set_level(logging.INFO, logger="iot_lake.cases")
    for _ in range(2):  # the sensor sees the same failure again: still one alert
        run_failure_alerts(failure_context(instance, result.run_id, cases))

    [alert] = jsonl_alerts(tmp_path)
    assert alert["event_id"] == f"run_failure|{result.run_id}"
    assert (alert["alert_kind"], alert["severity"], alert["run_id"]) == ("run_failure", "error", result.run_id)
    assert alert["job"] == "__ephemeral_asset_job__" and alert["step"] == "ops__boom"
    assert alert["message"] == "ops__boom: ValueError: the forecast table has no rows for 2026-11-20"
    assert alert["url"] == f"{UI}/runs/{result.run_id}"
    assert alert["title"] == "run failed: __ephemeral_asset_job__ at ops__boom"
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("alert run_failure")] == [
        f"alert run_failure: run failed: __ephemeral_asset_job__ at "
        f"ops__boom ({UI}/runs/{result.run_id}) {alert['message']}"
    ]
    with CaseStore(cases.url) as store:
        assert [a["alert_key"] for a in list_alerts(store)] == [f"run_failure|{result.run_id}"]
        assert store.list_cases() == []  # an alert is not a case


def test_an_error_check_failure_is_alerted_once_and_warnings_are_not(instance, cases, tmp_path):
    first = check_failure_alerts(build_sensor_context(instance=instance, resources={"cases": cases}))
    assert first.cursor and jsonl_alerts(tmp_path) == []  # a new sensor starts from now
    earlier = materialize([checked], instance=instance)
    assert earlier.success  # the checks are not blocking: the run succeeds, the failure must still page

    cursor = check_failure_alerts(
        build_sensor_context(instance=instance, cursor=first.cursor, resources={"cases": cases})
    ).cursor
    [alert] = jsonl_alerts(tmp_path)
    assert (alert["alert_kind"], alert["asset"], alert["check"]) == ("check_failure", "curated/checked", "rows_balance")
    assert alert["run_id"] == earlier.run_id and alert["url"] == f"{UI}/runs/{earlier.run_id}"
    assert alert["message"] == "1 line unaccounted for" and alert["details"]["metadata"] == {
        "lines_landed": 10,
        "accounted": 9,
    }
    assert alert["step"] == "curated__checked" and alert["event_id"].startswith(f"check_failure|{earlier.run_id}|")

    # The tick evaluated again from the same cursor (a lost cursor update), then onwards: nothing new.
    again = check_failure_alerts(
        build_sensor_context(instance=instance, cursor=first.cursor, resources={"cases": cases})
    )
    assert again.cursor == cursor
    check_failure_alerts(build_sensor_context(instance=instance, cursor=cursor, resources={"cases": cases}))
    assert len(jsonl_alerts(tmp_path)) == 1

    later = materialize([checked], instance=instance)  # a second run failing the same check: its own alert
    check_failure_alerts(build_sensor_context(instance=instance, cursor=cursor, resources={"cases": cases}))
    assert [a["run_id"] for a in jsonl_alerts(tmp_path)] == [earlier.run_id, later.run_id]


def test_a_blocking_check_that_stops_its_run_is_a_run_alert_and_a_check_alert(instance, cases, tmp_path):
    cursor = check_failure_alerts(build_sensor_context(instance=instance, resources={"cases": cases})).cursor
    result = materialize([blocked, downstream], instance=instance, raise_on_error=False)
    assert not result.success
    run_failure_alerts(failure_context(instance, result.run_id, cases))
    check_failure_alerts(build_sensor_context(instance=instance, cursor=cursor, resources={"cases": cases}))
    run, check = jsonl_alerts(tmp_path)
    assert run["alert_kind"] == "run_failure" and run["step"] == "curated__blocked"
    assert "1 blocking asset check failed with ERROR severity" in run["message"] and "row_accounting" in run["message"]
    assert (check["alert_kind"], check["check"], check["message"]) == (
        "check_failure",
        "row_accounting",
        "3 lines unaccounted for",
    )
    assert run["run_id"] == check["run_id"] == result.run_id


def _queue(sqs) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=f"alerts-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    return url, sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def test_a_failed_run_reaches_sns_eventbridge_and_cloudwatch_in_prod(aws, instance, tmp_path):
    sns, sqs, events = aws.client("sns"), aws.client("sqs"), aws.client("events")
    topic = sns.create_topic(Name=f"cases-{uuid.uuid4().hex[:8]}")["TopicArn"]
    queue, arn = _queue(sqs)
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    bus = f"cases-{uuid.uuid4().hex[:8]}"
    events.create_event_bus(Name=bus)
    bus_queue, bus_arn = _queue(sqs)
    events.put_rule(Name="alerts", EventBusName=bus, EventPattern=json.dumps({"source": [ALERT_SOURCE]}))
    events.put_targets(Rule="alerts", EventBusName=bus, Targets=[{"Id": "queue", "Arn": bus_arn}])
    cases = CasesResource(
        env="prod",
        url=f"sqlite:///{tmp_path}/cases.sqlite",
        lake_root="s3://lake",
        region=REGION,
        sns_topic_arn=topic,
        event_bus_name=bus,
        ui_url=UI,
    )
    result = materialize([boom], instance=instance, raise_on_error=False)
    for _ in range(2):
        run_failure_alerts(failure_context(instance, result.run_id, cases))

    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    [envelope] = [json.loads(m["Body"]) for m in messages]
    body = json.loads(envelope["Message"])
    assert body["event_id"] == f"run_failure|{result.run_id}" and body["url"] == f"{UI}/runs/{result.run_id}"
    assert envelope["Subject"] == "[iot-lake] run failed: __ephemeral_asset_job__ at ops__boom"
    assert envelope["MessageAttributes"]["alert_kind"]["Value"] == "run_failure"
    [event] = [
        json.loads(m["Body"])
        for m in sqs.receive_message(QueueUrl=bus_queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    ]
    assert (event["source"], event["detail-type"], event["detail"]["run_id"]) == (
        ALERT_SOURCE,
        "Run failure",
        result.run_id,
    )
    # CloudWatch, the other prod sink, counts it per job.
    listed = aws.client("cloudwatch").list_metrics(Namespace="IoTLake/Alerts")["Metrics"]
    assert [(m["MetricName"], m["Dimensions"]) for m in listed] == [
        ("RunFailures", [{"Name": "Job", "Value": "__ephemeral_asset_job__"}])
    ]


def test_incident_manager_starts_one_incident_per_alert_with_the_run_link():
    import boto3

    client = boto3.client("ssm-incidents", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    sink = IncidentManagerSink("arn:aws:ssm-incidents::123456789012:response-plan/iot", client=client)
    payload = {
        "kind": "alert",
        "alert_kind": "run_failure",
        "severity": "error",
        "title": "run failed: job",
        "url": f"{UI}/runs/r1",
        "at": "2026-11-20T10:00:00+00:00",
    }
    with Stubber(client) as stub:  # Stubber checks the request against the API's model
        stub.add_response(
            "start_incident",
            {"incidentRecordArn": "arn:incident/1"},
            {
                "clientToken": "run_failure|r1",
                "responsePlanArn": ANY,
                "title": "run failed: job",
                "impact": 2,
                "triggerDetails": {"source": ALERT_SOURCE, "timestamp": ANY, "rawData": ANY},
                "relatedItems": [
                    {"identifier": {"type": "OTHER", "value": {"url": f"{UI}/runs/r1"}}, "title": "Dagster run"}
                ],
            },
        )
        sink.deliver(OutboxEvent(id=1, case_key="run_failure|r1", event="alert", payload=payload, kind="alert"))
        stub.assert_no_pending_responses()


def test_an_alert_a_sink_refuses_is_retried_with_backoff(tmp_path):
    from datetime import datetime, timedelta

    from iot_lake.cases.alerts import RUN_FAILURE, Alert, raise_alert
    from iot_lake.cases.outbox import deliver_pending

    class Flaky:
        name, events, calls = "flaky", frozenset({"alert"}), []

        def deliver(self, event):
            self.calls.append(event.case_key)
            if len(self.calls) == 1:
                raise ConnectionError("topic unreachable")

    t0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
    sink = Flaky()
    with CaseStore(f"sqlite:///{tmp_path}/cases.sqlite", sinks=[sink], clock=lambda: t0) as store:
        alert = Alert(
            key="run_failure|r1",
            kind=RUN_FAILURE,
            severity="error",
            title="run failed: job",
            message="boom",
            run_id="r1",
            job="job",
            url=f"{UI}/runs/r1",
            at=t0,
        )
        assert raise_alert(store, alert) and not raise_alert(store, alert)
        assert deliver_pending(store, [sink], t0).failed == 1
        assert deliver_pending(store, [sink], t0 + timedelta(seconds=10)).waiting == 1  # backing off
        assert deliver_pending(store, [sink], t0 + timedelta(seconds=31)).delivered == 1
        assert deliver_pending(store, [sink], t0 + timedelta(hours=1)).delivered == 0
    assert sink.calls == ["run_failure|r1", "run_failure|r1"]
