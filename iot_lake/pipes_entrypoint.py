"""Runs one iot_lake module under a Dagster Pipes context carried over S3.

``python -m iot_lake.pipes_entrypoint MODULE ARG...`` runs the module exactly as
``python -m MODULE ARG...`` runs it locally, after opening the Pipes context with the S3 context
loader and message writer the control plane pairs with its S3 injector and reader
(resources/spark_aws.py ``pipes_over_s3``). The module's own ``open_dagster_pipes()`` then gets
that context back unchanged. SageMaker training and processing containers run this; the Spark
clusters run iot_lake/spark/entrypoint.py, which adds their argument conventions around it.
"""

from __future__ import annotations

import runpy
import sys


def open_pipes():
    """The Pipes context over S3, or None when no orchestrator launched this run."""
    from dagster_pipes import (
        DAGSTER_PIPES_CONTEXT_CLI_ARGUMENT,
        PipesCliArgsParamsLoader,
        PipesEnvVarParamsLoader,
        PipesS3ContextLoader,
        PipesS3MessageWriter,
        open_dagster_pipes,
    )

    from iot_lake.aws import client

    # Glue hands the bootstrap parameters over as arguments; the EMRs and SageMaker as environment variables.
    params = PipesCliArgsParamsLoader() if DAGSTER_PIPES_CONTEXT_CLI_ARGUMENT in sys.argv else PipesEnvVarParamsLoader()
    if not params.is_dagster_pipes_process():
        return None
    from iot_lake.encryption import encrypt_writes, kms_key_id

    s3 = encrypt_writes(client("s3"), kms_key_id())  # the message chunks are lake objects too
    return open_dagster_pipes(
        params_loader=params, context_loader=PipesS3ContextLoader(s3), message_writer=PipesS3MessageWriter(s3)
    )


def run_module(module: str, args: list[str]) -> None:
    pipes = open_pipes()
    sys.argv = [module, *args]
    if pipes is None:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    # The module closes the context itself; this only covers a failure before it opened it
    # (an import error, bad arguments), so Dagster still hears why.
    with pipes:
        runpy.run_module(module, run_name="__main__", alter_sys=True)


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m iot_lake.pipes_entrypoint MODULE [ARG...]")
    run_module(argv[0], argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
