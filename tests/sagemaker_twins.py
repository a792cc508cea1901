"""Test twin of SageMaker training and processing jobs: the container's work, done here.

moto records CreateTrainingJob / CreateProcessingJob (real validation, real ARNs) but runs
nothing, and its jobs are always Completed. The twin hooks the boto3 session the runner's clients
come from: when a job is created it lays out what SageMaker gives the container under a temporary
``.../opt/ml`` (channels or processing inputs downloaded from moto S3, the config files, model and
output directories), runs the request's ContainerEntrypoint and ContainerArguments with its
Environment and uploads what SageMaker uploads afterwards (model.tar.gz and output.tar.gz under
the output path; processing outputs to their S3 URIs). The container's stdout and stderr go to
CloudWatch (moto) under the job's log group and stream, and describe answers with the real
outcome: a failed training job's FailureReason is what the container wrote to
/opt/ml/output/failure, as on SageMaker.

The liberties: ``/opt/ml`` is the temporary directory (rewritten in the request's paths and in the
SDK's drivers, which hard-code it); the image's Python is this venv, with the tests' stand-in job
scripts installed (``SCRIPTS`` on its path, after the code zip); moto lacks IAM's policy simulator,
which the SDK asks before using the role, so the twin answers it: everything allowed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.awsrequest import AWSResponse

from lib.code_publishing import split_s3_uri
from tests.iam_audit import ROLE_KEYS

SCRIPTS = Path(__file__).parent / "sagemaker_scripts"
WHERE_IS_IOT_LAKE = "import iot_lake, sys; sys.stdout.write(iot_lake.__file__)"


@dataclass
class Container:
    returncode: int
    stdout: str
    stderr: str
    iot_lake_file: str  # where the container imported iot_lake from
    root: Path  # its /opt/ml

    @property
    def last_exception(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return next((line for line in reversed(lines) if not line.startswith((" ", "\t", "+"))), "no output")


class SageMakerTwin:
    def __init__(self, session: boto3.Session, workdir: Path):
        self.session = session
        # SageMaker reads the channels, uploads the outputs and writes the logs as the job's execution
        # role, and the container's own calls are the role's too: all sign with the role's key, so
        # tests/iam_audit.py checks them against deploy/iam/sagemaker.policy.json.
        self.role_env = {"AWS_ACCESS_KEY_ID": ROLE_KEYS["sagemaker"], "AWS_SECRET_ACCESS_KEY": "testing"}
        as_role = {"aws_access_key_id": ROLE_KEYS["sagemaker"], "aws_secret_access_key": "testing"}
        self.s3 = session.client("s3", **as_role)
        self.logs = session.client("logs", **as_role)
        self.workdir = workdir
        self.requests: list[dict] = []
        self.containers: dict[str, Container] = {}
        session.events.register("before-parameter-build.sagemaker", self._record)
        session.events.register("before-parameter-build.iam.SimulatePrincipalPolicy", self._record)
        session.events.register("before-call.iam.SimulatePrincipalPolicy", self._simulate)
        session.events.register("after-call.sagemaker.CreateTrainingJob", self._train)
        session.events.register("after-call.sagemaker.CreateProcessingJob", self._process)
        session.events.register("after-call.sagemaker.DescribeTrainingJob", self._describe_training)
        session.events.register("after-call.sagemaker.DescribeProcessingJob", self._describe_processing)

    def _record(self, params, model, **_):
        self.requests.append({"operation": model.name, **params})

    def last(self, operation: str) -> dict:
        return [r for r in self.requests if r["operation"] == operation][-1]

    def _simulate(self, **_):
        actions = self.last("SimulatePrincipalPolicy")["ActionNames"]
        results = [{"EvalActionName": a, "EvalResourceName": "*", "EvalDecision": "allowed"} for a in actions]
        return AWSResponse("https://twin", 200, {}, None), {"EvaluationResults": results, "IsTruncated": False}

    # --- the container ----------------------------------------------------------------------

    def _download(self, uri: str, dest: Path) -> None:
        """An S3Prefix input: every object under the prefix, at its path relative to it."""
        bucket, prefix = split_s3_uri(uri)
        listed = self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        assert listed, f"nothing under {uri}: SageMaker would fail the job"
        for obj in listed:
            rel = obj["Key"][len(prefix) :].lstrip("/") or obj["Key"].rsplit("/", 1)[-1]
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(self.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())

    def _upload(self, path: Path, uri: str, kms_key_id: str | None) -> None:
        """As SageMaker uploads a job's outputs: under the request's KmsKeyId when it names one."""
        bucket, key = split_s3_uri(uri)
        sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id} if kms_key_id else {}
        self.s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), **sse)

    def _run(self, name: str, root: Path, command: list[str], environment: dict[str, str], log_group: str) -> Container:
        here = lambda value: value.replace("/opt/ml", str(root))  # noqa: E731
        env = {
            **os.environ,
            **{k: here(v) for k, v in environment.items()},
            **self.role_env,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (env.get("PYTHONPATH"), str(SCRIPTS))))
        cwd = root.parent  # not the repo: iot_lake must come from the code zip
        where = subprocess.run(
            [sys.executable, "-c", WHERE_IS_IOT_LAKE], env=env, cwd=cwd, capture_output=True, text=True
        ).stdout
        done = subprocess.run(
            [here(part) for part in command], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
        )
        self._put_logs(log_group, f"{name}/algo-1-{int(time.time())}", done.stdout + done.stderr)
        container = Container(done.returncode, done.stdout, done.stderr, where, root)
        self.containers[name] = container
        return container

    def _put_logs(self, group: str, stream: str, text: str) -> None:
        try:  # what the role's JobLogs statement allows: create, not list
            self.logs.create_log_group(logGroupName=group)
        except self.logs.exceptions.ResourceAlreadyExistsException:
            pass
        self.logs.create_log_stream(logGroupName=group, logStreamName=stream)
        now = int(time.time() * 1000)
        events = [{"timestamp": now, "message": line} for line in text.splitlines() if line] or [
            {"timestamp": now, "message": "-"}
        ]
        self.logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)

    # --- training ---------------------------------------------------------------------------

    def _train(self, parsed, **_):
        request = self.last("CreateTrainingJob")
        name = request["TrainingJobName"]
        root = self.workdir / uuid.uuid4().hex / "opt" / "ml"
        channels = {}
        for channel in request["InputDataConfig"]:
            self._download(
                channel["DataSource"]["S3DataSource"]["S3Uri"], root / "input" / "data" / channel["ChannelName"]
            )
            channels[channel["ChannelName"]] = {
                "TrainingInputMode": "File",
                "S3DistributionType": "FullyReplicated",
                "RecordWrapperType": "None",
            }
        config = root / "input" / "config"
        config.mkdir(parents=True)
        (config / "hyperparameters.json").write_text(json.dumps(request.get("HyperParameters", {})))
        (config / "inputdataconfig.json").write_text(json.dumps(channels))
        (config / "resourceconfig.json").write_text(
            json.dumps(
                {
                    "current_host": "algo-1",
                    "current_instance_type": request["ResourceConfig"]["InstanceType"],
                    "current_group_name": "homogeneousCluster",
                    "hosts": ["algo-1"],
                    "network_interface_name": "eth0",
                }
            )
        )
        for directory in ("model", "output/data"):
            (root / directory).mkdir(parents=True)
        # The SDK's drivers name /opt/ml in their code.
        for path in (root / "input" / "data" / "sm_drivers").rglob("*"):
            if path.is_file() and path.suffix in (".py", ".sh", ".json"):
                path.write_text(path.read_text().replace("/opt/ml", str(root)))
        spec = request["AlgorithmSpecification"]
        env = {
            **request.get("Environment", {}),
            "TRAINING_JOB_NAME": name,
            "TRAINING_JOB_ARN": parsed["TrainingJobArn"],
        }
        container = self._run(
            name,
            root,
            [*spec["ContainerEntrypoint"], *spec.get("ContainerArguments", [])],
            env,
            "/aws/sagemaker/TrainingJobs",
        )
        if container.returncode == 0:
            output = f"{request['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{name}/output"
            for archive, directory in (("model.tar.gz", root / "model"), ("output.tar.gz", root / "output" / "data")):
                with tarfile.open(root / archive, "w:gz") as tar:
                    for path in sorted(directory.iterdir()):
                        tar.add(path, arcname=path.name)
                self._upload(root / archive, f"{output}/{archive}", request["OutputDataConfig"].get("KmsKeyId"))

    def _describe_training(self, parsed, **_):
        container = self.containers[parsed["TrainingJobName"]]
        if container.returncode == 0:
            parsed.update(TrainingJobStatus="Completed", SecondaryStatus="Completed")
            return
        failure = container.root / "output" / "failure"
        reason = failure.read_text().strip() if failure.exists() else f"exit code {container.returncode}"
        parsed.update(TrainingJobStatus="Failed", SecondaryStatus="Failed", FailureReason=f"AlgorithmError: {reason}")

    # --- processing -------------------------------------------------------------------------

    def _process(self, parsed, **_):
        request = self.last("CreateProcessingJob")
        name = request["ProcessingJobName"]
        root = self.workdir / uuid.uuid4().hex / "opt" / "ml"
        here = lambda path: Path(path.replace("/opt/ml", str(root)))  # noqa: E731
        for item in request.get("ProcessingInputs", []):
            self._download(item["S3Input"]["S3Uri"], here(item["S3Input"]["LocalPath"]))
        outputs = request.get("ProcessingOutputConfig", {}).get("Outputs", [])
        for item in outputs:
            here(item["S3Output"]["LocalPath"]).mkdir(parents=True)
        app = request["AppSpecification"]
        container = self._run(
            name,
            root,
            [*app["ContainerEntrypoint"], *app.get("ContainerArguments", [])],
            request.get("Environment", {}),
            "/aws/sagemaker/ProcessingJobs",
        )
        if container.returncode == 0:
            for item in outputs:
                local = here(item["S3Output"]["LocalPath"])
                for path in sorted(p for p in local.rglob("*") if p.is_file()):
                    uri = f"{item['S3Output']['S3Uri'].rstrip('/')}/{path.relative_to(local).as_posix()}"
                    self._upload(path, uri, request["ProcessingOutputConfig"].get("KmsKeyId"))

    def _describe_processing(self, parsed, **_):
        container = self.containers[parsed["ProcessingJobName"]]
        if container.returncode == 0:
            parsed["ProcessingJobStatus"] = "Completed"
        else:
            parsed.update(
                ProcessingJobStatus="Failed",
                FailureReason="AlgorithmError: See job logs for more information",
                ExitMessage=container.last_exception,
            )
