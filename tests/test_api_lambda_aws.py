"""The serving API in production: the Lambda handler (Mangum) behind an API Gateway HTTP API, the
hot state in DynamoDB pushed by the control plane's writer, on the moto server, audited by IAM.

The lake is on S3 (moto), the state table in DynamoDB (moto). The writer runs as the control plane
(the ``aws`` fixture's dagster key, its boto3 calls recorded and checked against dagster.policy at
teardown); the handler runs as the Lambda role (its own key, so the moto server's request log audits
its S3 and DynamoDB requests against deploy/api/api-lambda.policy.json at teardown).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import boto3
import pytest
import s3fs

from iot_lake.api import lambda_handler
from iot_lake.api.hot_state import from_item, push_state, sync_state_table
from iot_lake.api.keys import ApiKeys
from iot_lake.lake import Lake
from lib.code_publishing import split_s3_uri
from tests.api_helpers import make_lake, open_cases
from tests.cases_helpers import T0
from tests.conftest import REGION
from tests.iam_audit import (
    REQUEST_LOG,
    ROLE_KEYS,
    Policy,
    rendered_policies,
    requests_of,
    setup_delta_options,
    setup_storage_options,
)

TABLE = "iot-lake-device-state"  # the name the rendered policies are scoped to


def _state(event_ts: datetime, message_id: str, value: float, device: str = "dev-001") -> dict:
    return {
        "device_id": device,
        "metric": "temperature",
        "site_id": "site-1",
        "event_ts": event_ts,
        "message_id": message_id,
        "value": value,
        "unit": "degC",
        "updated_at": event_ts + timedelta(minutes=3),
    }


@pytest.fixture
def state_table(aws):
    client = aws.client("dynamodb")
    client.create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("device_id", "metric")],
        KeySchema=[{"AttributeName": "device_id", "KeyType": "HASH"}, {"AttributeName": "metric", "KeyType": "RANGE"}],
    )
    yield client
    client.delete_table(TableName=TABLE)


def _upload_lake(aws, tmp_path, lake_root: str) -> None:
    """The API tests' lake (registry, curated telemetry, hot state, aggregates, scores, forecasts), on S3."""
    local = tmp_path / "lake"
    make_lake(tmp_path)
    bucket, prefix = split_s3_uri(lake_root)
    s3 = aws.client("s3")
    for path in local.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix.strip('/')}/{path.relative_to(local)}")


def test_the_writer_keeps_the_newer_reading(state_table):
    newer, older = _state(T0 + timedelta(hours=1), "m-9", 21.5), _state(T0, "m-1", 19.0)
    assert push_state([newer], TABLE) == {"written": 1, "kept": 0}
    # A late, older reading and a re-run of the same one never move the state back.
    assert push_state([older, newer], TABLE) == {"written": 0, "kept": 2}
    # At the same event time the greater message id wins, as in the Delta MERGE.
    same_time = _state(T0 + timedelta(hours=1), "m-a", 22.0)
    assert push_state([same_time], TABLE) == {"written": 1, "kept": 0}
    row = _stored(state_table)
    assert (row["event_ts"], row["message_id"], row["value"]) == (T0 + timedelta(hours=1), "m-a", 22.0)
    assert push_state([_state(T0 + timedelta(hours=2), "m-0", 23.0)], TABLE)["written"] == 1
    row = _stored(state_table)
    assert row["value"] == 23.0 and row["unit"] == "degC" and row["site_id"] == "site-1"


def _stored(client) -> dict:
    """The item as the tests' own client reads it (not recorded: only production code's calls are)."""
    key = {"device_id": {"S": "dev-001"}, "metric": {"S": "temperature"}}
    return from_item(client.get_item(TableName=TABLE, Key=key)["Item"])


def _event(method: str, path: str, token: str | None = None, body: dict | None = None, query: str = "") -> dict:
    """An API Gateway HTTP API (payload format 2.0) event as Lambda receives it."""
    headers = {"host": "abc123.execute-api.us-east-1.amazonaws.com", "user-agent": "curl/8.5", "accept": "*/*"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    if body is not None:
        headers["content-type"] = "application/json"
    now = datetime.now(UTC)
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "curl/8.5",
            },
            "requestId": f"r-{time.monotonic_ns()}",
            "routeKey": "$default",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        **({"body": json.dumps(body), "isBase64Encoded": False} if body is not None else {"isBase64Encoded": False}),
    }


def _call(event: dict) -> tuple[int, object]:
    response = lambda_handler.handler(event, None)
    return response["statusCode"], json.loads(response["body"]) if response.get("body") else None


