"""Fault tolerance, end to end on the real engines (Sail, delta-rs, Dagster, botocore against moto).

What each failure does is summed up in docs/curated.md, "Fault tolerance". What other
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

import gzip
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from botocore.awsrequest import AWSResponse
from dagster import DagsterEventType, DagsterInstance, Definitions, Failure, asset, define_asset_job
from deltalake import DeltaTable

from iot_lake import aws
from iot_lake.curated.aggregates import AGGREGATE_TABLES, GRAINS, refresh_aggregates
from iot_lake.curated.records import CLOCK_TOLERANCE, MAX_LATENESS, Record, parse_line
from iot_lake.curated.registries import load_registry
from iot_lake.curated.telemetry_job import CURATED_TELEMETRY, QUARANTINE_TELEMETRY, curate_hour
from iot_lake.lake import (
    TELEMETRY_PREFIX,
    WEATHER_PREFIX,
    Lake,
    telemetry_hour_of_key,
    telemetry_hour_prefix,
    weather_day_of_key,
)
from iot_lake.sources.telemetry import inventoried_keys, iter_lines, land_inventory
from jobs.maintenance import TABLES as MAINTAINED
from jobs.maintenance import MaintenanceConfig, maintain_table
from lib.retries import RETRY_POLICY, JobFailed, permanent_errors, retry_policy
from resources.lake import LakeResource
from resources.spark import LOCAL_ENV, SparkRunner, local_command
from resources.warehouse import WarehouseResource
from tests.conftest import REGION, START, land_faulty_hours
from tests.delta_age import age_table
from tests.test_curated_telemetry import _expected_keys, _rows, _table

TABLES = (CURATED_TELEMETRY, QUARANTINE_TELEMETRY, *AGGREGATE_TABLES.values())
KEY = ("device_id", "metric", "event_ts", "message_id")


def start_job(lake: Lake, *hours: datetime) -> subprocess.Popen:
    """The curated hourly job as SparkRunner's local mode runs it, in a process group of its own."""
    args = ["--lake", lake.url, *(a for h in hours for a in ("--hour", h.isoformat()))]
    return subprocess.Popen(
        local_command("iot_lake.curated.telemetry_job", args),
        env={**os.environ, **LOCAL_ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def run_job(lake: Lake, *hours: datetime) -> list[dict]:
    """Run the job to its end; its per-hour reports (printed when no orchestrator launched it)."""
    proc = start_job(lake, *hours)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"hour"')]


def _accounted(report: dict) -> bool:
    return report["lines_landed"] == (
        report["curated_new"] + report["duplicates_in_batch"] + report["duplicates_existing"] + report["quarantined"]
    )


# --------------------------------------------------------------------------------------------
# A Spark job killed mid-write
# --------------------------------------------------------------------------------------------


def _files(lake: Lake, key: str) -> set[str]:
    """Every data file under a table's folder, committed or not (relative paths, as the log has them)."""
    root = Path(lake.path(key))
    if not root.exists():
        return set()
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "_delta_log" not in p.parts}


def _final(names: set[str]) -> set[str]:
    """The names files will have once written: object_store stages a local write as ``name#N`` and
    renames it, so a file seen in flight may be on disk under its final name by the time we look."""
    return {re.sub(r"#\d+$", "", name) for name in names}


def _log(lake: Lake, key: str) -> set[str]:
    root = Path(lake.path(key)) / "_delta_log"
    return {p.name for p in root.iterdir()} if root.exists() else set()


def _ever_added(lake: Lake, key: str) -> set[str]:
    from urllib.parse import unquote

    added = set()
    for entry in sorted((Path(lake.path(key)) / "_delta_log").glob("*.json")):
        for line in entry.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                added.add(unquote(action["add"]["path"]))
    return added


def _snapshot(lake: Lake) -> dict[str, tuple[set, set]]:
    return {key: (_files(lake, key), _log(lake, key)) for key in TABLES}


def _kill_at_first_write_in_flight(lake: Lake, proc: subprocess.Popen, before: dict) -> tuple[str, set[str]] | None:
    """Watch the tables while ``proc`` runs and SIGKILL its group at the first write in flight: (table,
    its new files), or None when the run ended without one or the commit landed before the kill."""
    while proc.poll() is None:
        for key, (files, log) in before.items():
            new = _files(lake, key) - files
            if new and not _log(lake, key) - log:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return None if _log(lake, key) - log else (key, _final(new))
        time.sleep(0.002)
    assert proc.returncode == 0, proc.stderr.read()[-3000:]
    return None


def kill_mid_write(lake: Lake, hour: datetime, attempts: int = 8) -> tuple[str, set[str]]:
    """Run the job for ``hour`` and SIGKILL its whole process group the moment a table has a new data
    file but no new log entry yet: a write in flight. (table, its new files) at the kill.

    The window between a writer's first data file and its commit is tens of milliseconds, and not
    every write opens one; a run that ends before one is seen, or whose commit beat the kill, is
    simply run again (re-runs are idempotent, and the quarantine and aggregate writes of a re-run
    give new windows). Eight tries: a quiet machine finds one at the first, a CI machine at load 15
    once missed three in a row.
    """
    for _ in range(attempts):
        killed = _kill_at_first_write_in_flight(lake, start_job(lake, hour), _snapshot(lake))
        if killed:
            return killed
    raise AssertionError(f"no write in flight seen in {attempts} runs")


def test_a_job_killed_mid_write_leaves_every_table_consistent_and_the_rerun_accounts_exactly(tmp_path, spark):
    lake = land_faulty_hours(tmp_path, hours=2)
    first, second = START, START + timedelta(hours=1)
    # The hour before, curated in the shared session (the job's own steps): the tables exist.
    refresh_aggregates(spark, lake, first, curate_hour(spark, lake, first).event_dates, CURATED_TELEMETRY, GRAINS)
    rows_before = {key: _rows(lake, key) for key in TABLES}

    killed_in, in_flight = kill_mid_write(lake, second)
    print(f"killed while writing {killed_in}: {sorted(in_flight)}")

    # Every table opens at a committed version; files the killed writer left behind are in no
    # version, so neither delta-rs nor Sail reads them.
    after_kill, orphans = {}, {}
    for key in TABLES:
        committed = {uri.rsplit("/", 1)[-1] for uri in DeltaTable(lake.path(key)).file_uris()}
        on_disk = _files(lake, key)
        orphans[key] = {f for f in on_disk if f not in _ever_added(lake, key)}
        assert committed <= {Path(f).name for f in on_disk} and not {Path(f).name for f in orphans[key]} & committed
        after_kill[key] = _rows(lake, key)
        assert spark.read.format("delta").load(lake.uri(key)).count() == len(after_kill[key])
    assert in_flight <= _final(orphans[killed_in]) and in_flight, killed_in  # left behind, and in no version

    second_keys = set(inventoried_keys(lake, second))

    def curated_from_second() -> int:
        return sum(s in second_keys for s in _table(lake, CURATED_TELEMETRY).column("source_object").to_pylist())

    committed_by_killed_run = curated_from_second()  # all of the hour's new rows, or none
    reports = run_job(lake, second)
    [report] = reports
    assert _accounted(report)
    final = {key: _rows(lake, key) for key in TABLES}
    for key in TABLES:  # the killed run's rows are either all there or none: never part of them
        assert after_kill[key] in (rows_before[key], final[key]), key

    # Every landed line is curated (once), a duplicate, or quarantined with its reason.
    curated = _table(lake, CURATED_TELEMETRY)
    keys = list(zip(*(curated.column(c).to_pylist() for c in KEY)))
    assert len(keys) == len(set(keys)) and set(keys) == _expected_keys(lake)
    assert curated_from_second() == committed_by_killed_run + report["curated_new"] > 0
    assert report["curated_new"] == 0 or committed_by_killed_run == 0
    quarantined = [q for q in _table(lake, QUARANTINE_TELEMETRY).to_pylist() if q["source_object"] in second_keys]
    assert len(quarantined) == report["quarantined"] + report["unreadable_objects"]
    assert all(q["reason"] and q["detail"] for q in quarantined)

    # The nightly maintenance deletes what the killed writer left, once past the retention (24 h at
    # least: the same run with a fresh in-flight file leaves it, two days on it is gone).
    rows = _rows(lake, killed_in)
    config = MaintenanceConfig(retention_hours=0)
    maintain_table(LakeResource(root=lake.url), killed_in, MAINTAINED[killed_in], config, today=second.date())
    assert in_flight <= _final(_files(lake, killed_in)) and _rows(lake, killed_in) == rows
    age_table(lake.path(killed_in))
    maintain_table(
        LakeResource(root=lake.url),
        killed_in,
        MAINTAINED[killed_in],
        config,
        today=second.date(),
    )
    assert not _final(_files(lake, killed_in)) & in_flight and _rows(lake, killed_in) == rows


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
        "mode": "adaptive",
        "total_max_attempts": 2,
    }
    with pytest.raises(ValueError, match="IOT_LAKE_AWS_MAX_ATTEMPTS"):
        aws.client_config({aws.MAX_ATTEMPTS_VAR: "0"})
    # No client is made anywhere but through iot_lake.aws.client.
    repo = Path(__file__).resolve().parent.parent
    offenders = [
        str(p.relative_to(repo))
        for folder in ("iot_lake", "resources", "assets", "sensors", "jobs", "lib")
        for p in (repo / folder).rglob("*.py")
        if p.name != "aws.py"
        and any(
            s in p.read_text().replace("aws.client(", "") for s in ("boto3.client(", '.client("', "Session().client")
        )
    ]
    assert offenders == []


