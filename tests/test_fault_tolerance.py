"""Fault tolerance, end to end on the real engines (Sail, delta-rs, Dagster, botocore against moto).

What each failure does is summed up in README.md, "Fault tolerance" (the curated layer). What other
modules already prove is referenced, not repeated:

- every quarantine reason of one line: tests/test_curated_records.py; the fast path agreeing with
  it: tests/test_curated_typical.py;
- exact accounting, dedupe and idempotent re-runs over the simulator's faulty hours:
  tests/test_curated_telemetry.py; truncated/unreadable objects in the inventory: tests/test_landing.py;
- the sensor's cursor, run keys and late listings: tests/test_sensor.py.

Here: a job killed mid-write; each named landing fault through the curated hourly job on Sail, on one
shared landed hour; a daemon restart in the middle of a sensor tick; and AWS errors, transient and
permanent, at the boto3 boundary and through Dagster's retry policy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from dagster import (
    DagsterEventType,
    DagsterInstance,
    Definitions,
    Failure,
    asset,
    define_asset_job,
)

from iot_lake import aws
from iot_lake.lake import Lake
from resources.failures import RETRY_POLICY, JobFailed, retry_policy
from resources.warehouse import WarehouseResource
from tests.conftest import REGION

# --------------------------------------------------------------------------------------------
# AWS errors: transient ones retried (botocore, then Dagster's policy), permanent ones fail fast
# --------------------------------------------------------------------------------------------


class _Body:
    def __init__(self, content: bytes):
        self.content = content

    def stream(self, **_):
        yield self.content


class Faults:
    """A before-send hook: the service answers the next calls with an error, then for real (moto).

    Answering at before-send keeps botocore's whole retry machinery in play: the error is parsed
    and judged retryable (or not) exactly as one from AWS would be.
    """

    def __init__(self, session, service: str):
        self.xml = service == "s3"  # S3 speaks REST-XML; the others here JSON
        self.queue: list[tuple[int, str, str]] = []
        self.attempts = 0
        session.events.register(f"before-send.{service}", self._send)

    def fail(self, times: int, status: int, code: str, message: str) -> Faults:
        self.queue += [(status, code, message)] * times
        return self

    def _send(self, request, **_):
        self.attempts += 1
        if not self.queue:
            return None  # on to moto
        status, code, message = self.queue.pop(0)
        if self.xml:
            body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
        else:
            body = json.dumps({"__type": code, "message": message}).encode()
        return AWSResponse(request.url, status, {}, _Body(body))


def test_every_client_gets_the_shared_retry_config(monkeypatch):
    config = aws.client_config({})
    assert config.retries == {"mode": "standard", "total_max_attempts": aws.DEFAULT_MAX_ATTEMPTS}
    assert aws.client_config({aws.MAX_ATTEMPTS_VAR: "2", aws.RETRY_MODE_VAR: "adaptive"}).retries == {
        "mode": "adaptive", "total_max_attempts": 2}
    with pytest.raises(ValueError, match="IOT_LAKE_AWS_MAX_ATTEMPTS"):
        aws.client_config({aws.MAX_ATTEMPTS_VAR: "0"})
    # No client is made anywhere but through iot_lake.aws.client.
    repo = Path(__file__).resolve().parent.parent
    offenders = [str(p.relative_to(repo)) for folder in ("iot_lake", "resources", "assets", "sensors", "jobs")
                 for p in (repo / folder).rglob("*.py") if p.name != "aws.py"
                 and any(s in p.read_text() for s in ("boto3.client(", ".client(\"", "Session().client"))]
    assert offenders == []


def test_throttled_twice_then_served(aws_session):
    glue = Faults(aws_session, "glue").fail(2, 400, "ThrottlingException", "Rate exceeded")
    assert aws.client("glue", REGION, session=aws_session).get_databases()["DatabaseList"] is not None
    assert glue.attempts == 3
    s3 = Faults(aws_session, "s3").fail(2, 503, "SlowDown", "Please reduce your request rate.")
    assert "Buckets" in aws.client("s3", REGION, session=aws_session).list_buckets()
    assert s3.attempts == 3


def test_access_denied_fails_on_the_first_attempt_with_the_services_message(aws_session, tmp_path):
    glue = Faults(aws_session, "glue").fail(1, 400, "AccessDeniedException",
                                            "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: glue:GetDatabase")
    warehouse = WarehouseResource(target="prod", glue_database="iot_lake_faults", region=REGION)
    with pytest.raises(Failure) as err:
        warehouse.register_lake_tables(Lake(str(tmp_path)))
    assert glue.attempts == 1
    assert err.value.allow_retries is False
    assert "not authorized to perform: glue:GetDatabase" in err.value.description
    assert "AccessDeniedException" in err.value.description


def test_a_job_run_is_retried_only_when_the_service_says_the_failure_is_transient():
    assert JobFailed("Glue job x run 1 ended FAILED: ThrottlingException: Rate exceeded").allow_retries
    assert JobFailed("EMR Serverless job run 1 ended FAILED: Insufficient capacity in us-east-1a").allow_retries
    assert not JobFailed("Glue job x run 1 ended FAILED: RuntimeError: no landing inventory").allow_retries
    assert not JobFailed("SageMaker training job t ended Failed: AlgorithmError: KeyError 'device_id'").allow_retries


def _register_job(policy_env: dict[str, str]):
    @asset(key=["faults", "glue_registration"])
    def registration(context, warehouse: WarehouseResource) -> dict:
        context.log.info(f"attempt {context.retry_number + 1}")
        return warehouse.register_lake_tables(Lake(os.environ["FAULTS_LAKE"]))

    job = define_asset_job("faults_job", selection=[registration.key], op_retry_policy=retry_policy(policy_env))
    defs = Definitions(assets=[registration], jobs=[job], resources={
        "warehouse": WarehouseResource(target="prod", glue_database="iot_lake_faults_dagster", region=REGION)})
    return defs.resolve_job_def("faults_job")


def _attempts(result) -> int:
    return 1 + len([e for e in result.all_events if e.event_type == DagsterEventType.STEP_RESTARTED])


def test_the_retry_policy_retries_transient_errors_and_not_permanent_ones(aws_session, tmp_path, monkeypatch):
    # The jobs and the sensor-launched assets all carry the one policy.
    from definitions import defs

    for job in defs.resolve_all_job_defs():
        if not job.name.startswith("__"):
            assert job.op_retry_policy == RETRY_POLICY or job.name == "delta_maintenance_job", job.name
    assert defs.get_assets_def(["ops", "deviations"]).op.retry_policy == RETRY_POLICY

    monkeypatch.setenv("FAULTS_LAKE", str(tmp_path))
    monkeypatch.setenv(aws.MAX_ATTEMPTS_VAR, "2")  # botocore gives up after 2, so the step sees the error
    job = _register_job({"IOT_LAKE_RETRY_MAX_RETRIES": "2", "IOT_LAKE_RETRY_DELAY_SECONDS": "0"})
    glue = Faults(aws_session, "glue").fail(2, 500, "InternalServiceException", "Internal service error")
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        assert result.success and _attempts(result) == 2, (glue.attempts, " ".join(e.event_type.value for e in result.all_events))
        assert glue.attempts > 2

        glue.fail(1, 400, "AccessDeniedException", "not authorized to perform: glue:GetDatabase")
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success and _attempts(result) == 1
        [failure] = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
        assert "not authorized to perform: glue:GetDatabase" in failure.step_failure_data.error.message


@pytest.fixture
def aws_session(aws):
    return aws
