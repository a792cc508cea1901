"""The production deployment files in deploy/, each exercised against what it configures: the Dagster
instance on a real PostgreSQL server and moto's S3, the EMR Serverless application and Glue job
created on moto, the lake bucket's guards (deploy/s3/) on moto and under the policy evaluator, the
web UI's bind address."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
import yaml
from dagster import DagsterInstance, job, op

from iot_lake.encryption import s3_put_params
from lib.code_publishing import glue_entrypoint_uri
from lib.pools import LAKE_WRITES
from resources.spark_aws import DELTA_CONF, EMR_DELTA_JARS
from tests.iam_audit import Policy, Request, requests_of
from tests.postgres import self_signed_certificate

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


@op
def say_hello(context):
    print("hello from the production instance")  # stdout: the compute log
    context.log.info("logged through the instance")


@job
def hello_job():
    say_hello()


@pytest.fixture
def production_instance(aws, postgres_url, postgres_root_cert, tmp_path, monkeypatch):  # noqa: F811
    """DAGSTER_HOME with deploy/dagster.yaml, its environment pointing at the test PostgreSQL and moto."""
    url = urlsplit(postgres_url)
    bucket = "dagster-logs-" + tmp_path.name.lower().replace("_", "-")[-20:]
    aws.client("s3").create_bucket(Bucket=bucket)
    key = aws.client("kms").create_key()["KeyMetadata"]["Arn"]
    env = {
        "DAGSTER_PG_HOST": url.hostname,
        "DAGSTER_PG_PORT": str(url.port),
        "DAGSTER_PG_DB": url.path.lstrip("/"),
        "DAGSTER_PG_USER": url.username,
        "DAGSTER_PG_PASSWORD": "unused-trust-auth",
        "DAGSTER_COMPUTE_LOG_BUCKET": bucket,
        "DAGSTER_COMPUTE_LOG_PREFIX": "dagster/compute-logs",
        "IOT_LAKE_KMS_KEY_ID": key,
        "PGSSLROOTCERT": postgres_root_cert,  # sslmode verify-full: the root of the server's certificate
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    instance = DagsterInstance.from_config(str(home))
    yield instance, env
    instance.dispose()


@pytest.mark.postgres
def test_production_instance_keeps_runs_in_postgres_and_compute_logs_in_s3(aws, production_instance, postgres_url):  # noqa: F811
    instance, env = production_instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PoolSafePostgresEventLogStorage"  # lib/event_log.py
    assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
    coordinator = instance.run_coordinator
    assert type(coordinator).__name__ == "QueuedRunCoordinator"
    # What the daemon's run queue applies (concurrency.runs in the file).
    queue = instance.get_concurrency_config().run_queue_config
    assert queue.max_concurrent_runs == 8
    assert {(t["key"], t.get("limit")) for t in queue.tag_concurrency_limits} >= {("dagster/sensor_name", 1)}

    result = hello_job.execute_in_process(instance=instance)
    assert result.success

    # The run and its events are rows in PostgreSQL, seen from a fresh connection.
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM runs WHERE run_id = :id"), {"id": result.run_id}).scalar()
        events = (
            conn.execute(sa.text("SELECT dagster_event_type FROM event_logs WHERE run_id = :id"), {"id": result.run_id})
            .scalars()
            .all()
        )
    engine.dispose()
    assert status == "SUCCESS"
    assert {"PIPELINE_START", "STEP_SUCCESS", "PIPELINE_SUCCESS"} <= set(events)  # run events keep their old names

    # The step's stdout is in the bucket, SSE-KMS with the lake's key.
    s3 = aws.client("s3")
    listed = s3.list_objects_v2(Bucket=env["DAGSTER_COMPUTE_LOG_BUCKET"], Prefix="dagster/compute-logs/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    [stdout] = [k for k in keys if result.run_id in k and k.endswith(".out")]
    body = s3.get_object(Bucket=env["DAGSTER_COMPUTE_LOG_BUCKET"], Key=stdout)["Body"].read().decode()
    assert "hello from the production instance" in body
    head = s3.head_object(Bucket=env["DAGSTER_COMPUTE_LOG_BUCKET"], Key=stdout)
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", env["IOT_LAKE_KMS_KEY_ID"])


@pytest.mark.postgres
def test_steps_that_write_lake_tables_take_turns_on_the_production_instance(production_instance, tmp_path):
    """Two runs at once, each with a step in the lake-writes pool: the second step waits for the
    first (S3 has no log store to serialize two writers' Delta commits)."""
    instance, _ = production_instance
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "PYTHONPATH": str(DEPLOY.parent)}
    # The deployment step of docs/production.md: the pool's limit row exists before runs race to create it.
    dagster = [sys.executable, "-m", "dagster", "instance", "concurrency", "set", LAKE_WRITES, "1"]
    subprocess.run(dagster, env=env, cwd=DEPLOY.parent, check=True, capture_output=True)
    outs = [tmp_path / f"run-{i}.json" for i in range(2)]
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.pool_job", str(out)], env=env, cwd=DEPLOY.parent) for out in outs
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    first, second = sorted((json.loads(out.read_text()) for out in outs), key=lambda h: h["start"])
    assert second["start"] >= first["end"], (first, second)