def test_throttled_twice_then_served(aws_session):
    glue = Faults(aws_session, "glue").fail(2, 400, "ThrottlingException", "Rate exceeded")
    assert aws.client("glue", REGION, session=aws_session).get_databases()["DatabaseList"] is not None
    assert glue.attempts == 3
    s3 = Faults(aws_session, "s3").fail(1, 503, "SlowDown", "Please reduce your request rate.")
    assert "Buckets" in aws.client("s3", REGION, session=aws_session).list_buckets()
    assert s3.attempts == 2


def test_access_denied_fails_on_the_first_attempt_with_the_services_message(aws_session, tmp_path):
    glue = Faults(aws_session, "glue").fail(
        1,
        400,
        "AccessDeniedException",
        "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: glue:GetDatabase",
    )
    warehouse = WarehouseResource(target="prod", glue_database="iot_lake_test", region=REGION)
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
    defs = Definitions(
        assets=[registration],
        jobs=[job],
        resources={"warehouse": WarehouseResource(target="prod", glue_database="iot_lake_test", region=REGION)},
    )
    return defs.resolve_job_def("faults_job")


def _attempts(result) -> int:
    return 1 + len([e for e in result.all_events if e.event_type == DagsterEventType.STEP_RESTARTED])


def test_the_retry_policy_retries_transient_errors_and_not_permanent_ones(aws_session, tmp_path, monkeypatch, defs):
    # The jobs and the sensor-launched assets all carry the one policy.
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
        assert result.success and _attempts(result) == 2
        assert glue.attempts > 2

        glue.fail(1, 400, "AccessDeniedException", "not authorized to perform: glue:GetDatabase")
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success and _attempts(result) == 1
        [failure] = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
        assert "not authorized to perform: glue:GetDatabase" in failure.step_failure_data.error.message


