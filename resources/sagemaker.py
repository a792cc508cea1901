"""SageMakerRunner: runs the data plane's SageMaker entry scripts through Dagster Pipes.

Two kinds of job, each the same module and arguments in both worlds:

- training (``train``): SageMaker's script-mode contract. Channels are copied to
  ``/opt/ml/input/data/<channel>`` and named by ``SM_CHANNEL_<CHANNEL>``, hyperparameters are in
  ``SM_HPS`` and ``/opt/ml/input/config/hyperparameters.json`` (strings, as SageMaker writes them),
  the model goes to ``SM_MODEL_DIR`` and metrics and reports to ``SM_OUTPUT_DATA_DIR``. Afterwards
  the model directory is ``<output_key>/<job_name>/output/model.tar.gz`` and the output data
  ``.../output/output.tar.gz`` in the lake, where SageMaker puts them.
- processing (``process``): a Processing job. Inputs are copied to
  ``/opt/ml/processing/input/<name>``, outputs collected from ``/opt/ml/processing/output/<name>``
  and uploaded to their lake prefixes. Arguments may name those directories as ``{input:NAME}``
  and ``{output:NAME}``, so the caller never hard-codes a container path.

``local`` (the embedded default) runs the module as a subprocess with that layout under a
temporary directory instead of ``/opt/ml`` (the SageMaker local twin); ``sagemaker`` runs it as a
SageMaker training or processing job (resources/sagemaker_aws.py). What both share (the job's
result, its name, hyperparameters as strings, the argument placeholders) is in lib/sagemaker_jobs.py.
"""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, ConfigurableResource, PipesSubprocessClient

from iot_lake.lake import Lake
from lib.retries import fail_fast, local_process_failures
from lib.sagemaker_jobs import JobRun, hyperparameter_strings, resolve_arguments

MODES = ("local", "sagemaker")


def _download(lake: Lake, prefix: str, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    keys = [o.key for o in lake.list(prefix) if o.key != prefix] or ([prefix] if lake.exists(prefix) else [])
    if not keys:
        raise FileNotFoundError(f"nothing in the lake under {prefix!r} to hand to the job")
    for key in keys:
        rel = key[len(prefix) :].lstrip("/") or Path(key).name
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with lake.open(key) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)


def _upload_dir(lake: Lake, src: Path, prefix: str) -> None:
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        lake.write_bytes(f"{prefix}/{path.relative_to(src).as_posix()}", path.read_bytes())