def test_every_step_that_writes_lake_delta_tables_is_in_the_lake_writes_pool(defs):
    from jobs.maintenance import delta_maintenance_job

    writers = [
        ["curated", "telemetry"],  # Spark: curated, quarantine and the 1-/5-minute aggregates
        ["curated", "weather"],
        ["curated", "features"],
        ["ml", "batch_forecast"],  # delta-rs: forecasts
        ["ops", "deviations"],  # delta-rs: deviations and the cases mirror
    ]
    for key in writers:
        assert defs.get_assets_def(key).op.pool == LAKE_WRITES, key
    assert [node.definition.pool for node in delta_maintenance_job.graph.nodes] == [LAKE_WRITES]


def test_production_instance_file_holds_no_secrets():
    text = (DEPLOY / "dagster.yaml").read_text()
    for setting in ("hostname", "port", "db_name", "username", "password", "bucket", "prefix", "kms_key_id"):
        [line] = [line for line in text.splitlines() if line.strip().startswith(f"{setting}:")]
        assert "{env: " in line, line


# --- EMR Serverless and Glue ------------------------------------------------------------------------


def _deploy_json(path: str, **values: str) -> dict:
    text = (DEPLOY / path).read_text()
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    assert "${" not in text, f"{path}: a placeholder left without a value"
    return json.loads(text)


def test_emr_serverless_application_is_created_as_the_runner_expects(aws):
    request = _deploy_json("emr-serverless/application.json")
    assert request["releaseLabel"].startswith("emr-7.") and request["type"] == "SPARK"
    assert request["autoStopConfiguration"]["enabled"] and request["maximumCapacity"]["cpu"]
    # Delta: the runner puts EMR's jars on the classpath and sets the extension; the application agrees.
    [defaults] = [c for c in request["runtimeConfiguration"] if c["classification"] == "spark-defaults"]
    assert defaults["properties"]["spark.jars"] == EMR_DELTA_JARS
    assert defaults["properties"].items() >= DELTA_CONF.items()

    client = aws.client("emr-serverless")
    app_id = client.create_application(**request)["applicationId"]
    app = client.get_application(applicationId=app_id)["application"]
    assert app["releaseLabel"] == request["releaseLabel"] and app["type"].upper() == "SPARK"
    assert app["maximumCapacity"] == request["maximumCapacity"]


def test_glue_job_is_created_with_the_script_the_runner_checks(aws, lake_root):
    role = "arn:aws:iam::123456789012:role/iot-lake-glue-job"
    request = _deploy_json("glue/job.json", LakeRoot=lake_root, GlueJobRoleArn=role)
    assert request["GlueVersion"] == "5.0" and request["Command"]["Name"] == "glueetl"
    assert request["DefaultArguments"]["--datalake-formats"] == "delta"
    # resources/spark.py refuses a job whose script is not the published Glue entry point.
    assert request["Command"]["ScriptLocation"] == glue_entrypoint_uri(lake_root)

    glue = aws.client("glue")
    glue.create_job(**request)
    created = glue.get_job(JobName=request["Name"])["Job"]
    assert created["Command"]["ScriptLocation"] == glue_entrypoint_uri(lake_root)
    assert created["GlueVersion"] == "5.0" and created["WorkerType"] == request["WorkerType"]
    assert created["DefaultArguments"]["--datalake-formats"] == "delta"


# --- The UI -------------------------------------------------------------------------------------------


def test_the_ui_binds_to_loopback_by_default_and_in_the_production_unit():
    from dagster_webserver.cli import dagster_webserver

    # `dagster dev` passes --host only when given one, so its webserver gets this default too.
    [host] = [p for p in dagster_webserver.params if p.name == "host"]
    assert host.default == "127.0.0.1"
    unit = (DEPLOY / "systemd" / "iot-lake-webserver.service").read_text()
    [exec_start] = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart=")]
    argv = shlex.split(exec_start)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"