def _attempts_of(error_for_attempt) -> tuple[int, str]:
    """Run a one-asset job under the retry policy (3 retries, no delay) whose computation, under
    permanent_errors, raises ``error_for_attempt(attempt)``; the attempts made and the failure's message."""

    @asset(key=["faults", "in_process"])
    def in_process(context):
        with permanent_errors(context, "scoring"):
            raise error_for_attempt(context.retry_number)

    job = define_asset_job(
        "in_process_job",
        selection=[in_process.key],
        op_retry_policy=retry_policy({"IOT_LAKE_RETRY_MAX_RETRIES": "3", "IOT_LAKE_RETRY_DELAY_SECONDS": "0"}),
    )
    job = Definitions(assets=[in_process], jobs=[job]).resolve_job_def("in_process_job")
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    return _attempts(result), failures[-1].step_failure_data.error.message


def test_an_error_of_the_input_fails_at_once_and_a_repeated_error_after_one_retry():
    # A poison input's error (a ValueError of the parser, a RecursionError) fails the first attempt.
    attempts, message = _attempts_of(lambda attempt: ValueError("line 3: expected a number"))
    assert attempts == 1 and "scoring: ValueError: line 3: expected a number" in message
    # Another kind of error is retried once; when it then repeats exactly, the same input fails the same way.
    attempts, message = _attempts_of(lambda attempt: RuntimeError("the model has 12 series, the input 16"))
    assert attempts == 2 and "scoring failed twice the same way" in message
    # Errors that differ from attempt to attempt (a flaky connection) keep every retry of the policy.
    attempts, _ = _attempts_of(lambda attempt: ConnectionResetError(f"connection reset (attempt {attempt})"))
    assert attempts == 4


