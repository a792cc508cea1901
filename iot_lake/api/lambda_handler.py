"""The serving API on AWS Lambda behind an API Gateway HTTP API: the same FastAPI app through Mangum.

Configured from the function's environment (deploy/api/function.json), not from ``load_settings``,
which asks for everything the pipeline needs (EMR, SageMaker, Redshift) and the API never uses:

- ``IOT_LAKE_CASES_URL``: the case store (PostgreSQL), the one the detector writes and the CLI works.
- ``IOT_LAKE_BUCKET`` (and ``IOT_LAKE_PREFIX``), ``AWS_REGION``: the lake (registry, series, /health).
- ``IOT_LAKE_STATE_TABLE``: the DynamoDB hot state (``hot_state.DynamoHotState``).

The app is built once per execution environment (at the first request), so the case store's
connection pool, the kept-open Delta tables and the DynamoDB client serve the requests that follow.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from iot_lake.api.hot_state import STATE_TABLE_VAR, DynamoHotState

_HANDLER = None
REQUIRED = ("IOT_LAKE_CASES_URL", "IOT_LAKE_BUCKET", "AWS_REGION", STATE_TABLE_VAR)


def create_lambda_app(env: Mapping[str, str] | None = None):
    from iot_lake.api.app import create_app

    env = os.environ if env is None else env
    missing = [name for name in REQUIRED if not env.get(name)]
    if missing:
        raise RuntimeError(f"the API's Lambda function needs these environment variables: {', '.join(missing)}")
    prefix = env.get("IOT_LAKE_PREFIX", "").strip("/")
    lake_root = f"s3://{env['IOT_LAKE_BUCKET'].removeprefix('s3://').strip('/')}" + (f"/{prefix}" if prefix else "")
    region = env["AWS_REGION"]
    state = DynamoHotState(env[STATE_TABLE_VAR], region=region)
    return create_app(env["IOT_LAKE_CASES_URL"], lake_root, delta_options={"AWS_REGION": region}, state=state)


def handler(event: dict, context) -> dict:
    """The Lambda entry point (``iot_lake.api.lambda_handler.handler``)."""
    global _HANDLER
    if _HANDLER is None:
        from mangum import Mangum

        # lifespan off: the app has no startup work, and a cold start should not wait for one.
        _HANDLER = Mangum(create_lambda_app(), lifespan="off")
    return _HANDLER(event, context)