def test_the_lambda_serves_state_from_dynamodb_and_cases_from_the_store(
    aws, lake_root, state_table, tmp_path, monkeypatch
):
    _upload_lake(aws, tmp_path / "src", lake_root)
    cases_url = f"sqlite:///{tmp_path / 'cases.sqlite'}"
    keys = open_cases(cases_url)
    token = ApiKeys(cases_url).create("night-shift", "operator")

    # The control plane pushes what the state step changed: the lake's one state row (updated at T0+1h03).
    lake = Lake(lake_root, setup_storage_options())
    pushed = sync_state_table(lake, setup_delta_options(), TABLE, since=T0, region=REGION)
    assert pushed == {"written": 1, "kept": 0}
    assert sync_state_table(lake, setup_delta_options(), TABLE, since=T0 + timedelta(hours=2)) == {
        "written": 0,
        "kept": 0,
    }  # nothing changed since: nothing pushed

    # The Lambda: its own role's key for every client (boto3, s3fs, delta-rs), its function's environment.
    lambda_key = ROLE_KEYS["api-lambda"]
    bucket, prefix = split_s3_uri(lake_root)
    for var, value in {
        "AWS_ACCESS_KEY_ID": lambda_key,
        "IOT_LAKE_CASES_URL": cases_url,
        "IOT_LAKE_BUCKET": bucket,
        "IOT_LAKE_PREFIX": prefix,
        "IOT_LAKE_STATE_TABLE": TABLE,
    }.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", boto3.Session(region_name=REGION, aws_access_key_id=lambda_key))
    monkeypatch.setattr(lambda_handler, "_HANDLER", None)
    s3fs.S3FileSystem.clear_instance_cache()
    mark = len(REQUEST_LOG[0].calls)

    status, health = _call(_event("GET", "/health"))
    assert status == 200 and health["newest_curated"] == (T0 + timedelta(hours=1)).isoformat()
    assert _call(_event("GET", "/devices/dev-001/state"))[0] == 401
    status, state = _call(_event("GET", "/devices/dev-001/state", token))
    assert status == 200, state
    [metric] = state["metrics"]
    assert (metric["metric"], metric["value"], metric["unit"]) == ("temperature", 21.5, "degC")
    assert datetime.fromisoformat(metric["event_ts"]) == T0 + timedelta(hours=1)
    assert [c["key"] for c in state["active_cases"]] == [k for k in keys if k.startswith("dev-001|")]

    status, listed = _call(_event("GET", "/cases", token, query="status=open"))
    assert status == 200 and sorted(c["key"] for c in listed) == sorted(keys)
    key = sorted(keys)[0]
    status, acked = _call(_event("POST", f"/cases/{quote(key, safe='')}/ack", token, {"note": "on it"}))
    assert status == 200 and acked["status"] == "acknowledged"
    status, again = _call(_event("POST", f"/cases/{quote(key, safe='')}/ack", token, {}))
    assert status == 409, again

    # The Lambda's own requests went out as its role (audited at teardown against api-lambda.policy).
    made = [(s, op) for r, s, op, _, _ in REQUEST_LOG[0].calls[mark:] if r == "api-lambda"]
    assert ("dynamodb", "Query") in made and ("s3", "GetObject") in made


def test_each_statement_the_api_and_the_writer_need_is_needed(aws, lake_root, state_table, tmp_path, monkeypatch):
    """The audit can fail: without a statement of the Lambda's or the writer's policy, a call they
    made is denied."""
    _upload_lake(aws, tmp_path / "src", lake_root)
    cases_url = f"sqlite:///{tmp_path / 'cases.sqlite'}"
    open_cases(cases_url)
    token = ApiKeys(cases_url).create("reader", "read")
    lake = Lake(lake_root, setup_storage_options())
    sync_state_table(lake, setup_delta_options(), TABLE, since=T0, region=REGION)
    writer_calls = list(aws.iam_recorder.calls)

    bucket, prefix = split_s3_uri(lake_root)
    lambda_key = ROLE_KEYS["api-lambda"]
    env = {"AWS_ACCESS_KEY_ID": lambda_key, "IOT_LAKE_CASES_URL": cases_url, "IOT_LAKE_BUCKET": bucket}
    for var, value in {**env, "IOT_LAKE_PREFIX": prefix, "IOT_LAKE_STATE_TABLE": TABLE}.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", boto3.Session(region_name=REGION, aws_access_key_id=lambda_key))
    monkeypatch.setattr(lambda_handler, "_HANDLER", None)
    s3fs.S3FileSystem.clear_instance_cache()
    mark = len(REQUEST_LOG[0].calls)
    for path in ("/health", "/devices/dev-001/state"):
        assert _call(_event("GET", path, token))[0] == 200
    lambda_calls = [(s, op, p) for r, s, op, p, _ in REQUEST_LOG[0].calls[mark:] if r == "api-lambda"]

    docs = rendered_policies(Bucket=bucket)
    for role, calls, sids in (
        ("api-lambda", lambda_calls, ("ReadTheHotState", "ListWhatTheApiReads", "ReadWhatTheApiReads")),
        ("dagster", writer_calls, ("PushTheApiHotState",)),
    ):
        requests = [r for s, op, p in calls for r in requests_of(s, op, p)]
        whole = Policy(docs[f"{role}.policy"])
        assert requests and all(whole.allows(r) for r in requests), role
        for sid in sids:
            without = {**docs[f"{role}.policy"]}
            without["Statement"] = [st for st in without["Statement"] if st.get("Sid") != sid]
            assert not all(Policy(without).allows(r) for r in requests), (role, sid)


def test_the_state_asset_pushes_to_dynamodb_in_prod_only(aws, lake_root, state_table, tmp_path, monkeypatch):
    from dagster import build_asset_context

    from assets.curated.telemetry import push_hot_state
    from resources.lake import LakeResource
    from tests.test_definitions import PROD_ENV

    _upload_lake(aws, tmp_path / "src", lake_root)
    lake = LakeResource(root=lake_root, region=REGION)  # as the control plane: its key from the environment
    key = {"device_id": {"S": "dev-001"}, "metric": {"S": "temperature"}}
    push_hot_state(build_asset_context(), lake, since=T0)  # IOT_LAKE_ENV unset: the API reads the Delta table
    assert "Item" not in state_table.get_item(TableName=TABLE, Key=key)

    for var, value in {**PROD_ENV, "AWS_REGION": REGION, "IOT_LAKE_STATE_TABLE": TABLE}.items():
        monkeypatch.setenv(var, value)
    push_hot_state(build_asset_context(), lake, since=T0)
    assert from_item(state_table.get_item(TableName=TABLE, Key=key)["Item"])["value"] == 21.5
    assert "dagster" in {role for role, *_ in REQUEST_LOG[0].calls}  # its lake reads were audited as the role
