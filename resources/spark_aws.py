"""Running a job module on AWS through Dagster Pipes: EMR Serverless, Glue, or steps on an EMR cluster.

Every service runs iot_lake/spark/entrypoint.py with the module and arguments the local mode runs
as ``python -m MODULE ARG...``, against the code zip published for this version (lib/code_publishing.py).
What differs is only how each service is asked:

- EMR Serverless: StartJobRun; Python and the data plane's dependencies come from a packed venv
  (``spark.archives=...#environment``, see deploy/spark-env/), Delta from the jars EMR ships.
- Glue: StartJobRun of a job whose script is the published Glue entry point; dependencies are
  pip-installed per run (``--additional-python-modules``), Delta through ``--datalake-formats``.
- EMR on EC2: one spark-submit step on a running cluster, with the same archive and Delta jars.

For all three the Pipes context and messages go through S3 under ``<lake>/_pipes/`` (the S3
context injector and message reader; entrypoint.py opens the matching loader and writer). Job
logs stay with the service; a failed run raises SparkJobFailed naming its state, the service's
error message and where the logs are.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from dagster import (
    AssetExecutionContext,
    DagsterExecutionInterruptedError,
    PipesClient,
    PipesClientCompletedInvocation,
    open_pipes_session,
)
from dagster_aws.pipes import (
    PipesEMRServerlessClient,
    PipesGlueClient,
    PipesS3ContextInjector,
    PipesS3MessageReader,
)
from dagster_pipes import PipesParams

from iot_lake import encryption
from iot_lake.encryption import encrypt_writes
from iot_lake.spark.entrypoint import ARGS_FLAG, ENV_FLAG, MODULE_FLAG
from lib.code_publishing import PublishedCode, cluster_requirements, split_s3_uri
from lib.retries import JobFailed

DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
# EMR (7.x, Serverless and EC2) ships Delta's jars; they only need to be on the classpath.
EMR_DELTA_JARS = "/usr/share/aws/delta/lib/delta-spark.jar,/usr/share/aws/delta/lib/delta-storage.jar"
# Where spark.archives unpacks the venv (deploy/spark-env/) in the driver's and executors' directory.
ENV_PYTHON = "./environment/bin/python"


class SparkJobFailed(JobFailed):
    """A job run ended in a state other than success."""


def lake_prefix(lake_root: str, area: str) -> tuple[str, str]:
    """(bucket, key prefix) of an area such as ``_pipes`` under the lake root."""
    bucket, prefix = split_s3_uri(lake_root)
    return bucket, f"{prefix}/{area}" if prefix else area


# --- Pipes over S3 ------------------------------------------------------------------------------


class LakeS3MessageReader(PipesS3MessageReader):
    """PipesS3MessageReader whose message chunks land under the lake's prefix, not the bucket root."""

    def __init__(self, *, key_prefix: str, **kwargs):
        super().__init__(**kwargs)
        self.key_prefix = key_prefix

    @contextmanager
    def get_params(self) -> Iterator[PipesParams]:
        with super().get_params() as params:
            yield {**params, "key_prefix": f"{self.key_prefix}/{params['key_prefix']}"}


def pipes_over_s3(
    s3,
    lake_root: str,
    kms_key_id: str | None = None,
) -> tuple[PipesS3ContextInjector, LakeS3MessageReader]:
    encrypt_writes(s3, kms_key_id)  # the injector PUTs the context object
    bucket, prefix = lake_prefix(lake_root, "_pipes")
    return (
        PipesS3ContextInjector(bucket=bucket, client=s3, key_prefix=f"{prefix}/context/"),
        LakeS3MessageReader(bucket=bucket, client=s3, key_prefix=f"{prefix}/messages"),
    )


# --- What each service is asked to run ----------------------------------------------------------


def kms_confs(kms_key_id: str | None, driver_env: str) -> dict[str, str]:
    """SSE-KMS for what Spark writes (EMRFS/S3A), and the key for the data plane's own writes (Lake)."""
    if not kms_key_id:
        return {}
    return {
        **encryption.spark_confs(kms_key_id),
        f"{driver_env}{encryption.KMS_KEY_VAR}": kms_key_id,
        f"spark.executorEnv.{encryption.KMS_KEY_VAR}": kms_key_id,
    }


