"""Test twins of EMR Serverless, Glue and EMR steps: they run the job as the service would, here.

moto accepts and records the requests (real validation, real ids) but never runs anything, and its
job runs never fail. A twin hooks the boto3 session the runner's clients come from: when a job is
started it downloads the published entry point and code zip from (moto) S3 and runs them as a
subprocess with the arguments and environment the service would give (driver env confs, Glue's
own arguments mixed in, the zip on the Python path); the subprocess reaches S3, and so Dagster's
Pipes reader, through the moto server. Polls then answer with the run's real outcome, the
service's failure text, and the driver's logs written where the service writes them.

The one liberty: the "cluster" is Sail (IOT_LAKE_SPARK=sail) because there is no JVM Spark here,
and the Python is this venv rather than the packed environment.
"""

from __future__ import annotations

import gzip
import os
import shlex
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.awsrequest import AWSResponse

from lib.code_publishing import split_s3_uri
from tests.iam_audit import ROLE_KEYS

WHERE_IS_IOT_LAKE = "import iot_lake, sys; sys.stdout.write(iot_lake.__file__)"


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    iot_lake_file: str  # where the subprocess imported iot_lake from

    @property
    def last_exception(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return next((line for line in reversed(lines) if not line.startswith((" ", "\t"))), "no output")


def parse_confs(submit_args: list[str]) -> dict[str, str]:
    confs = {}
    for flag, value in zip(submit_args, submit_args[1:]):
        if flag == "--conf":
            key, _, val = value.partition("=")
            confs[key] = val
    return confs


class ServiceTwin:
    service: str
    role: str | None = None  # the deploy/iam/ role the service and the job act as (tests/iam_audit.py)

    def __init__(self, session: boto3.Session, workdir: Path):
        self.session = session
        # What the service itself does in S3 (fetch the script, write the logs) it does as the job's role.
        self.role_env = (
            {"AWS_ACCESS_KEY_ID": ROLE_KEYS[self.role], "AWS_SECRET_ACCESS_KEY": "testing"} if self.role else {}
        )
        self.s3 = session.client(
            "s3",
            aws_access_key_id=self.role_env.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=self.role_env.get("AWS_SECRET_ACCESS_KEY"),
        )
        self.workdir = workdir
        self.requests: list[dict] = []
        self.outcomes: dict[str, Outcome] = {}
        session.events.register(f"before-parameter-build.{self.service}", self._record)

    def _record(self, params, model, **_):
        self.requests.append({"operation": model.name, **params})

    def last(self, operation: str) -> dict:
        return [r for r in self.requests if r["operation"] == operation][-1]

    def _download(self, uri: str) -> Path:
        bucket, key = split_s3_uri(uri)
        path = self.workdir / uuid.uuid4().hex / key.rsplit("/", 1)[-1]
        path.parent.mkdir(parents=True)
        path.write_bytes(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        return path

    def execute(self, entrypoint_uri: str, code_uri: str, argv: list[str], env: dict[str, str]) -> Outcome:
        script, code = self._download(entrypoint_uri), self._download(code_uri)
        full_env = {**os.environ, **env, **self.role_env, "PYTHONPATH": str(code), "IOT_LAKE_SPARK": "sail"}
        cwd = script.parent  # not the repo: iot_lake must come from the zip
        where = subprocess.run(
            [sys.executable, "-c", WHERE_IS_IOT_LAKE], env=full_env, cwd=cwd, capture_output=True, text=True, check=True
        ).stdout
        done = subprocess.run(
            [sys.executable, str(script), *argv], env=full_env, cwd=cwd, capture_output=True, text=True, timeout=600
        )
        return Outcome(done.returncode, done.stdout, done.stderr, where)

    def put_log(self, uri: str, text: str) -> None:
        bucket, key = split_s3_uri(uri)
        self.s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(text.encode()))


def _answer(parsed: dict):
    """A before-call hook's short-circuit: botocore uses this instead of calling the service."""
    return AWSResponse("https://twin", 200, {}, None), parsed


class EMRServerlessTwin(ServiceTwin):
    service = "emr-serverless"
    role = "emr-serverless-job"

    def __init__(self, session, workdir):
        super().__init__(session, workdir)
        session.events.register("after-call.emr-serverless.StartJobRun", self._run)
        session.events.register("after-call.emr-serverless.GetJobRun", self._poll)
        # moto has no dashboards; the Pipes client asks for one when a run ends other than SUCCESS.
        session.events.register(
            "before-call.emr-serverless.GetDashboardForJobRun", lambda **_: _answer({"url": "https://twin/dashboard"})
        )

    def _run(self, parsed, **_):
        request = self.last("StartJobRun")
        driver = request["jobDriver"]["sparkSubmit"]
        confs = parse_confs(shlex.split(driver["sparkSubmitParameters"]))
        env_prefix = "spark.emr-serverless.driverEnv."
        env = {k.removeprefix(env_prefix): v for k, v in confs.items() if k.startswith(env_prefix)}
        outcome = self.execute(driver["entryPoint"], confs["spark.submit.pyFiles"], driver["entryPointArguments"], env)
        self.outcomes[parsed["jobRunId"]] = outcome
        log_uri = request["configurationOverrides"]["monitoringConfiguration"]["s3MonitoringConfiguration"]["logUri"]
        driver_logs = (
            f"{log_uri.rstrip('/')}/applications/{parsed['applicationId']}/jobs/{parsed['jobRunId']}/SPARK_DRIVER"
        )
        self.put_log(f"{driver_logs}/stdout.gz", outcome.stdout)
        self.put_log(f"{driver_logs}/stderr.gz", outcome.stderr)

    def _poll(self, parsed, **_):
        run = parsed["jobRun"]
        outcome = self.outcomes[run["jobRunId"]]
        if outcome.returncode == 0:
            run["state"] = "SUCCESS"
        else:
            run["state"] = "FAILED"
            run["stateDetails"] = (
                "Job failed, please check complete logs in configured logging destination. "
                f"ExitCode: {outcome.returncode}. Last few exceptions: {outcome.last_exception}"
            )


class GlueTwin(ServiceTwin):
    service = "glue"
    role = "glue-job"
    LOG_GROUP = "/aws-glue/jobs"

    def __init__(self, session, workdir):
        super().__init__(session, workdir)
        # Glue writes a job's logs as the job's role (its policy's logs statement).
        self.logs = session.client(
            "logs",
            aws_access_key_id=self.role_env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.role_env["AWS_SECRET_ACCESS_KEY"],
        )
        session.events.register("after-call.glue.StartJobRun", self._run)
        session.events.register("after-call.glue.GetJobRun", self._poll)

    def _run(self, parsed, **_):
        request = self.last("StartJobRun")
        run_id = parsed["JobRunId"]
        arguments = request["Arguments"]
        # Glue passes every job argument, and its own, to the script as --key value.
        glue_own = {
            "--JOB_ID": "j_twin",
            "--JOB_RUN_ID": run_id,
            "--JOB_NAME": request["JobName"],
            "--TempDir": "s3://aws-glue-assets-twin/temporary/",
            "--job-bookmark-option": "job-bookmark-disable",
        }
        argv = [part for item in {**glue_own, **arguments}.items() for part in item]
        script = self.session.client("glue").get_job(JobName=request["JobName"])["Job"]["Command"]["ScriptLocation"]
        outcome = self.execute(script, arguments["--extra-py-files"], argv, env={})
        self.outcomes[run_id] = outcome
        for stream, text in (("output", outcome.stdout), ("error", outcome.stderr)):
            group = f"{self.LOG_GROUP}/{stream}"
            try:  # create, not list: what the role may do
                self.logs.create_log_group(logGroupName=group)
            except self.logs.exceptions.ResourceAlreadyExistsException:
                pass
            self.logs.create_log_stream(logGroupName=group, logStreamName=run_id)
            now = int(time.time() * 1000)
            lines = [line for line in text.splitlines() if line] or ["-"]
            events = [{"timestamp": now, "message": line} for line in lines]
            self.logs.put_log_events(logGroupName=group, logStreamName=run_id, logEvents=events)

    def _poll(self, parsed, **_):
        run = parsed["JobRun"]
        outcome = self.outcomes[run["Id"]]
        run["LogGroupName"] = self.LOG_GROUP
        run["JobRunState"] = "SUCCEEDED" if outcome.returncode == 0 else "FAILED"
        if outcome.returncode:
            run["ErrorMessage"] = outcome.last_exception


class EMRStepsTwin(ServiceTwin):
    service = "emr"
    role = "emr-ec2-instance"  # steps run on the cluster's nodes, as its instance profile

    def __init__(self, session, workdir):
        super().__init__(session, workdir)
        self.stderr_logs: dict[str, str] = {}
        session.events.register("after-call.emr.AddJobFlowSteps", self._run)
        session.events.register("after-call.emr.DescribeStep", self._poll)

    def _run(self, parsed, **_):
        request = self.last("AddJobFlowSteps")
        [step], [step_id] = request["Steps"], parsed["StepIds"]
        args = step["HadoopJarStep"]["Args"]
        entry = next(i for i, a in enumerate(args) if a.startswith("s3://") and a.endswith(".py"))
        confs = parse_confs(args[:entry])
        env_prefix = "spark.yarn.appMasterEnv."
        env = {k.removeprefix(env_prefix): v for k, v in confs.items() if k.startswith(env_prefix)}
        outcome = self.execute(args[entry], confs["spark.submit.pyFiles"], args[entry + 1 :], env)
        self.outcomes[step_id] = outcome
        cluster = self.session.client("emr").describe_cluster(ClusterId=request["JobFlowId"])["Cluster"]
        self.stderr_logs[step_id] = f"{cluster['LogUri'].rstrip('/')}/{cluster['Id']}/steps/{step_id}/stderr.gz"
        self.put_log(self.stderr_logs[step_id], outcome.stderr)

    def _poll(self, parsed, **_):
        step = parsed["Step"]
        outcome = self.outcomes[step["Id"]]
        if outcome.returncode == 0:
            step["Status"]["State"] = "COMPLETED"
        else:
            step["Status"]["State"] = "FAILED"
            step["Status"]["FailureDetails"] = {
                "Reason": "Unknown Error.",
                "Message": outcome.last_exception,
                "LogFile": self.stderr_logs[step["Id"]],
            }