def test_a_landing_inventory_that_raises_on_its_input_is_not_retried(tmp_path, monkeypatch):
    """The issue's case: an exception the inventory did not expect used to be retried for ten minutes."""
    from assets.landing import telemetry

    attempts = []

    def poisoned(lake, hour):
        attempts.append(hour)
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    monkeypatch.setattr(telemetry, "land_inventory", poisoned)
    job = define_asset_job(
        "inventory_job",
        selection=[telemetry.landing_telemetry.key],
        op_retry_policy=retry_policy({"IOT_LAKE_RETRY_MAX_RETRIES": "3", "IOT_LAKE_RETRY_DELAY_SECONDS": "0"}),
    )
    defs = Definitions(
        assets=[telemetry.landing_telemetry], jobs=[job], resources={"lake": LakeResource(root=str(tmp_path))}
    )
    result = defs.resolve_job_def("inventory_job").execute_in_process(
        partition_key="2026-11-20-00:00", raise_on_error=False
    )
    assert not result.success and _attempts(result) == 1 and len(attempts) == 1
    [failure] = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    assert "landing inventory: UnicodeDecodeError" in failure.step_failure_data.error.message


def test_a_local_script_that_raises_fails_fast_with_its_exit_code():
    @asset(key=["faults", "local_script"])
    def local_script(context, spark: SparkRunner):
        spark.run(context, "json.tool", ["/nonexistent/landing.json"])  # argparse exits 2: no such file

    job = define_asset_job(
        "local_job", selection=[local_script.key], op_retry_policy=retry_policy({"IOT_LAKE_RETRY_DELAY_SECONDS": "0"})
    )
    defs = Definitions(assets=[local_script], jobs=[job], resources={"spark": SparkRunner()})
    job = defs.resolve_job_def("local_job")
    result = job.execute_in_process(raise_on_error=False)
    assert not result.success and _attempts(result) == 1
    [failure] = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    assert "Spark job json.tool exited with code 2" in failure.step_failure_data.error.message


@pytest.fixture
def aws_session(aws):
    """conftest's moto-backed default session, under a name that leaves ``aws`` to iot_lake.aws."""
    return aws


# --------------------------------------------------------------------------------------------
# Landing faults, each through the curated hourly job on Sail, on one shared landed lake
# --------------------------------------------------------------------------------------------


