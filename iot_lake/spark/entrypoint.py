"""The script a cluster runs: one iot_lake job module with its arguments, talking to Dagster over S3.

EMR Serverless and EMR steps call it as ``entrypoint.py MODULE ARG...``. Glue can only pass
``--key value`` job arguments, mixed with its own (``--JOB_ID``, ``--TempDir``, ...), so there it is
``--iot-lake-module MODULE --iot-lake-args JSON_LIST``. Either way the module then runs exactly as
``python -m MODULE ARG...`` runs it locally.

The iot_lake package comes from the run's code zip on the Python path (``spark.submit.pyFiles`` /
``--extra-py-files``), before this script starts; the Pipes context is opened over S3 by
iot_lake/pipes_entrypoint.py from that zip, as in SageMaker's containers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from iot_lake.pipes_entrypoint import run_module

MODULE_FLAG = "--iot-lake-module"
ARGS_FLAG = "--iot-lake-args"
# Glue cannot set the driver's environment either: variables come as a JSON object (the KMS key).
ENV_FLAG = "--iot-lake-env"
# The cluster runs the data plane's job modules and nothing else: whoever can start a job run (or
# edit its arguments) must not be able to make it run another module of the image with the job
# role's access to the lake.
JOB_MODULE = re.compile(r"iot_lake(\.[A-Za-z_][A-Za-z0-9_]*)+")


def job_module(module: str) -> str:
    """The module, if it is one of iot_lake's; SystemExit otherwise."""
    if not JOB_MODULE.fullmatch(module):
        raise SystemExit(f"refused to run {module!r}: this entry point runs only iot_lake.* job modules")
    return module


def split_argv(argv: list[str]) -> tuple[str, list[str], dict[str, str]]:
    """(module, its arguments, environment to set) from this script's command line, in either form."""
    if MODULE_FLAG in argv:
        parser = argparse.ArgumentParser(allow_abbrev=False)
        parser.add_argument(MODULE_FLAG, dest="module", required=True)
        parser.add_argument(ARGS_FLAG, dest="args", default="[]")
        parser.add_argument(ENV_FLAG, dest="env", default="{}")
        known, _service_arguments = parser.parse_known_args(argv)
        return known.module, list(json.loads(known.args)), dict(json.loads(known.env))
    if not argv:
        raise SystemExit(f"usage: entrypoint.py MODULE [ARG...] | {MODULE_FLAG} MODULE {ARGS_FLAG} JSON_LIST")
    return argv[0], argv[1:], {}


def main(argv: list[str]) -> None:
    module, args, env = split_argv(argv)
    job_module(module)
    for name, value in env.items():
        os.environ.setdefault(name, str(value))
    # Glue has no way to set the driver's environment; this script only ever runs on a cluster.
    os.environ.setdefault("IOT_LAKE_SPARK", "classic")
    run_module(module, args)


if __name__ == "__main__":
    main(sys.argv[1:])
