"""SageMakerRunner's ``sagemaker`` mode: training and processing jobs through Dagster Pipes.

The module and its arguments are the ones the local twin runs (resources/sagemaker.py). The
container runs them as ``python3 -m iot_lake.pipes_entrypoint MODULE ARG...`` with the code zip
published for this version (lib.code_publishing.publish_code, under ``<lake>/_code/``) on its PYTHONPATH,
and the Pipes context and messages go through ``<lake>/_pipes/`` as for the Spark jobs.

- Training: the SDK v3's ModelTrainer builds and creates the job. ``SourceCode.command`` makes the
  SDK ship its container drivers (channel ``sm_drivers``, staged under ``<lake>/_code/sagemaker/``),
  which set up script mode's variables (SM_CHANNEL_*, SM_HPS, SM_MODEL_DIR, ...) in any Python
  image and then run the command; the code zip is the SDK's ``code`` channel. The SDK names the
  job ``<job_name>-<timestamp>`` (63 characters at most); JobRun.job_name is the name it got.
- Processing: CreateProcessingJob, built here: SageMaker's processing contract (inputs and outputs
  under /opt/ml/processing/) needs no drivers, and the SDK's processors would only re-upload code.

Both jobs are then polled here rather than by the SDK, so that status changes reach the Dagster
log, an interrupted run stops its job, and a failed job raises with its FailureReason and logs.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagster import AssetExecutionContext, DagsterExecutionInterruptedError, open_pipes_session

from iot_lake.aws import client as aws_client
from iot_lake.encryption import KMS_KEY_VAR, encrypt_writes
from iot_lake.lake import Lake
from lib.code_publishing import PublishedCode, publish_code
from lib.retries import JobFailed
from lib.sagemaker_jobs import JobRun, hyperparameter_strings, resolve_arguments
from resources.spark_aws import lake_prefix, pipes_over_s3

if TYPE_CHECKING:  # the runner calls this module, never the other way round
    from resources.sagemaker import SageMakerRunner

CONTAINER_ROOT = "/opt/ml"
ENTRYPOINT = ["python3", "-m", "iot_lake.pipes_entrypoint"]
# Where the code zip lands: the SDK's source code channel, and a processing input of our own
# outside /opt/ml/processing/input, so it can never clash with the job's inputs.
TRAINING_CODE_DIR = f"{CONTAINER_ROOT}/input/data/code"
PROCESSING_CODE_INPUT = "iot_lake_code"
PROCESSING_CODE_DIR = f"{CONTAINER_ROOT}/processing/{PROCESSING_CODE_INPUT}"
STAGING_AREA = "_code/sagemaker"  # the SDK's per-job drivers
TERMINAL = ("Completed", "Failed", "Stopped")


class SageMakerJobFailed(JobFailed):
    """A training or processing job ended other than Completed."""


@dataclass(frozen=True)
class JobKind:
    noun: str  # training / processing
    api: str  # boto3's method suffix
    field: str  # the prefix of the API's field names

    @property
    def log_group(self) -> str:
        return f"/aws/sagemaker/{self.field}Jobs"

    def logs(self, job_name: str) -> str:
        """CloudWatch log group and stream prefix: each instance logs to ``<job>/algo-<n>-<epoch>``."""
        return f"{self.log_group}:{job_name}"


TRAINING = JobKind("training", "training_job", "Training")
PROCESSING = JobKind("processing", "processing_job", "Processing")


def s3_uri(lake_root: str, key: str) -> str:
    bucket, prefix = lake_prefix(lake_root, key)
    return f"s3://{bucket}/{prefix}"


def _zip_name(code: PublishedCode) -> str:
    return code.package_uri.rsplit("/", 1)[-1]


# --- Training -----------------------------------------------------------------------------------


def train_on_sagemaker(
    runner: SageMakerRunner,
    context: AssetExecutionContext,
    *,
    lake: Lake,
    job_name: str,
    module: str,
    channels: Mapping[str, str],
    hyperparameters: Mapping[str, Any],
    output_key: str,
) -> JobRun:
    # Imported per run: the SDK takes seconds to import.
    from sagemaker.core.helper.session_helper import Session
    from sagemaker.core.training.configs import (
        Compute,
        InputData,
        Networking,
        OutputDataConfig,
        SourceCode,
        StoppingCondition,
        Tag,
    )
    from sagemaker.train import ModelTrainer

    _require(runner)
    _require_inputs(lake, channels.values())
    aws = _aws_session(runner)
    sm = aws_client("sagemaker", runner.region, session=aws)
    code = publish_code(aws_client("s3", runner.region, session=aws), runner.lake_root, kms_key_id=runner.kms_key_id)
    bucket, staging = lake_prefix(runner.lake_root, STAGING_AREA)
    with _pipes_session(runner, aws, context) as session:
        trainer = ModelTrainer(
            sagemaker_session=Session(
                boto_session=aws, sagemaker_client=sm, default_bucket=bucket, default_bucket_prefix=staging
            ),
            role=runner.role_arn,
            training_image=runner.image_uri,
            base_job_name=job_name,
            # The zip's S3 URI is a prefix that matches only it: the code channel holds just the zip.
            source_code=SourceCode(source_dir=code.package_uri, command=shlex.join([*ENTRYPOINT, module])),
            compute=Compute(
                instance_type=runner.training_instance_type, instance_count=1, volume_kms_key_id=runner.kms_key_id
            ),
            networking=Networking(**vpc) if (vpc := _vpc(runner)) else None,
            stopping_condition=StoppingCondition(max_runtime_in_seconds=runner.max_runtime_seconds),
            output_data_config=OutputDataConfig(
                s3_output_path=s3_uri(runner.lake_root, output_key), kms_key_id=runner.kms_key_id
            ),
            environment={
                "PYTHONPATH": f"{TRAINING_CODE_DIR}/{_zip_name(code)}",
                **_kms_env(runner),
                **session.get_bootstrap_env_vars(),
            },
            hyperparameters=hyperparameter_strings(hyperparameters),
            tags=[Tag(key="dagster/run-id", value=context.run.run_id)],
        )
        trainer.train(
            input_data_config=[
                InputData(channel_name=name, data_source=s3_uri(runner.lake_root, prefix))
                for name, prefix in channels.items()
            ],
            wait=False,
            logs=False,
        )
        # The SDK documents the created job as _latest_training_job.
        name = trainer._latest_training_job.training_job_name
        context.log.info(f"SageMaker training job {name} created; logs: {TRAINING.logs(name)}")
        wait_for_job(sm, TRAINING, name, context, runner.poll_interval)
    base = f"{output_key}/{name}/output"
    return JobRun(
        name,
        {"model": f"{base}/model.tar.gz", "output": f"{base}/output.tar.gz"},
        logs=TRAINING.logs(name),
        pipes_results=list(session.get_results()),
    )


# --- Processing ---------------------------------------------------------------------------------


def process_on_sagemaker(
    runner: SageMakerRunner,
    context: AssetExecutionContext,
    *,
    lake: Lake,
    job_name: str,
    module: str,
    inputs: Mapping[str, str],
    outputs: Mapping[str, str],
    arguments: Sequence[str] = (),
) -> JobRun:
    _require(runner)
    _require_inputs(lake, inputs.values())
    args = resolve_arguments(arguments, inputs, outputs, CONTAINER_ROOT)
    aws = _aws_session(runner)
    sm = aws_client("sagemaker", runner.region, session=aws)
    code = publish_code(aws_client("s3", runner.region, session=aws), runner.lake_root, kms_key_id=runner.kms_key_id)
    with _pipes_session(runner, aws, context) as session:
        sm.create_processing_job(
            **processing_request(
                runner,
                job_name=job_name,
                module=module,
                inputs=inputs,
                outputs=outputs,
                arguments=args,
                code=code,
                environment=session.get_bootstrap_env_vars(),
                run_id=context.run.run_id,
            )
        )
        context.log.info(f"SageMaker processing job {job_name} created; logs: {PROCESSING.logs(job_name)}")
        wait_for_job(sm, PROCESSING, job_name, context, runner.poll_interval)
    return JobRun(job_name, dict(outputs), logs=PROCESSING.logs(job_name), pipes_results=list(session.get_results()))


def processing_request(
    runner: SageMakerRunner,
    *,
    job_name: str,
    module: str,
    inputs: Mapping[str, str],
    outputs: Mapping[str, str],
    arguments: Sequence[str],
    code: PublishedCode,
    environment: Mapping[str, str],
    run_id: str,
) -> dict[str, Any]:
    """CreateProcessingJob's request; ``arguments`` already name the container's directories."""
    root = runner.lake_root

    def s3_input(name: str, uri: str, local_path: str) -> dict[str, Any]:
        return {
            "InputName": name,
            "S3Input": {"S3Uri": uri, "LocalPath": local_path, "S3DataType": "S3Prefix", "S3InputMode": "File"},
        }

    app: dict[str, Any] = {"ImageUri": runner.image_uri, "ContainerEntrypoint": [*ENTRYPOINT, module]}
    cluster: dict[str, Any] = {
        "InstanceCount": 1,
        "InstanceType": runner.processing_instance_type,
        "VolumeSizeInGB": 30,
    }
    if runner.kms_key_id:
        cluster["VolumeKmsKeyId"] = runner.kms_key_id
    if arguments:
        app["ContainerArguments"] = list(arguments)
    request: dict[str, Any] = {
        "ProcessingJobName": job_name,
        "RoleArn": runner.role_arn,
        "AppSpecification": app,
        "ProcessingInputs": [
            s3_input(PROCESSING_CODE_INPUT, code.package_uri, PROCESSING_CODE_DIR),
            *(
                s3_input(name, s3_uri(root, prefix), f"{CONTAINER_ROOT}/processing/input/{name}")
                for name, prefix in inputs.items()
            ),
        ],
        "ProcessingResources": {"ClusterConfig": cluster},
        "StoppingCondition": {"MaxRuntimeInSeconds": runner.max_runtime_seconds},
        # PROCESSING_JOB_NAME: the local twin sets it too, so scripts can name what they write.
        "Environment": {
            "PYTHONPATH": f"{PROCESSING_CODE_DIR}/{_zip_name(code)}",
            "PROCESSING_JOB_NAME": job_name,
            **_kms_env(runner),
            **environment,
        },
        "Tags": [{"Key": "dagster/run-id", "Value": run_id}],
    }
    if vpc := _vpc(runner):
        request["NetworkConfig"] = {
            "VpcConfig": {"Subnets": vpc["subnets"], "SecurityGroupIds": vpc["security_group_ids"]}
        }
    if outputs:
        request["ProcessingOutputConfig"] = {
            "Outputs": [
                {
                    "OutputName": name,
                    "S3Output": {
                        "S3Uri": s3_uri(root, prefix),
                        "LocalPath": f"{CONTAINER_ROOT}/processing/output/{name}",
                        "S3UploadMode": "EndOfJob",
                    },
                }
                for name, prefix in outputs.items()
            ]
        }
        if runner.kms_key_id:
            request["ProcessingOutputConfig"]["KmsKeyId"] = runner.kms_key_id
    return request


# --- Shared -------------------------------------------------------------------------------------


def wait_for_job(
    sm, kind: JobKind, job_name: str, context: AssetExecutionContext, poll_interval: float
) -> Mapping[str, Any]:
    """Polls until the job ends; stops it if the run is interrupted, raises unless it Completed."""
    describe = getattr(sm, f"describe_{kind.api}")
    key = {f"{kind.field}JobName": job_name}
    shown = None
    try:
        while True:
            job = describe(**key)
            status = job[f"{kind.field}JobStatus"]
            state = " / ".join(filter(None, (status, job.get("SecondaryStatus"))))
            if state != shown:
                context.log.info(f"SageMaker {kind.noun} job {job_name}: {state}")
                shown = state
            if status in TERMINAL:
                break
            time.sleep(poll_interval)
    except DagsterExecutionInterruptedError:
        context.log.warning(f"Interrupted: stopping SageMaker {kind.noun} job {job_name}")
        getattr(sm, f"stop_{kind.api}")(**key)
        raise
    if status != "Completed":
        raise SageMakerJobFailed(job_failure(kind, job))
    return job


def job_failure(kind: JobKind, job: Mapping[str, Any]) -> str:
    name = job[f"{kind.field}JobName"]
    message = (
        f"SageMaker {kind.noun} job {name} ended {job[f'{kind.field}JobStatus']}: "
        f"{job.get('FailureReason') or 'no FailureReason given'}"
    )
    if job.get("ExitMessage"):  # processing: the container's last words
        message += f"\nExit message: {job['ExitMessage']}"
    return message + f"\nLogs: CloudWatch log group {kind.log_group}, log streams {name}/*"


def _kms_env(runner: SageMakerRunner) -> dict[str, str]:
    """The key for what the script writes to the lake itself (Lake, its Pipes messages)."""
    return {KMS_KEY_VAR: runner.kms_key_id} if runner.kms_key_id else {}


def _require(runner: SageMakerRunner) -> None:
    missing = [f for f in ("lake_root", "role_arn", "image_uri") if not getattr(runner, f)]
    if missing:
        raise ValueError(f"SageMakerRunner mode 'sagemaker' needs {', '.join(missing)} (see iot_lake.settings)")
    if bool(runner.subnets) != bool(runner.security_group_ids):
        raise ValueError("SageMakerRunner: subnets and security_group_ids go together (a VPC needs both)")


def _vpc(runner: SageMakerRunner) -> dict[str, list[str]] | None:
    """The jobs' VPC placement, if configured: the same subnets and groups for training and processing."""
    if not runner.subnets:
        return None
    return {"subnets": list(runner.subnets), "security_group_ids": list(runner.security_group_ids)}


def _require_inputs(lake: Lake, prefixes: Iterable[str]) -> None:
    """Fail before paying for a job, as the local twin does when it finds nothing to copy."""
    for prefix in prefixes:
        if next(lake.list(prefix), None) is None and not lake.exists(prefix):
            raise FileNotFoundError(f"nothing in the lake under {prefix!r} to hand to the job")


def _aws_session(runner: SageMakerRunner):
    """boto3's default session, the one the Spark runner's clients come from; the SDK needs a session."""
    import boto3

    if boto3.DEFAULT_SESSION is None:
        boto3.setup_default_session(region_name=runner.region)
    # The SDK stages its drivers with clients of its own from this session.
    return encrypt_writes(boto3.DEFAULT_SESSION, runner.kms_key_id)


@contextmanager
def _pipes_session(runner: SageMakerRunner, aws, context: AssetExecutionContext) -> Iterator[Any]:
    injector, reader = pipes_over_s3(aws_client("s3", runner.region, session=aws), runner.lake_root, runner.kms_key_id)
    with open_pipes_session(context=context, context_injector=injector, message_reader=reader) as session:
        yield session
