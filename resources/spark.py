"""SparkRunner: runs a data-plane Spark job script through Dagster Pipes.

The script and its arguments are the same everywhere; only where it runs differs:

- ``local`` (the embedded default): a subprocess ``python -m MODULE ARG...`` that starts Sail.
- ``emr-serverless``, ``glue``, ``emr`` (steps on a running EMR cluster): the same module and
  arguments through iot_lake/spark/entrypoint.py, with the code published under ``<lake>/_code/``
  and the Pipes context and messages under ``<lake>/_pipes/`` (see resources/spark_aws.py).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

from dagster import AssetExecutionContext, ConfigurableResource, PipesSubprocessClient

from lib.retries import fail_fast, local_process_failures

# Dagster's own Pipes machinery calls this preview API on every run; it is not ours to act on.
warnings.filterwarnings("ignore", message="Function `PipesMessageReader.expected_writer_count` is currently in preview")

MODES = ("local", "emr-serverless", "glue", "emr")
LOCAL_ENV = {"IOT_LAKE_SPARK": "sail"}


def local_command(module: str, args: Sequence[str]) -> list[str]:
    """What ``local`` mode runs: the module in this Python, starting its own Sail."""
    return [sys.executable, "-m", module, *args]


class SparkRunner(ConfigurableResource):
    mode: str = "local"
    # The lake root, s3://bucket[/prefix]: code, Pipes messages and EMR Serverless logs go under it.
    lake_root: str | None = None
    region: str | None = None
    kms_key_id: str | None = None
    emr_application_id: str | None = None
    emr_job_role_arn: str | None = None
    emr_cluster_id: str | None = None
    glue_job_name: str | None = None
    # The packed venv (deploy/spark-env/) the EMRs run Python from.
    env_archive: str | None = None
    poll_interval: float = 10.0

    def run(self, context: AssetExecutionContext, module: str, args: Sequence[str]):
        if self.mode == "local":
            with local_process_failures(f"Spark job {module}"):
                return PipesSubprocessClient().run(command=local_command(module, args), context=context, env=LOCAL_ENV)
        launch = {"emr-serverless": self._emr_serverless, "glue": self._glue, "emr": self._emr_steps}.get(self.mode)
        if launch is None:
            raise ValueError(f"SparkRunner mode {self.mode!r} is not one of {', '.join(MODES)}")
        with fail_fast(f"Spark job {module} on {self.mode}"):
            return launch(context, module, list(args))

    # --- AWS ------------------------------------------------------------------------------------
    # Imported per run: dagster_aws would add about 1.5 s to every load of the definitions.

    def _require(self, *fields: str) -> None:
        missing = [f for f in ("lake_root", *fields) if not getattr(self, f)]
        if missing:
            raise ValueError(f"SparkRunner mode {self.mode!r} needs {', '.join(missing)} (see iot_lake.settings)")

    def _client(self, service: str):
        from iot_lake.aws import client

        return client(service, self.region)

    def _publish(self, s3, glue: bool = False):
        from lib.code_publishing import publish_code

        return publish_code(s3, self.lake_root, glue=glue, kms_key_id=self.kms_key_id)

    def _emr_serverless(self, context, module, args):
        from resources.spark_aws import EMRServerlessPipesClient, emr_serverless_params, lake_prefix, pipes_over_s3

        self._require("emr_application_id", "emr_job_role_arn", "env_archive")
        s3 = self._client("s3")
        code = self._publish(s3)
        injector, reader = pipes_over_s3(s3, self.lake_root, self.kms_key_id)
        bucket, logs = lake_prefix(self.lake_root, "_logs/emr-serverless")
        params = emr_serverless_params(
            application_id=self.emr_application_id,
            role_arn=self.emr_job_role_arn,
            env_archive=self.env_archive,
            code=code,
            module=module,
            args=args,
            log_uri=f"s3://{bucket}/{logs}/",
            kms_key_id=self.kms_key_id,
        )
        client = EMRServerlessPipesClient(
            client=self._client("emr-serverless"),
            context_injector=injector,
            message_reader=reader,
            poll_interval=self.poll_interval,
        )
        return client.run(context=context, start_job_run_params=params)

    def _glue(self, context, module, args):
        from resources.spark_aws import GluePipesClient, glue_params, pipes_over_s3

        self._require("glue_job_name")
        s3, glue = self._client("s3"), self._client("glue")
        code = self._publish(s3, glue=True)
        script = glue.get_job(JobName=self.glue_job_name)["Job"]["Command"].get("ScriptLocation")
        if script != code.entrypoint_uri:
            raise ValueError(
                f"Glue job {self.glue_job_name} runs {script}, not the iot-lake entry point: "
                f"set its script location (Command.ScriptLocation) to {code.entrypoint_uri}"
            )
        injector, reader = pipes_over_s3(s3, self.lake_root, self.kms_key_id)
        client = GluePipesClient(client=glue, context_injector=injector, message_reader=reader)
        return client.run(
            context=context,
            start_job_run_params=glue_params(
                job_name=self.glue_job_name, code=code, module=module, args=args, kms_key_id=self.kms_key_id
            ),
        )

    def _emr_steps(self, context, module, args):
        from resources.spark_aws import PipesEMRStepClient, emr_step, pipes_over_s3

        self._require("emr_cluster_id", "env_archive")
        s3 = self._client("s3")
        code = self._publish(s3)
        injector, reader = pipes_over_s3(s3, self.lake_root, self.kms_key_id)
        client = PipesEMRStepClient(
            client=self._client("emr"),
            context_injector=injector,
            message_reader=reader,
            poll_interval=self.poll_interval,
        )
        return client.run(
            context=context,
            cluster_id=self.emr_cluster_id,
            make_step=lambda pipes_env: emr_step(
                code=code,
                env_archive=self.env_archive,
                module=module,
                args=args,
                pipes_env=pipes_env,
                kms_key_id=self.kms_key_id,
            ),
        )