def _tar(src: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        for path in sorted(src.iterdir()):
            tar.add(path, arcname=path.name)
    return dest


class SageMakerRunner(ConfigurableResource):
    mode: str = "local"
    lake_root: str | None = None
    region: str | None = None
    # Also encrypts the jobs' ML storage volumes and their outputs (prod requires it: iot_lake.settings).
    kms_key_id: str | None = None
    role_arn: str | None = None  # the execution role of training and processing jobs
    image_uri: str | None = None  # a Python image with the data plane's ML dependencies
    training_instance_type: str = "ml.m5.xlarge"
    processing_instance_type: str = "ml.m5.large"
    max_runtime_seconds: int = 3600
    # Optional VPC placement (both or neither): the jobs then reach S3 through the VPC's endpoints.
    subnets: list[str] = []
    security_group_ids: list[str] = []
    poll_interval: float = 15.0

    def train(
        self,
        context: AssetExecutionContext,
        *,
        lake: Lake,
        job_name: str,
        module: str,
        channels: Mapping[str, str],
        hyperparameters: Mapping[str, Any],
        output_key: str,
    ) -> JobRun:
        """Run a training module; its model and output data end up under ``output_key/job_name/output/``."""
        if self.mode == "local":
            return self._train_local(context, lake, job_name, module, channels, hyperparameters, output_key)
        if self.mode == "sagemaker":
            from resources.sagemaker_aws import train_on_sagemaker

            with fail_fast(f"SageMaker training job {job_name}"):
                return train_on_sagemaker(
                    self,
                    context,
                    lake=lake,
                    job_name=job_name,
                    module=module,
                    channels=channels,
                    hyperparameters=hyperparameters,
                    output_key=output_key,
                )
        raise ValueError(f"SageMakerRunner mode {self.mode!r} is not one of {', '.join(MODES)}")

    def process(
        self,
        context: AssetExecutionContext,
        *,
        lake: Lake,
        job_name: str,
        module: str,
        inputs: Mapping[str, str],
        outputs: Mapping[str, str],
        arguments: Sequence[str] = (),
    ) -> JobRun:
        """Run a processing module over lake inputs; each output directory is uploaded to its lake prefix."""
        if self.mode == "local":
            return self._process_local(context, lake, job_name, module, inputs, outputs, arguments)
        if self.mode == "sagemaker":
            from resources.sagemaker_aws import process_on_sagemaker

            with fail_fast(f"SageMaker processing job {job_name}"):
                return process_on_sagemaker(
                    self,
                    context,
                    lake=lake,
                    job_name=job_name,
                    module=module,
                    inputs=inputs,
                    outputs=outputs,
                    arguments=arguments,
                )
        raise ValueError(f"SageMakerRunner mode {self.mode!r} is not one of {', '.join(MODES)}")

    # --- the local twin -------------------------------------------------------------------------

    def _train_local(self, context, lake, job_name, module, channels, hyperparameters, output_key) -> JobRun:
        with tempfile.TemporaryDirectory(prefix=f"{job_name}-") as tmp:
            ml = Path(tmp) / "opt" / "ml"
            hps = hyperparameter_strings(hyperparameters)
            config = ml / "input" / "config"
            config.mkdir(parents=True)
            (config / "hyperparameters.json").write_text(json.dumps(hps))
            env = {
                "SM_MODEL_DIR": str(ml / "model"),
                "SM_OUTPUT_DATA_DIR": str(ml / "output" / "data"),
                "SM_OUTPUT_DIR": str(ml / "output"),
                "SM_INPUT_DIR": str(ml / "input"),
                "SM_INPUT_CONFIG_DIR": str(config),
                "SM_CHANNELS": json.dumps(sorted(channels)),
                "SM_HPS": json.dumps(hps),
                "SM_CURRENT_HOST": "algo-1",
                "SM_HOSTS": json.dumps(["algo-1"]),
                "TRAINING_JOB_NAME": job_name,
            }
            for name, prefix in channels.items():
                _download(lake, prefix, ml / "input" / "data" / name)
                env[f"SM_CHANNEL_{name.upper()}"] = str(ml / "input" / "data" / name)
            for d in ("model", "output/data"):
                (ml / d).mkdir(parents=True, exist_ok=True)
            results = self._run_local(context, module, [], env)
            base = f"{output_key}/{job_name}/output"
            outputs = {"model": f"{base}/model.tar.gz", "output": f"{base}/output.tar.gz"}
            lake.write_bytes(outputs["model"], _tar(ml / "model", Path(tmp) / "model.tar.gz").read_bytes())
            lake.write_bytes(outputs["output"], _tar(ml / "output" / "data", Path(tmp) / "output.tar.gz").read_bytes())
            return JobRun(job_name, outputs, logs="the step's stdout/stderr (local subprocess)", pipes_results=results)

    def _process_local(self, context, lake, job_name, module, inputs, outputs, arguments) -> JobRun:
        with tempfile.TemporaryDirectory(prefix=f"{job_name}-") as tmp:
            ml = Path(tmp) / "opt" / "ml"
            for name, prefix in inputs.items():
                _download(lake, prefix, ml / "processing" / "input" / name)
            for name in outputs:
                (ml / "processing" / "output" / name).mkdir(parents=True)
            args = resolve_arguments(arguments, inputs, outputs, str(ml))
            results = self._run_local(context, module, args, {"PROCESSING_JOB_NAME": job_name})
            for name, prefix in outputs.items():
                _upload_dir(lake, ml / "processing" / "output" / name, prefix)
            return JobRun(
                job_name, dict(outputs), logs="the step's stdout/stderr (local subprocess)", pipes_results=results
            )

    def _run_local(self, context, module: str, args: list[str], env: dict[str, str]) -> list:
        with local_process_failures(f"SageMaker script {module}"):
            invocation = PipesSubprocessClient().run(
                command=[sys.executable, "-m", module, *args], context=context, env=env
            )
        return list(invocation.get_results())