def spark_confs(
    code: PublishedCode, env_archive: str, driver_env: str, kms_key_id: str | None = None
) -> dict[str, str]:
    """spark-submit confs shared by the EMRs; ``driver_env`` is the conf prefix for driver env vars."""
    return {
        **kms_confs(kms_key_id, driver_env),
        "spark.submit.pyFiles": code.package_uri,
        "spark.archives": f"{env_archive}#environment",
        f"{driver_env}PYSPARK_DRIVER_PYTHON": ENV_PYTHON,
        f"{driver_env}PYSPARK_PYTHON": ENV_PYTHON,
        "spark.executorEnv.PYSPARK_PYTHON": ENV_PYTHON,
        f"{driver_env}IOT_LAKE_SPARK": "classic",
        "spark.jars": EMR_DELTA_JARS,
        **DELTA_CONF,
    }


def emr_serverless_params(
    *,
    application_id: str,
    role_arn: str,
    env_archive: str,
    code: PublishedCode,
    module: str,
    args: Sequence[str],
    log_uri: str,
    kms_key_id: str | None = None,
) -> dict[str, Any]:
    confs = spark_confs(code, env_archive, driver_env="spark.emr-serverless.driverEnv.", kms_key_id=kms_key_id)
    s3_logs: dict[str, Any] = {"logUri": log_uri}
    if kms_key_id and kms_key_id.startswith("arn:"):  # the API takes a key ARN only
        s3_logs["encryptionKeyArn"] = kms_key_id  # the driver and executor logs EMR Serverless uploads
    return {
        "applicationId": application_id,
        "executionRoleArn": role_arn,
        "name": module,
        "jobDriver": {
            "sparkSubmit": {
                "entryPoint": code.entrypoint_uri,
                "entryPointArguments": [module, *args],
                "sparkSubmitParameters": " ".join(f"--conf {k}={v}" for k, v in confs.items()),
            }
        },
        "configurationOverrides": {"monitoringConfiguration": {"s3MonitoringConfiguration": s3_logs}},
    }


def glue_params(
    *, job_name: str, code: PublishedCode, module: str, args: Sequence[str], kms_key_id: str | None = None
) -> dict[str, Any]:
    confs = {**DELTA_CONF, **encryption.spark_confs(kms_key_id)}
    arguments = {
        MODULE_FLAG: module,
        ARGS_FLAG: json.dumps(list(args)),
        "--extra-py-files": code.package_uri,
        "--additional-python-modules": ",".join(cluster_requirements()),
        "--datalake-formats": "delta",
        # Glue takes further confs chained inside the one --conf value.
        "--conf": " --conf ".join(f"{k}={v}" for k, v in confs.items()),
    }
    if kms_key_id:
        arguments[ENV_FLAG] = json.dumps({encryption.KMS_KEY_VAR: kms_key_id})
    return {"JobName": job_name, "Arguments": arguments}


def emr_step(
    *,
    code: PublishedCode,
    env_archive: str,
    module: str,
    args: Sequence[str],
    pipes_env: Mapping[str, str],
    kms_key_id: str | None = None,
) -> dict[str, Any]:
    confs = spark_confs(code, env_archive, driver_env="spark.yarn.appMasterEnv.", kms_key_id=kms_key_id)
    confs.update({f"spark.yarn.appMasterEnv.{k}": v for k, v in pipes_env.items()})
    submit = ["spark-submit", "--deploy-mode", "cluster"]
    for k, v in confs.items():
        submit += ["--conf", f"{k}={v}"]
    return {
        "Name": module,
        "ActionOnFailure": "CONTINUE",  # the cluster serves other runs
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": [*submit, code.entrypoint_uri, module, *args]},
    }


# --- Pipes clients that say why a run failed ----------------------------------------------------
# dagster-aws raises a bare "job failed" (EMR Serverless) or leaves out the logs (Glue). These
# override its wait methods, which are private: tests/test_spark_runner_aws.py fails if they move.


class EMRServerlessPipesClient(PipesEMRServerlessClient):
    """dagster-aws's client, raising with the run's state, stateDetails and S3 log location."""

    def _wait_for_completion(self, context, start_response):
        try:
            return super()._wait_for_completion(context, start_response)
        except RuntimeError as err:
            run = self.client.get_job_run(
                applicationId=start_response["applicationId"], jobRunId=start_response["jobRunId"]
            )["jobRun"]
            if run["state"] not in ("FAILED", "CANCELLING", "CANCELLED"):
                raise
            raise SparkJobFailed(emr_serverless_failure(run)) from err

    def _read_messages(self, context, session, response):
        # Messages come through the S3 reader; dagster-aws only wires CloudWatch here and would
        # warn that no messages can arrive.
        return None


