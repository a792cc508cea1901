"""SageMakerRunner's ``sagemaker`` mode at the boto3 boundary: training and processing jobs.

Everything AWS is a moto server. tests/sagemaker_twins.py does the containers' work when moto
reports a job created: the requested entry point runs with the request's environment, channels and
directories, so the stand-in scripts' Pipes messages travel over (moto) S3 back into a real
Dagster materialize(), and what they write lands where SageMaker would put it.
"""

from __future__ import annotations

import io
import json
import tarfile
from types import SimpleNamespace

import pytest
from dagster import DagsterExecutionInterruptedError, DagsterInstance, asset, build_asset_context, materialize
from dagster_pipes import decode_param

import resources.sagemaker_aws as sagemaker_aws
from iot_lake.lake import Lake
from lib.code_publishing import split_s3_uri
from lib.sagemaker_jobs import JobRun, job_name
from resources.lake import LakeResource
from resources.sagemaker import SageMakerRunner
from resources.sagemaker_aws import SageMakerJobFailed
from tests.conftest import REGION
from tests.iam_audit import audited_roles, setup_storage_options
from tests.sagemaker_twins import SageMakerTwin

ROLE = "arn:aws:iam::123456789012:role/iot-lake-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/iot-lake-ml:1.0"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


@pytest.fixture
def lake(lake_root) -> Lake:
    """Readings in two files, one in a subdirectory: the channel's layout must survive the copy
    (written by the test itself, with its own key)."""
    lake = Lake(lake_root, setup_storage_options())
    lake.write_text("models/forecast/training_data/readings/a.txt", "1 2 3")
    lake.write_text("models/forecast/training_data/readings/more/b.txt", "4")
    return lake


@pytest.fixture
def twin(aws, tmp_path) -> SageMakerTwin:
    iam = aws.client("iam")
    try:  # one moto server for the whole test run
        iam.create_role(RoleName=ROLE.rsplit("/", 1)[-1], AssumeRolePolicyDocument=json.dumps(TRUST))
    except iam.exceptions.EntityAlreadyExistsException:
        pass
    return SageMakerTwin(aws, tmp_path / "twin")


def runner(lake_root: str, **kwargs) -> SageMakerRunner:
    return SageMakerRunner(
        mode="sagemaker",
        lake_root=lake_root,
        region=REGION,
        role_arn=ROLE,
        image_uri=IMAGE,
        poll_interval=0.05,
        **kwargs,
    )


def materialize_one(fn, lake_root: str, sagemaker: SageMakerRunner):
    """Materializes an asset whose body is ``fn(context, runner, lake)``: (result, the JobRun, the run's log)."""
    runs: list[JobRun] = []

    @asset
    def forecast(context, sagemaker: SageMakerRunner, lake: LakeResource):
        runs.append(fn(context, sagemaker, lake.lake()))
        return runs[-1].pipes_results[0]

    instance = DagsterInstance.ephemeral()
    result = materialize(
        [forecast],
        instance=instance,
        resources={"sagemaker": sagemaker, "lake": LakeResource(root=lake_root, region=REGION)},
    )
    return result, runs[-1], [e.user_message for e in instance.all_logs(result.run_id)]


def train(hyperparameters):
    return lambda context, sm, lake: sm.train(
        context,
        lake=lake,
        job_name=job_name("mean-model", "2026-11-20"),
        module="mean_model",
        channels={"train": "models/forecast/training_data/readings"},
        hyperparameters=hyperparameters,
        output_key="models/forecast/jobs",
    )


def process(context, sm, lake):
    return sm.process(
        context,
        lake=lake,
        job_name=job_name("scale-readings"),
        module="scale_readings",
        inputs={"readings": "models/forecast/training_data/readings"},
        outputs={"scaled": "models/forecast/history/scaled"},
        arguments=["--factor", "10", "{input:readings}", "{output:scaled}"],
    )


def materialization(result) -> dict:
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def assert_pipes_on_s3(lake_root: str, environment: dict) -> None:
    bucket, prefix = split_s3_uri(lake_root)
    context, messages = (
        decode_param(environment["DAGSTER_PIPES_CONTEXT"]),
        decode_param(environment["DAGSTER_PIPES_MESSAGES"]),
    )
    assert context["bucket"] == messages["bucket"] == bucket
    assert context["key"].startswith(f"{prefix}/_pipes/context/")
    assert messages["key_prefix"].startswith(f"{prefix}/_pipes/messages/")