HOUR_0, HOUR_1 = START, START + timedelta(hours=1)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Landing:
    """Crafted landing objects, each line with what must become of it: curated, or a quarantine reason."""

    def __init__(self, lake: Lake, template: dict):
        self.lake, self.template, self.n = lake, template, 0
        self.expected: dict[tuple[str, int], str] = {}  # (object, line number) -> "curated" | reason
        self.message_ids: dict[tuple[str, int], str] = {}

    def record(self, at: datetime, **fields) -> dict:
        self.n += 1
        rec = {
            **self.template,
            "ts": _iso(at),
            "message_id": f"fault-{self.n:04d}",
            "ingested_at": _iso(at + timedelta(seconds=1)),
        }
        rec.update(fields)
        return {k: v for k, v in rec.items() if v is not ...}

    def put(self, hour: datetime, name: str, lines: list[tuple[dict | str, str]], data: bytes | None = None) -> str:
        key = f"{telemetry_hour_prefix(hour)}/iot-lake-telemetry-1-{hour:%Y-%m-%d-%H}-59-00-{name}.gz"
        texts = [line if isinstance(line, str) else json.dumps(line, separators=(",", ":")) for line, _ in lines]
        self.lake.write_bytes(key, gzip.compress("\n".join(texts).encode() + b"\n") if data is None else data)
        for number, (line, fate) in enumerate(lines, start=1):
            self.expected[(key, number)] = fate
            if isinstance(line, dict) and isinstance(line.get("message_id"), str):
                self.message_ids[(key, number)] = line["message_id"]
        return key


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    """Two landed hours of simulated faulty telemetry plus one crafted object per named fault, curated
    by one run of the job over both hours."""
    lake = land_faulty_hours(tmp_path_factory.mktemp("faults"), hours=2)
    registry = load_registry(lake, HOUR_0.date())
    good = next(
        json.loads(raw)
        for obj in lake.list(telemetry_hour_prefix(HOUR_0))
        if obj.key.endswith(".gz")
        for raw in iter_lines(lake, obj.key)
        if isinstance(parse_line(raw.decode(), registry), Record)
    )
    landing = Landing(lake, {k: good[k] for k in ("device_id", "site_id", "metric", "value", "unit")})
    t0 = HOUR_0 + timedelta(minutes=30)

    # Schema drift: a field the contract does not know is ignored, the record kept; a changed type
    # is quarantined with what it was.
    landing.put(
        HOUR_0,
        "drift-new-field",
        [
            (landing.record(t0, firmware="2.1.0", battery_pct=87), "curated"),
            (landing.record(t0, tags={"line": "A", "shift": 2}), "curated"),
        ],
    )
    landing.put(
        HOUR_0,
        "drift-types",
        [
            (landing.record(t0, value=str(good["value"])), "mistyped_field"),
            (landing.record(t0, value={"v": good["value"], "q": "good"}), "mistyped_field"),
            (landing.record(t0, value=[good["value"]]), "mistyped_field"),
            (landing.record(t0, device_id=4), "mistyped_field"),
            (landing.record(t0, unit={"si": "kPa"}), "mistyped_field"),
            (landing.record(t0, ts={"epoch_ms": 1763632800000}), "bad_timestamp"),
            (landing.record(t0, ingested_at=True), "bad_timestamp"),
            (landing.record(t0, message_id=None), "missing_field"),
        ],
    )
    # Truncated and corrupt objects: the lines before the cut are kept, the object is quarantined.
    lines = [(landing.record(t0 + timedelta(seconds=i)), "curated") for i in range(40)]
    whole = gzip.compress("\n".join(json.dumps(r) for r, _ in lines).encode() + b"\n", mtime=0)
    truncated = landing.put(HOUR_0, "truncated", lines, data=whole[: len(whole) * 2 // 3])
    corrupt = landing.put(HOUR_0, "not-gzip", [], data=b"PK\x03\x04 a zip, not gzip" * 20)
    landing.put(HOUR_0, "binary-noise", [('\x00\x01\xfe{"device_id', "malformed_json"), ("{" * 3, "malformed_json")])
    # Duplicate deliveries: one object delivered twice under two keys; one record in two objects.
    twice = [(landing.record(t0 + timedelta(minutes=1, seconds=i)), "curated") for i in range(5)]
    landing.put(HOUR_0, "delivered-twice-a", twice)
    landing.put(HOUR_0, "delivered-twice-b", twice)
    again = landing.record(t0 + timedelta(minutes=2))
    landing.put(HOUR_0, "record-once", [(again, "curated")])
    landing.put(HOUR_1, "record-again", [(again, "curated")])  # the next hour: against the table
    # Clock skew, judged against the arrival time (ingested_at, else the landing hour).
    arrival = t0
    landing.put(
        HOUR_0,
        "clock-skew",
        [
            (landing.record(arrival + CLOCK_TOLERANCE - timedelta(seconds=2), ingested_at=_iso(arrival)), "curated"),
            (landing.record(arrival + timedelta(days=2), ingested_at=_iso(arrival)), "clock_skew"),
            (landing.record(arrival + timedelta(days=400), ingested_at=_iso(arrival)), "clock_skew"),
            (landing.record(arrival - timedelta(days=6), ingested_at=_iso(arrival)), "curated"),  # a backlog: late
            (landing.record(arrival - MAX_LATENESS - timedelta(hours=1), ingested_at=_iso(arrival)), "clock_skew"),
            (landing.record(datetime(1970, 1, 1, 0, 5, tzinfo=UTC), ingested_at=_iso(arrival)), "clock_skew"),
            (landing.record(HOUR_0 + timedelta(days=3), ingested_at=...), "clock_skew"),  # no ingested_at
            (landing.record(HOUR_0 + timedelta(minutes=50), ingested_at=...), "curated"),
        ],
    )
    for hour in (HOUR_0, HOUR_1):
        land_inventory(lake, hour)
    reports = {r["hour"]: r for r in run_job(lake, HOUR_0, HOUR_1)}
    return lake, landing, reports, {"truncated": truncated, "corrupt": corrupt}


def _quarantine(lake: Lake) -> dict[tuple[str, int | None], dict]:
    return {(q["source_object"], q["line_number"]): q for q in _table(lake, QUARANTINE_TELEMETRY).to_pylist()}


def test_no_row_is_lost_or_duplicated_and_every_hour_is_accounted(faults):
    lake, _, reports, _ = faults
    assert [_accounted(r) for r in reports.values()] == [True, True]
    curated = _table(lake, CURATED_TELEMETRY)
    keys = list(zip(*(curated.column(c).to_pylist() for c in KEY)))
    assert len(keys) == len(set(keys)) == sum(r["curated_new"] for r in reports.values())
    assert set(keys) == _expected_keys(lake)  # every valid line in everything readable, once
    quarantine = _table(lake, QUARANTINE_TELEMETRY).to_pylist()
    assert len(quarantine) == sum(r["quarantined"] + r["unreadable_objects"] for r in reports.values())


def test_each_crafted_fault_is_curated_or_quarantined_with_its_reason(faults):
    lake, landing, _, objects = faults
    curated_ids = set(_table(lake, CURATED_TELEMETRY).column("message_id").to_pylist())
    quarantine = _quarantine(lake)
    for (key, number), fate in landing.expected.items():
        if key == objects["truncated"]:
            continue  # below
        if fate == "curated":
            assert landing.message_ids[(key, number)] in curated_ids, (key, number)
            assert (key, number) not in quarantine
        else:
            q = quarantine[(key, number)]
            assert (q["reason"], q["raw_line"] is not None, bool(q["detail"])) == (fate, True, True), q
            assert landing.message_ids.get((key, number)) not in curated_ids
    # A changed type says what it was.
    assert {q["detail"] for q in quarantine.values() if "drift-types" in q["source_object"]} >= {
        "value is str, expected a number",
        "value is dict, expected a number",
        "value is list, expected a number",
    }


def test_truncated_and_corrupt_objects_keep_what_was_readable(faults):
    lake, landing, _, objects = faults
    quarantine = _quarantine(lake)
    for key in objects.values():
        q = quarantine[(key, None)]
        assert q["reason"] == "unreadable_object" and q["detail"]
    assert "truncated" in quarantine[(objects["truncated"], None)]["detail"]
    curated = _table(lake, CURATED_TELEMETRY).to_pylist()
    kept = sorted(r["message_id"] for r in curated if r["source_object"] == objects["truncated"])
    sent = [landing.message_ids[k] for k in sorted(landing.expected) if k[0] == objects["truncated"]]
    assert 0 < len(kept) < len(sent) and kept == sorted(sent[: len(kept)])  # a prefix, up to the cut


def test_duplicate_deliveries_are_curated_once(faults):
    lake, landing, reports, _ = faults
    curated = _table(lake, CURATED_TELEMETRY).to_pylist()
    by_id = Counter(r["message_id"] for r in curated)
    twice = {landing.message_ids[k] for k in landing.expected if "delivered-twice" in k[0]}
    assert len(twice) == 5 and all(by_id[m] == 1 for m in twice)
    kept_from = {r["source_object"].rsplit("-", 1)[-1] for r in curated if r["message_id"] in twice}
    assert kept_from == {"a.gz"}  # the first copy's object: by ingestion time, then key
    again = next(landing.message_ids[k] for k in landing.expected if "record-again" in k[0])
    assert [r["source_object"] for r in curated if r["message_id"] == again] == [
        next(k for k, _ in landing.expected if "record-once" in k)
    ]  # the first delivery's row, untouched
    assert reports[HOUR_1.isoformat()]["duplicates_existing"] >= 1


def test_clock_skew_beyond_tolerance_is_quarantined_and_arrival_time_is_kept(faults):
    lake, landing, _, _ = faults
    curated = {r["message_id"]: r for r in _table(lake, CURATED_TELEMETRY).to_pylist()}
    skewed = [k for k in landing.expected if "clock-skew" in k[0]]
    kept = [curated[landing.message_ids[k]] for k in skewed if landing.expected[k] == "curated"]
    assert len(kept) == 3
    # Kept rows keep both clocks: the device's event time (the partition) and the arrival time.
    backlog = next(r for r in kept if r["event_ts"] < HOUR_0)
    assert backlog["event_date"] == date(2026, 11, 14) and backlog["ingested_at"] == HOUR_0 + timedelta(minutes=30)
    details = [_quarantine(lake)[k]["detail"] for k in skewed if landing.expected[k] == "clock_skew"]
    assert len(details) == 5 and any("landing hour" in d for d in details) and any("days before" in d for d in details)


# --------------------------------------------------------------------------------------------
# A daemon restart in the middle of a landing sensor tick
# --------------------------------------------------------------------------------------------


SENSOR_DEFS = None  # set by the test below: what its in-process code location loads


def test_a_sensor_tick_cut_short_after_its_runs_were_requested_runs_no_partition_twice(faults, defs):
    """The real sensor daemon iteration, on a real instance, crashing after the tick's first run was
    launched: its cursor was never stored. The next tick evaluates from the old cursor, asks for the
    same runs under the same run keys, and the daemon launches only the ones it had not.

    The crash is Dagster's own debug crash point, raised rather than signalled so it stays in this
    process; a daemon killed there leaves its tick STARTED instead, which the next iteration resumes
    with the run ids it had reserved: the same guarantee, by the same run-key check.
    """
    from dagster import DagsterRunStatus, instance_for_test

    from sensors.landing import landing_sensor
    from tests.dagster_daemons import RECORDING_RUN_LAUNCHER, DaemonWorkspace

    lake = faults[0]
    # The project's definitions, loaded in this process (a code server would load them again, for
    # half a minute), with the sensor's lake pointed at the faults' lake and no other sensor or schedule.
    global SENSOR_DEFS
    SENSOR_DEFS = Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=defs.jobs,
        sensors=[landing_sensor],
        resources={**defs.resources, "lake": LakeResource(root=lake.url)},
    )
    now = datetime.now(UTC)
    with (
        instance_for_test(overrides={"run_launcher": RECORDING_RUN_LAUNCHER}) as instance,
        DaemonWorkspace.in_process(instance, __name__, "SENSOR_DEFS", "iot_lake") as workspace,
    ):

        def runs() -> list:
            return [r for r in instance.get_runs() if r.tags.get("dagster/sensor_name") == "landing_sensor"]

        # The daemon dies right after launching the tick's first run.
        workspace.sensor_iteration(now, {"RUN_LAUNCHED": RuntimeError("daemon restarted")}, sensor="landing_sensor")
        assert len(runs()) == 1
        assert workspace.cursor("landing_sensor") is None  # never stored

        workspace.sensor_iteration(now + timedelta(seconds=30))
        assert workspace.tick_statuses("landing_sensor") == ["SUCCESS", "FAILURE"]
        launched = runs()
        partitions = sorted((r.job_name, r.tags["dagster/partition"]) for r in launched)
        assert len(set(partitions)) == len(partitions)  # none twice
        landed = {
            ("telemetry_hourly_job", f"{h:%Y-%m-%d-%H:%M}")
            for o in lake.list(TELEMETRY_PREFIX)
            if (h := telemetry_hour_of_key(o.key))
        }
        landed |= {
            ("weather_daily_job", f"{d:%Y-%m-%d}")
            for o in lake.list(WEATHER_PREFIX)
            if (d := weather_day_of_key(o.key))
        }
        assert set(partitions) == landed and len(landed) >= 2  # none missed
        assert len({r.tags["dagster/run_key"] for r in launched}) == len(launched)
        assert all(r.status != DagsterRunStatus.NOT_STARTED for r in launched)

        workspace.sensor_iteration(
            now + timedelta(seconds=60)
        )  # and the stored cursor now holds: nothing new, nothing more
        assert len(runs()) == len(launched)