@pytest.mark.postgres
def test_run_storage_verifies_the_servers_certificate(production_instance, tmp_path, monkeypatch, caplog):
    """sslmode verify-full: a server certificate that does not chain to PGSSLROOTCERT is refused (the
    instance above connects to the same server with the right root)."""
    other = tmp_path / "other-root.crt"
    self_signed_certificate(str(other), str(tmp_path / "other.key"))
    monkeypatch.setenv("PGSSLROOTCERT", str(other))
    home = tmp_path / "untrusting_home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    with pytest.raises(Exception, match="too many retries for DB connection"):  # Dagster retries, then gives up
        instance = DagsterInstance.from_config(str(home))
        try:
            instance.get_runs(limit=1)
        finally:
            instance.dispose()
    assert "SSL error: certificate verify failed" in caplog.text


def test_redshift_connects_with_full_certificate_verification():
    profile = yaml.safe_load((DEPLOY.parent / "dbt_project" / "profiles.yml").read_text())
    assert profile["iot_lake"]["outputs"]["prod"]["sslmode"] == "verify-full"
    assert "sslmode: verify-full" in (DEPLOY / "dagster.yaml").read_text()


def _bucket_guards():
    spec = importlib.util.spec_from_file_location("iot_lake_bucket_guards", DEPLOY / "s3" / "apply.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LAKE_KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_the_bucket_policy_admits_the_lake_key_and_refuses_other_keys_and_plain_http():
    policy = Policy(_bucket_guards().documents("acme-iot-lake", LAKE_KEY, "lake")["policy"])

    def put(**params) -> Request:
        request = requests_of("s3", "PutObject", {"Bucket": "acme-iot-lake", "Key": "lake/curated/x", **params})[0]
        return Request(request.action, request.resource, (*request.context, ("aws:SecureTransport", "true")))

    # What every writer of the platform sends (iot_lake/encryption.py), and a write naming nothing
    # (an outside feed): the bucket's default key encrypts it.
    assert not policy.denies(put(**s3_put_params(LAKE_KEY)))
    assert not policy.denies(put())
    other_key = LAKE_KEY.replace("1234abcd", "9999ffff")
    for refused in (
        put(**s3_put_params(other_key)),
        put(ServerSideEncryption="AES256"),
        put(ServerSideEncryption="aws:kms"),  # no key named: S3 would use the AWS managed aws/s3 key
        put(ServerSideEncryption="aws:kms:dsse", SSEKMSKeyId=LAKE_KEY),
    ):
        assert policy.denies(refused), refused
    over_http = Request(
        "s3:GetObject", "arn:aws:s3:::acme-iot-lake/lake/curated/x", (("aws:SecureTransport", "false"),)
    )
    assert policy.denies(over_http)
    assert not policy.denies(Request("s3:GetObject", over_http.resource, (("aws:SecureTransport", "true"),)))
    with pytest.raises(ValueError, match="key ARN"):
        _bucket_guards().documents("acme-iot-lake", "alias/iot-lake")


def test_the_bucket_guards_apply_to_a_bucket_and_default_writes_get_the_lake_key(aws):
    s3 = aws.client("s3")
    bucket = f"lake-{os.urandom(4).hex()}"
    s3.create_bucket(Bucket=bucket)
    key = aws.client("kms").create_key()["KeyMetadata"]["Arn"]
    guards = _bucket_guards()
    put = guards.apply(s3, bucket, key, "lake")
    guards.apply(s3, bucket, key, "lake")  # again: the same configuration, no error

    [rule] = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
    assert json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"]) == put["policy"]
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["expire-pipes-messages"]["Filter"] == {"Prefix": "lake/_pipes/"}
    assert rules["expire-job-logs"]["Expiration"] == {"Days": 30}
    # A write that names no key (a third-party feed) is encrypted under the lake key by default.
    # moto applies a bucket policy's Deny statements without their conditions (its IAMPolicy has no
    # Condition support), so the policy's effect is judged by the evaluator (the test above) and
    # taken off here before moto is asked to write.
    s3.delete_bucket_policy(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="lake/landing/thirdparty/weather/x.json", Body=b"{}")
    head = s3.head_object(Bucket=bucket, Key="lake/landing/thirdparty/weather/x.json")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key)