def untar(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def test_training_job_runs_the_module_in_script_mode_and_reports_back(aws, lake_root, lake, twin):
    key = aws.client("kms").create_key()["KeyMetadata"]["Arn"]
    result, run, log = materialize_one(
        train({"scale": 2}),
        lake_root,
        runner(
            lake_root,
            training_instance_type="ml.c5.2xlarge",
            max_runtime_seconds=900,
            kms_key_id=key,
            subnets=["subnet-0a1", "subnet-0b2"],
            security_group_ids=["sg-0c3"],
        ),
    )
    assert result.success

    request = twin.last("CreateTrainingJob")
    name = request["TrainingJobName"]
    assert name == run.job_name and name.startswith("mean-model-2026-11-20-")
    assert request["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert request["RoleArn"] == ROLE
    assert (
        request["ResourceConfig"]["InstanceType"] == "ml.c5.2xlarge" and request["ResourceConfig"]["InstanceCount"] == 1
    )
    assert request["StoppingCondition"]["MaxRuntimeInSeconds"] == 900
    assert request["HyperParameters"] == {"scale": "2"}
    assert request["OutputDataConfig"]["S3OutputPath"] == f"{lake_root}/models/forecast/jobs"
    assert request["OutputDataConfig"]["KmsKeyId"] == key
    assert request["ResourceConfig"]["VolumeKmsKeyId"] == key  # the instance's ML storage volume
    assert request["VpcConfig"] == {"Subnets": ["subnet-0a1", "subnet-0b2"], "SecurityGroupIds": ["sg-0c3"]}
    assert {"Key": "dagster/run-id", "Value": result.run_id} in request["Tags"]
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"] for c in request["InputDataConfig"]}
    assert channels["train"]["S3Uri"] == f"{lake_root}/models/forecast/training_data/readings"
    code_uri = channels["code"]["S3Uri"]
    assert code_uri.startswith(f"{lake_root}/_code/iot_lake-") and code_uri.endswith(".zip")
    assert channels["sm_drivers"]["S3Uri"].startswith(f"{lake_root}/_code/sagemaker/")
    assert {c["S3DataType"] for c in channels.values()} == {"S3Prefix"}
    environment = request["Environment"]
    assert environment["PYTHONPATH"] == f"/opt/ml/input/data/code/{code_uri.rsplit('/', 1)[-1]}"
    assert environment["IOT_LAKE_KMS_KEY_ID"] == key  # for what the script writes to the lake itself
    assert_pipes_on_s3(lake_root, environment)

    # The SDK's drivers run the command from the code channel; the job runs our entry point with the module.
    bucket, drivers = split_s3_uri(channels["sm_drivers"]["S3Uri"])
    script = aws.client("s3").get_object(Bucket=bucket, Key=f"{drivers}/sm_train.sh")["Body"].read().decode()
    assert "cd /opt/ml/input/data/code" in script and "python3 -m iot_lake.pipes_entrypoint mean_model" in script
    container = twin.containers[name]
    assert container.returncode == 0, container.stderr
    assert container.iot_lake_file.endswith(f"/{code_uri.rsplit('/', 1)[-1]}/iot_lake/__init__.py")

    # What the script reported came back through Pipes; what it wrote is where SageMaker puts it.
    assert materialization(result) == {"mean": 5.0, "values": 4, "job": name}
    base = f"models/forecast/jobs/{name}/output"
    assert run.outputs == {"model": f"{base}/model.tar.gz", "output": f"{base}/output.tar.gz"}
    assert json.loads(untar(lake.read_bytes(run.outputs["model"]))["model.json"]) == {"mean": 5.0}
    assert json.loads(untar(lake.read_bytes(run.outputs["output"]))["metrics.json"]) == {"n": 4}
    assert run.logs == f"/aws/sagemaker/TrainingJobs:{name}"
    assert f"SageMaker training job {name}: Completed / Completed" in log
    assert "mean of 4 values: 5.0" in log  # the script's own log line, through Pipes

    # SSE-KMS with the key: the SDK's staged drivers, the code zip, and the container's message chunks.
    from tests.encryption_audit import assert_all_kms, encryption_of

    written = {**encryption_of(aws, lake_root, "_code"), **encryption_of(aws, lake_root, "_pipes")}
    assert any("/_code/sagemaker/" in k for k in written) and any("/messages/" in k for k in written)
    assert_all_kms(written, key)
    # The job's outputs, uploaded by SageMaker as the role, under the key the request named.
    assert_all_kms(encryption_of(aws, lake_root, f"models/forecast/jobs/{name}"), key)
    # SageMaker's and the container's requests were checked against the role, the runner's against Dagster's.
    assert "sagemaker" in audited_roles()
    assert {"CreateTrainingJob", "DescribeTrainingJob"} <= {op for _, op, _ in aws.iam_recorder.calls}


def test_failed_training_job_says_why_and_where_the_logs_are(aws, lake_root, lake, twin):
    with pytest.raises(SageMakerJobFailed) as err:
        materialize_one(train({"scale": 1, "fail": "true"}), lake_root, runner(lake_root))
    request = twin.last("CreateTrainingJob")
    name = request["TrainingJobName"]
    assert "VolumeKmsKeyId" not in request["ResourceConfig"] and "VpcConfig" not in request
    message = str(err.value)
    # FailureReason: what the SDK's driver wrote to /opt/ml/output/failure when the command failed.
    assert f"SageMaker training job {name} ended Failed: AlgorithmError: Training Execution failed" in message
    assert err.value.allow_retries is False  # the script's own error: the retry policy skips it
    assert f"TrainingJob - {name}" in message
    assert f"Logs: CloudWatch log group /aws/sagemaker/TrainingJobs, log streams {name}/*" in message
    logs = aws.client("logs")
    [stream] = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=name)[
        "logStreams"
    ]
    events = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream["logStreamName"])
    assert any("asked to fail by the fail hyperparameter" in e["message"] for e in events["events"])


