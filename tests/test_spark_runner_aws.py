"""SparkRunner's production modes at the boto3 boundary: EMR Serverless, Glue, steps on EMR.

Everything AWS is a moto server; tests/spark_twins.py stands in for the services' compute, running
the published entry point and code zip as a subprocess the way the service would, so the real
curated job's Pipes messages travel over (moto) S3 back to a real Dagster materialize().
"""

from __future__ import annotations

import gzip
import io
import json
import shlex
import zipfile

import boto3
import pytest
from dagster import AssetKey, materialize
from dagster_pipes import decode_param
from deltalake import DeltaTable

from assets.curated.telemetry import curated_telemetry
from iot_lake.curated.object_counts import OBJECT_COUNTS
from iot_lake.lake import Lake
from iot_lake.simulate.deliveries import SimConfig
from iot_lake.simulate.runner import Simulator
from iot_lake.sources.historian import create_engine, land_registry
from iot_lake.sources.telemetry import land_inventory
from lib.code_publishing import ENTRYPOINT_SOURCE, PACKAGE_DIR, glue_entrypoint_uri, publish_code, split_s3_uri
from resources.lake import LakeResource
from resources.spark import SparkRunner
from resources.spark_aws import SparkJobFailed
from tests.conftest import REGION, START
from tests.iam_audit import audited_roles, setup_delta_options, setup_storage_options
from tests.spark_twins import EMRServerlessTwin, EMRStepsTwin, GlueTwin, parse_confs

PARTITION = START.strftime("%Y-%m-%d-%H:%M")
MODULE = "iot_lake.curated.telemetry_job"
ROLE = "arn:aws:iam::123456789012:role/iot-lake-spark"
ARCHIVE = "s3://iot-lake-artifacts/spark-env/iot-lake-env.tar.gz"
DELTA = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
EMR_DELTA_JARS = "/usr/share/aws/delta/lib/delta-spark.jar,/usr/share/aws/delta/lib/delta-storage.jar"


def module_args(lake_root: str) -> list[str]:
    """What the curated asset passes for one hour, in local mode as ``python -m`` arguments."""
    return ["--lake", lake_root, "--steps", "curate,1min,5min,state", "--hour", START.isoformat()]


@pytest.fixture
def landed(lake_root, tmp_path) -> dict:
    """One hour of telemetry landed and inventoried on S3, with the day's registry snapshot (by the
    test itself: its own key, so Firehose's and the historian's writes are not the control plane's)."""
    lake = Lake(lake_root, setup_storage_options())
    sim = Simulator(SimConfig(devices=3, seed=11, bad_rate=0.05, duplicate_rate=0.05), lake)
    sim.backfill(START, START.replace(hour=1))
    url = f"sqlite:///{tmp_path}/historian.sqlite"
    sim.seed_historian(url, START.date())
    engine = create_engine(url)
    land_registry(lake, engine, START.date())
    engine.dispose()
    return land_inventory(lake, START).totals


def objects(session: boto3.Session, uri: str) -> dict[str, bytes]:
    bucket, prefix = split_s3_uri(uri)
    s3 = session.client("s3")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])
    return {
        o["Key"].removeprefix(prefix + "/"): s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed
    }


def runner(mode: str, lake_root: str, **kwargs) -> dict:
    return {
        "lake": LakeResource(root=lake_root, region=REGION),
        "spark": SparkRunner(mode=mode, lake_root=lake_root, region=REGION, poll_interval=0.1, **kwargs),
    }


