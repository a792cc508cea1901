"""The script a cluster runs: one iot_lake job module with its arguments, talking to Dagster over S3.

EMR Serverless and EMR steps call it as ``entrypoint.py MODULE ARG...``. Glue can only pass
``--key value`` job arguments, mixed with its own (``--JOB_ID``, ``--TempDir``, ...), so there it is
``--iot-lake-module MODULE --iot-lake-args JSON_LIST``. Either way the module then runs exactly as
``python -m MODULE ARG...`` runs it locally.

The iot_lake package comes from the run's code zip on the Python path (``spark.submit.pyFiles`` /
``--extra-py-files``), so this file imports nothing from it. It opens the Dagster Pipes context
itself, with the S3 context loader and message writer the control plane pairs with its S3 injector
and reader; the module's own ``open_dagster_pipes()`` then gets that context back unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys

MODULE_FLAG = "--iot-lake-module"
ARGS_FLAG = "--iot-lake-args"


def split_argv(argv: list[str]) -> tuple[str, list[str]]:
    """(module, its arguments) from this script's command line, in either of the two forms."""
    if MODULE_FLAG in argv:
        parser = argparse.ArgumentParser(allow_abbrev=False)
        parser.add_argument(MODULE_FLAG, dest="module", required=True)
        parser.add_argument(ARGS_FLAG, dest="args", default="[]")
        known, _service_arguments = parser.parse_known_args(argv)
        return known.module, list(json.loads(known.args))
    if not argv:
        raise SystemExit(f"usage: entrypoint.py MODULE [ARG...] | {MODULE_FLAG} MODULE {ARGS_FLAG} JSON_LIST")
    return argv[0], argv[1:]


def open_pipes():
    """The Pipes context over S3, or None when no orchestrator launched this run."""
    import boto3
    from dagster_pipes import (
        DAGSTER_PIPES_CONTEXT_CLI_ARGUMENT,
        PipesCliArgsParamsLoader,
        PipesEnvVarParamsLoader,
        PipesS3ContextLoader,
        PipesS3MessageWriter,
        open_dagster_pipes,
    )

    # Glue hands the bootstrap parameters over as arguments; the EMRs as environment variables.
    params = PipesCliArgsParamsLoader() if DAGSTER_PIPES_CONTEXT_CLI_ARGUMENT in sys.argv else PipesEnvVarParamsLoader()
    if not params.is_dagster_pipes_process():
        return None
    s3 = boto3.client("s3")
    return open_dagster_pipes(params_loader=params, context_loader=PipesS3ContextLoader(s3),
                              message_writer=PipesS3MessageWriter(s3))


def main(argv: list[str]) -> None:
    module, args = split_argv(argv)
    # Glue has no way to set the driver's environment; this script only ever runs on a cluster.
    os.environ.setdefault("IOT_LAKE_SPARK", "classic")
    pipes = open_pipes()
    sys.argv = [module, *args]
    if pipes is None:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    # The module closes the context itself; this only covers a failure before it opened it
    # (an import error, bad arguments), so Dagster still hears why.
    with pipes:
        runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