def test_missing_channel_data_fails_before_any_job(aws, lake_root, twin):
    with pytest.raises(FileNotFoundError, match="models/forecast/training_data/readings"):
        materialize_one(train({"scale": 1}), lake_root, runner(lake_root))
    assert not [r for r in twin.requests if r["operation"].startswith("Create")]


def test_sagemaker_mode_names_what_it_is_missing(lake_root):
    with pytest.raises(ValueError, match="needs role_arn, image_uri"):
        SageMakerRunner(mode="sagemaker", lake_root=lake_root).train(
            build_asset_context(),
            lake=Lake(lake_root),
            job_name="j",
            module="m",
            channels={},
            hyperparameters={},
            output_key="models",
        )


# --------------------------------------------------------------------------------------------
# Processing (batch forecasts)
# --------------------------------------------------------------------------------------------


def test_processing_job_maps_lake_prefixes_and_resolves_placeholders(aws, lake_root, lake, twin):
    result, run, log = materialize_one(process, lake_root, runner(lake_root, processing_instance_type="ml.m5.4xlarge"))
    assert result.success

    request = twin.last("CreateProcessingJob")
    name = request["ProcessingJobName"]
    assert name == run.job_name and name.startswith("scale-readings-")
    # No key and no VPC configured (a non-prod runner): the request names neither.
    assert "VolumeKmsKeyId" not in request["ProcessingResources"]["ClusterConfig"] and "NetworkConfig" not in request
    app = request["AppSpecification"]
    assert app["ImageUri"] == IMAGE
    assert app["ContainerEntrypoint"] == ["python3", "-m", "iot_lake.pipes_entrypoint", "scale_readings"]
    assert app["ContainerArguments"] == [
        "--factor",
        "10",
        "/opt/ml/processing/input/readings",
        "/opt/ml/processing/output/scaled",
    ]
    inputs = {i["InputName"]: i["S3Input"] for i in request["ProcessingInputs"]}
    assert inputs["readings"] == {
        "S3Uri": f"{lake_root}/models/forecast/training_data/readings",
        "LocalPath": "/opt/ml/processing/input/readings",
        "S3DataType": "S3Prefix",
        "S3InputMode": "File",
    }
    code_uri = inputs["iot_lake_code"]["S3Uri"]
    assert code_uri.startswith(f"{lake_root}/_code/iot_lake-") and code_uri.endswith(".zip")
    [output] = request["ProcessingOutputConfig"]["Outputs"]
    assert output == {
        "OutputName": "scaled",
        "S3Output": {
            "S3Uri": f"{lake_root}/models/forecast/history/scaled",
            "LocalPath": "/opt/ml/processing/output/scaled",
            "S3UploadMode": "EndOfJob",
        },
    }
    assert request["ProcessingResources"]["ClusterConfig"]["InstanceType"] == "ml.m5.4xlarge"
    assert request["StoppingCondition"]["MaxRuntimeInSeconds"] == 3600
    assert request["RoleArn"] == ROLE
    environment = request["Environment"]
    assert environment["PYTHONPATH"] == f"/opt/ml/processing/iot_lake_code/{code_uri.rsplit('/', 1)[-1]}"
    assert environment["PROCESSING_JOB_NAME"] == name
    assert_pipes_on_s3(lake_root, environment)

    assert twin.containers[name].returncode == 0, twin.containers[name].stderr
    assert materialization(result) == {"files": 2}
    assert run.outputs == {"scaled": "models/forecast/history/scaled"}
    assert lake.read_bytes("models/forecast/history/scaled/a.txt") == b"10 20 30"
    assert lake.read_bytes("models/forecast/history/scaled/more/b.txt") == b"40"
    assert run.logs == f"/aws/sagemaker/ProcessingJobs:{name}"
    assert f"SageMaker processing job {name}: Completed" in log