def assert_curated_round_trip(result, totals: dict) -> dict:
    """The job's own report came back through the S3 message reader: metadata and the blocking check."""
    assert result.success
    by_key = {e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert set(by_key) == {
        AssetKey(["curated", "telemetry"]),
        AssetKey(["curated", "telemetry_1min"]),
        AssetKey(["curated", "telemetry_5min"]),
        AssetKey(["curated", "device_state"]),
    }
    curated = by_key[AssetKey(["curated", "telemetry"])]
    assert curated["lines_landed"].value == totals["records"] + totals["malformed_lines"] > 0
    assert curated["curated_new"].value > 0 and curated["quarantined"].value > 0
    assert by_key[AssetKey(["curated", "telemetry_5min"])]["buckets_written"].value > 0
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "row_accounting" and check.passed
    return curated


def assert_ran_from_published_zip(twin, run_id: str, code_uri: str) -> None:
    outcome = twin.outcomes[run_id]
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.iot_lake_file.endswith(f"/{code_uri.rsplit('/', 1)[-1]}/iot_lake/__init__.py")


def assert_pipes_on_s3(session, lake_root: str, context_param: str, messages_param: str) -> None:
    """Context and messages went through the lake's _pipes/ prefix; the context is cleaned up after."""
    bucket, prefix = split_s3_uri(lake_root)
    context, messages = decode_param(context_param), decode_param(messages_param)
    assert context["bucket"] == messages["bucket"] == bucket
    assert context["key"].startswith(f"{prefix}/_pipes/context/") and context["key"].endswith("/context.json")
    assert messages["key_prefix"].startswith(f"{prefix}/_pipes/messages/")
    chunks = session.client("s3").list_objects_v2(Bucket=bucket, Prefix=messages["key_prefix"] + "/")["Contents"]
    assert chunks and all(c["Key"].endswith(".json") for c in chunks)
    assert "Contents" not in session.client("s3").list_objects_v2(Bucket=bucket, Prefix=context["key"])


# --------------------------------------------------------------------------------------------
# Publishing the code
# --------------------------------------------------------------------------------------------


def test_code_is_published_content_addressed_and_only_once(aws, lake_root, tmp_path):
    s3 = aws.client("s3")
    puts: list[str] = []
    s3.meta.events.register("before-parameter-build.s3.PutObject", lambda params, **_: puts.append(params["Key"]))
    code = publish_code(s3, lake_root)
    bucket, _ = split_s3_uri(lake_root)
    assert code.package_uri.startswith(f"s3://{bucket}/lake/_code/iot_lake-") and code.package_uri.endswith(".zip")
    assert code.entrypoint_uri.startswith(f"s3://{bucket}/lake/_code/entrypoint-")
    published = objects(aws, lake_root + "/_code")
    assert published[code.entrypoint_uri.rsplit("/", 1)[-1]] == ENTRYPOINT_SOURCE.read_bytes()
    with zipfile.ZipFile(io.BytesIO(published[code.package_uri.rsplit("/", 1)[-1]])) as zf:
        names = set(zf.namelist())
        assert zf.read("iot_lake/curated/telemetry_job.py") == (PACKAGE_DIR / "curated/telemetry_job.py").read_bytes()
    assert names == {
        f"iot_lake/{p.relative_to(PACKAGE_DIR).as_posix()}"
        for p in PACKAGE_DIR.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert len(puts) == 2

    assert publish_code(s3, lake_root) == code  # unchanged code: found by HEAD, nothing uploaded
    assert len(puts) == 2

    # Changed code gets its own zip; the one a running job may still be reading stays as it was.
    changed = tmp_path / "iot_lake"
    for path in PACKAGE_DIR.rglob("*.py"):
        if "__pycache__" not in path.parts:
            (changed / path.relative_to(PACKAGE_DIR)).parent.mkdir(parents=True, exist_ok=True)
            (changed / path.relative_to(PACKAGE_DIR)).write_bytes(path.read_bytes())
    (changed / "units.py").write_text((changed / "units.py").read_text() + "\n# changed\n")
    new = publish_code(s3, lake_root, package_dir=changed)
    assert new.package_uri != code.package_uri and new.entrypoint_uri == code.entrypoint_uri
    after = objects(aws, lake_root + "/_code")
    assert after[code.package_uri.rsplit("/", 1)[-1]] == published[code.package_uri.rsplit("/", 1)[-1]]
    assert len(puts) == 3

    glue = publish_code(s3, lake_root, glue=True)
    assert glue.entrypoint_uri == glue_entrypoint_uri(lake_root) == f"s3://{bucket}/lake/_code/glue/entrypoint.py"


# --------------------------------------------------------------------------------------------
# EMR Serverless
# --------------------------------------------------------------------------------------------


@pytest.fixture
def emr_serverless(aws, tmp_path):
    app = aws.client("emr-serverless").create_application(name="iot-lake", releaseLabel="emr-7.5.0", type="SPARK")
    return app["applicationId"], EMRServerlessTwin(aws, tmp_path / "twin")


def test_emr_serverless_runs_the_curated_job_and_reports_back(aws, lake_root, landed, emr_serverless):
    application_id, twin = emr_serverless
    key = aws.client("kms").create_key()["KeyMetadata"]["Arn"]
    result = materialize(
        [curated_telemetry],
        partition_key=PARTITION,
        resources=runner(
            "emr-serverless",
            lake_root,
            emr_application_id=application_id,
            emr_job_role_arn=ROLE,
            env_archive=ARCHIVE,
            kms_key_id=key,
        ),
    )
    curated = assert_curated_round_trip(result, landed)

    request = twin.last("StartJobRun")
    driver = request["jobDriver"]["sparkSubmit"]
    assert request["applicationId"] == application_id and request["executionRoleArn"] == ROLE
    assert driver["entryPoint"].startswith(f"{lake_root}/_code/entrypoint-")
    assert driver["entryPointArguments"] == [MODULE, *module_args(lake_root)]
    confs = parse_confs(shlex.split(driver["sparkSubmitParameters"]))
    assert (
        confs.items()
        >= {
            **DELTA,
            "spark.jars": EMR_DELTA_JARS,
            "spark.archives": f"{ARCHIVE}#environment",
            "spark.emr-serverless.driverEnv.PYSPARK_PYTHON": "./environment/bin/python",
            "spark.executorEnv.PYSPARK_PYTHON": "./environment/bin/python",
            "spark.emr-serverless.driverEnv.IOT_LAKE_SPARK": "classic",
        }.items()
    )
    assert confs["spark.submit.pyFiles"].startswith(f"{lake_root}/_code/iot_lake-")
    assert request["configurationOverrides"]["monitoringConfiguration"]["s3MonitoringConfiguration"] == {
        "logUri": f"{lake_root}/_logs/emr-serverless/",
        "encryptionKeyArn": key,
    }
    # SSE-KMS: EMRFS and S3A for what Spark writes, the key in the driver's and executors' environment.
    assert (
        confs.items()
        >= {
            "spark.hadoop.fs.s3.enableServerSideEncryption": "true",
            "spark.hadoop.fs.s3.serverSideEncryption.kms.keyId": key,
            "spark.hadoop.fs.s3a.encryption.algorithm": "SSE-KMS",
            "spark.hadoop.fs.s3a.encryption.key": key,
            "spark.emr-serverless.driverEnv.IOT_LAKE_KMS_KEY_ID": key,
            "spark.executorEnv.IOT_LAKE_KMS_KEY_ID": key,
        }.items()
    )
    assert request["tags"]["dagster/run-id"] == result.run_id
    assert_pipes_on_s3(
        aws,
        lake_root,
        confs["spark.emr-serverless.driverEnv.DAGSTER_PIPES_CONTEXT"],
        confs["spark.emr-serverless.driverEnv.DAGSTER_PIPES_MESSAGES"],
    )

    # The code and the job's own message chunks (written in the job's process with the key) are SSE-KMS.
    from tests.encryption_audit import assert_all_kms, encryption_of

    pipes = encryption_of(aws, lake_root, "_pipes")
    assert any("/messages/" in k for k in pipes)
    assert_all_kms({**pipes, **encryption_of(aws, lake_root, "_code")}, key)

    # The job's own S3 requests were signed as its role, and so are checked against
    # deploy/iam/emr-serverless-job.policy.json when this test ends (tests/conftest.py).
    from tests.conftest import _s3_request_log

    job_writes = {
        p["Key"].split("/")[1]
        for service, op, p in _s3_request_log().of("emr-serverless-job")
        if service == "s3" and op in ("PutObject", "CreateMultipartUpload")
    }
    assert {"curated", "_pipes", "_logs"} <= job_writes

    [run_id] = twin.outcomes
    assert curated["AWS EMR Serverless Job Run ID"].value == run_id
    assert_ran_from_published_zip(twin, run_id, confs["spark.submit.pyFiles"])
    # What the job reported is what it wrote: the Delta table on S3 holds exactly the new rows.
    table = DeltaTable(f"{lake_root}/curated/telemetry", storage_options=setup_delta_options())
    assert table.to_pyarrow_table().num_rows == curated["curated_new"].value
    # And beside it, the per-object counts the warehouse's row accounting sums (iot_lake/curated/object_counts.py).
    counts = DeltaTable(f"{lake_root}/{OBJECT_COUNTS}", storage_options=setup_delta_options()).to_pyarrow_table()
    assert sum(counts.column("curated_rows").to_pylist()) == curated["curated_new"].value
    assert "emr-serverless-job" in audited_roles()  # the job's requests were checked against its role


# --------------------------------------------------------------------------------------------
# Glue
# --------------------------------------------------------------------------------------------


@pytest.fixture
def glue_job(aws, lake_root, tmp_path):
    name = "iot-lake-spark"
    aws.client("glue").create_job(
        Name=name,
        Role=ROLE,
        GlueVersion="5.0",
        Command={"Name": "glueetl", "ScriptLocation": glue_entrypoint_uri(lake_root), "PythonVersion": "3"},
    )
    return name, GlueTwin(aws, tmp_path / "twin")


def test_glue_runs_the_same_module_with_the_same_arguments(aws, lake_root, landed, glue_job):
    name, twin = glue_job
    result = materialize(
        [curated_telemetry], partition_key=PARTITION, resources=runner("glue", lake_root, glue_job_name=name)
    )
    curated = assert_curated_round_trip(result, landed)

    arguments = twin.last("StartJobRun")["Arguments"]
    assert arguments["--iot-lake-module"] == MODULE
    assert json.loads(arguments["--iot-lake-args"]) == module_args(lake_root)
    assert arguments["--extra-py-files"].startswith(f"{lake_root}/_code/iot_lake-")
    assert arguments["--datalake-formats"] == "delta"
    assert parse_confs(["--conf", *shlex.split(arguments["--conf"])]) == DELTA
    modules = dict(m.split("==") for m in arguments["--additional-python-modules"].split(","))
    assert {"pyarrow", "fsspec", "s3fs", "boto3", "dagster-pipes"} <= set(modules)
    assert_pipes_on_s3(aws, lake_root, arguments["--dagster-pipes-context"], arguments["--dagster-pipes-messages"])

    [run_id] = twin.outcomes
    assert curated["AWS Glue Job Run ID"].value == run_id
    assert_ran_from_published_zip(twin, run_id, arguments["--extra-py-files"])
    assert "glue-job" in audited_roles()  # the job's requests (S3, its logs) were checked against its role


def test_glue_job_must_run_the_published_entry_point(aws, lake_root, glue_job):
    _, twin = glue_job
    aws.client("glue").create_job(
        Name="someone-elses",
        Role=ROLE,
        Command={"Name": "glueetl", "ScriptLocation": "s3://elsewhere/script.py", "PythonVersion": "3"},
    )
    with pytest.raises(ValueError) as err:
        materialize(
            [curated_telemetry],
            partition_key=PARTITION,
            resources=runner("glue", lake_root, glue_job_name="someone-elses"),
        )
    assert "s3://elsewhere/script.py" in str(err.value) and glue_entrypoint_uri(lake_root) in str(err.value)
    assert not twin.outcomes  # never started


# --------------------------------------------------------------------------------------------
# Steps on an EMR cluster
# --------------------------------------------------------------------------------------------


@pytest.fixture
def emr_cluster(aws, lake_root, tmp_path):
    bucket, _ = split_s3_uri(lake_root)
    cluster = aws.client("emr").run_job_flow(
        Name="iot-lake",
        ReleaseLabel="emr-7.5.0",
        LogUri=f"{lake_root}/_logs/emr/",  # where the instance profile may write (deploy/iam/emr-ec2-instance)
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
        Instances={"MasterInstanceType": "m5.xlarge", "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True},
    )
    return cluster["JobFlowId"], EMRStepsTwin(aws, tmp_path / "twin")


def test_emr_step_runs_the_same_module_with_the_same_arguments(aws, lake_root, landed, emr_cluster):
    cluster_id, twin = emr_cluster
    result = materialize(
        [curated_telemetry],
        partition_key=PARTITION,
        resources=runner("emr", lake_root, emr_cluster_id=cluster_id, env_archive=ARCHIVE),
    )
    curated = assert_curated_round_trip(result, landed)

    request = twin.last("AddJobFlowSteps")
    [step] = request["Steps"]
    assert request["JobFlowId"] == cluster_id and step["ActionOnFailure"] == "CONTINUE"
    args = step["HadoopJarStep"]["Args"]
    entry = args.index(next(a for a in args if a.startswith(f"{lake_root}/_code/entrypoint-")))
    assert args[:3] == ["spark-submit", "--deploy-mode", "cluster"] and args[entry + 1 :] == [
        MODULE,
        *module_args(lake_root),
    ]
    confs = parse_confs(args[:entry])
    assert (
        confs.items()
        >= {
            **DELTA,
            "spark.jars": EMR_DELTA_JARS,
            "spark.archives": f"{ARCHIVE}#environment",
            "spark.yarn.appMasterEnv.PYSPARK_PYTHON": "./environment/bin/python",
            "spark.yarn.appMasterEnv.IOT_LAKE_SPARK": "classic",
        }.items()
    )
    assert_pipes_on_s3(
        aws,
        lake_root,
        confs["spark.yarn.appMasterEnv.DAGSTER_PIPES_CONTEXT"],
        confs["spark.yarn.appMasterEnv.DAGSTER_PIPES_MESSAGES"],
    )
    [step_id] = twin.outcomes
    assert curated["AWS EMR Step ID"].value == step_id
    assert_ran_from_published_zip(twin, step_id, confs["spark.submit.pyFiles"])
    assert "emr-ec2-instance" in audited_roles()  # the step's requests were checked against the instance profile


# --------------------------------------------------------------------------------------------
# Failures name the state, the service's message and where the logs are
# --------------------------------------------------------------------------------------------


def test_failed_emr_serverless_run_says_why_and_where_the_logs_are(aws, lake_root, emr_serverless):
    application_id, twin = emr_serverless  # nothing landed: the job fails for want of an inventory
    with pytest.raises(SparkJobFailed) as err:
        materialize(
            [curated_telemetry],
            partition_key=PARTITION,
            resources=runner(
                "emr-serverless",
                lake_root,
                emr_application_id=application_id,
                emr_job_role_arn=ROLE,
                env_archive=ARCHIVE,
            ),
        )
    [run_id] = twin.outcomes
    message = str(err.value)
    assert f"job run {run_id}" in message and "ended FAILED" in message
    assert "RuntimeError: no landing inventory for 2026-11-20 00:00" in message  # stateDetails
    assert err.value.allow_retries is False  # the job's own error: a retry would fail the same way
    logs = f"{lake_root}/_logs/emr-serverless/applications/{application_id}/jobs/{run_id}/SPARK_DRIVER/"
    assert f"Driver logs: {logs}" in message
    stderr = gzip.decompress(objects(aws, logs.rstrip("/"))["stderr.gz"]).decode()
    assert "no landing inventory" in stderr and "Traceback" in stderr


def test_failed_glue_run_says_why_and_where_the_logs_are(aws, lake_root, glue_job):
    name, twin = glue_job
    with pytest.raises(SparkJobFailed) as err:
        materialize(
            [curated_telemetry], partition_key=PARTITION, resources=runner("glue", lake_root, glue_job_name=name)
        )
    [run_id] = twin.outcomes
    message = str(err.value)
    assert f"Glue job {name} run {run_id} ended FAILED: RuntimeError: no landing inventory" in message
    assert f"/aws-glue/jobs/error and /aws-glue/jobs/output, log stream {run_id}" in message
    events = aws.client("logs").get_log_events(logGroupName="/aws-glue/jobs/error", logStreamName=run_id)["events"]
    assert any("no landing inventory" in e["message"] for e in events)


def test_failed_emr_step_says_why_and_where_the_logs_are(aws, lake_root, emr_cluster):
    cluster_id, twin = emr_cluster
    with pytest.raises(SparkJobFailed) as err:
        materialize(
            [curated_telemetry],
            partition_key=PARTITION,
            resources=runner("emr", lake_root, emr_cluster_id=cluster_id, env_archive=ARCHIVE),
        )
    [step_id] = twin.outcomes
    message = str(err.value)
    assert f"EMR step {step_id} on cluster {cluster_id} ended FAILED" in message
    assert "RuntimeError: no landing inventory" in message
    log_file = f"{lake_root}/_logs/emr/{cluster_id}/steps/{step_id}/stderr.gz"
    assert f"Logs: {log_file}" in message
    assert "no landing inventory" in gzip.decompress(objects(aws, log_file.rsplit("/", 1)[0])["stderr.gz"]).decode()