def emr_serverless_failure(run: Mapping[str, Any]) -> str:
    app, run_id = run["applicationId"], run["jobRunId"]
    details = run.get("stateDetails") or "no details"
    message = f"EMR Serverless job run {run_id} (application {app}) ended {run['state']}: {details}"
    monitoring = run.get("configurationOverrides", {}).get("monitoringConfiguration", {})
    log_uri = monitoring.get("s3MonitoringConfiguration", {}).get("logUri")
    if log_uri:
        attempt = run.get("attempt") or 1
        where = f"{log_uri.rstrip('/')}/applications/{app}/jobs/{run_id}/" + (
            f"attempts/{attempt}/" if attempt > 1 else ""
        )
        message += f"\nDriver logs: {where}SPARK_DRIVER/ (stderr.gz, stdout.gz)"
    if monitoring.get("cloudWatchLoggingConfiguration", {}).get("enabled"):
        group = monitoring["cloudWatchLoggingConfiguration"].get("logGroupName") or "/aws/emr-serverless"
        message += f"\nCloudWatch log group: {group}"
    return message


class GluePipesClient(PipesGlueClient):
    """dagster-aws's client, raising with the run's state, ErrorMessage and CloudWatch log location."""

    def _wait_for_job_run_completion(self, job_name, run_id):
        response = super()._wait_for_job_run_completion(job_name, run_id)
        if response["JobRun"]["JobRunState"] != "SUCCEEDED":
            raise SparkJobFailed(glue_failure(response["JobRun"]))
        return response


def glue_failure(run: Mapping[str, Any]) -> str:
    group = run.get("LogGroupName") or "/aws-glue/jobs"
    return (
        f"Glue job {run['JobName']} run {run['Id']} ended "
        f"{run['JobRunState']}: {run.get('ErrorMessage') or 'no details'}"
        f"\nLogs: CloudWatch log groups {group}/error and {group}/output, log stream {run['Id']}"
    )


class PipesEMRStepClient(PipesClient):
    """One spark-submit step on a running EMR cluster, through Pipes.

    dagster-aws's PipesEMRClient starts a new cluster per invocation (RunJobFlow); an hourly job on
    a standing cluster adds a step instead. Same pattern: open a Pipes session, hand its bootstrap
    parameters to the driver's environment, wait, and fail with the step's failure details.
    """

    TERMINAL = ("COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED")

    def __init__(self, *, client, context_injector, message_reader, poll_interval: float = 10.0):
        self.client = client
        self.context_injector = context_injector
        self.message_reader = message_reader
        self.poll_interval = poll_interval

    def run(
        self,
        *,
        context: AssetExecutionContext,
        cluster_id: str,
        make_step: Callable[[Mapping[str, str]], dict[str, Any]],
        extras: dict[str, Any] | None = None,
    ) -> PipesClientCompletedInvocation:
        with open_pipes_session(
            context=context, context_injector=self.context_injector, message_reader=self.message_reader, extras=extras
        ) as session:
            step = make_step(session.get_bootstrap_env_vars())
            [step_id] = self.client.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])["StepIds"]
            context.log.info(f"[pipes] EMR step {step_id} added to cluster {cluster_id}")
            try:
                status = self._wait(cluster_id, step_id)
            except DagsterExecutionInterruptedError:
                context.log.warning(f"[pipes] interrupted: cancelling EMR step {step_id}")
                self.client.cancel_steps(ClusterId=cluster_id, StepIds=[step_id])
                raise
            if status["State"] != "COMPLETED":
                raise SparkJobFailed(self._failure(cluster_id, step_id, status))
            return PipesClientCompletedInvocation(
                session, metadata={"AWS EMR Cluster ID": cluster_id, "AWS EMR Step ID": step_id}
            )

    def _wait(self, cluster_id: str, step_id: str) -> Mapping[str, Any]:
        while True:
            status = self.client.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Status"]
            if status["State"] in self.TERMINAL:
                return status
            time.sleep(self.poll_interval)

    def _failure(self, cluster_id: str, step_id: str, status: Mapping[str, Any]) -> str:
        details = status.get("FailureDetails") or {}
        why = (
            ": ".join(filter(None, (details.get("Reason"), details.get("Message"))))
            or (status.get("StateChangeReason") or {}).get("Message")
            or "no details"
        )
        logs = details.get("LogFile")
        if not logs:
            log_uri = self.client.describe_cluster(ClusterId=cluster_id)["Cluster"].get("LogUri")
            logs = f"{log_uri.rstrip('/')}/{cluster_id}/steps/{step_id}/" if log_uri else "no LogUri set on the cluster"
        return f"EMR step {step_id} on cluster {cluster_id} ended {status['State']}: {why}\nLogs: {logs}"