def test_unknown_placeholder_fails_before_any_job(aws, lake_root, lake, twin):
    with pytest.raises(ValueError, match=r"\{output:forecast\}"):
        materialize_one(
            lambda context, sm, lake: sm.process(
                context,
                lake=lake,
                job_name="j",
                module="scale_readings",
                inputs={"readings": "models/forecast/training_data/readings"},
                outputs={"scaled": "models/forecast/history/scaled"},
                arguments=["{output:forecast}"],
            ),
            lake_root,
            runner(lake_root),
        )
    assert not [r for r in twin.requests if r["operation"].startswith("Create")]


@pytest.fixture
def stuck(aws):
    """No container runs: describe answers as the test sets it, at the boto3 boundary."""
    answer: dict = {"ProcessingJobStatus": "InProgress"}
    requests: list[tuple[str, dict]] = []
    aws.events.register("after-call.sagemaker.DescribeProcessingJob", lambda parsed, **_: parsed.update(answer))
    aws.events.register(
        "before-parameter-build.sagemaker", lambda model, params, **_: requests.append((model.name, params))
    )
    return answer, requests


def test_failed_processing_job_says_why_and_where_the_logs_are(aws, lake_root, lake, stuck):
    answer, requests = stuck
    answer.update(
        ProcessingJobStatus="Failed",
        FailureReason="ClientError: Failed to download data.",
        ExitMessage="KeyError: 'device_id'",
    )
    with pytest.raises(SageMakerJobFailed) as err:
        materialize_one(process, lake_root, runner(lake_root))
    [name] = [params["ProcessingJobName"] for operation, params in requests if operation == "CreateProcessingJob"]
    message = str(err.value)
    assert f"SageMaker processing job {name} ended Failed: ClientError: Failed to download data." in message
    assert "Exit message: KeyError: 'device_id'" in message
    assert f"Logs: CloudWatch log group /aws/sagemaker/ProcessingJobs, log streams {name}/*" in message


def test_interrupted_run_stops_its_job(aws, lake_root, lake, stuck, monkeypatch):
    _, requests = stuck
    polls = []

    def interrupt(seconds):
        polls.append(seconds)
        if len(polls) == 2:
            raise DagsterExecutionInterruptedError()

    # Only the runner's polling is interrupted, not the Pipes reader's threads.
    monkeypatch.setattr(sagemaker_aws, "time", SimpleNamespace(sleep=interrupt))
    with pytest.raises(DagsterExecutionInterruptedError):
        materialize_one(process, lake_root, runner(lake_root))
    operations = [operation for operation, _ in requests]
    assert operations.count("DescribeProcessingJob") == 2 and operations[-1] == "StopProcessingJob"
    [name] = [params["ProcessingJobName"] for operation, params in requests if operation == "CreateProcessingJob"]
    assert requests[-1][1] == {"ProcessingJobName": name}
