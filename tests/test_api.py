"""The serving API (iot_lake/api) in-process over a real SQLite case store and a lake directory:
keys and scopes, the case lifecycle shared with the CLI, concurrency, rate limits, and schemathesis
over the published OpenAPI schema."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
import schemathesis
import sqlalchemy as sa
from deltalake import write_deltalake
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from iot_lake.api.app import create_app
from iot_lake.api.keys import ApiKeys
from iot_lake.cases.model import ACKNOWLEDGED, FALSE_POSITIVE
from iot_lake.cases.store import CaseStore
from iot_lake.lake import registry_key
from tests.cases_helpers import T0, point

NOW = T0 + timedelta(hours=2)


def _lake(root: Path) -> str:
    """A lake with a registry snapshot and a curated telemetry table whose newest reading is T0+1h."""
    lake = root / "lake"
    day = T0.date() - timedelta(days=1)
    devices = [{"device_id": "dev-001", "site_id": "site-1", "model": "tx-9", "firmware": "1.2"}]
    metrics = [{"device_id": "dev-001", "metric": "temperature", "unit": "degF", "canonical_unit": "degC"}]
    for table, rows in (("devices", devices), ("device_metrics", metrics)):
        path = lake / registry_key(day, table)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), path)
    ts = pa.array([T0, T0 + timedelta(hours=1)], pa.timestamp("us", tz="UTC"))
    write_deltalake(str(lake / "curated" / "telemetry"), pa.table({"event_ts": ts, "value": [1.0, 2.0]}))
    return str(lake)


def _cases(url: str) -> list[str]:
    """Two open cases on two devices (the second one never back in band)."""
    with CaseStore(url) as store:
        store.observe_many([point(0), point(1), point(2, anomalous=False)])
        store.observe_many([point(5, device="dev-002"), point(6, device="dev-002")])
        return [c.case_key for c in store.list_cases()]


def _app(root: Path, per_second: int = 1000):
    url = f"sqlite:///{root / 'cases.sqlite'}"
    keys = _cases(url)
    app = create_app(url, _lake(root), per_second=per_second, clock=lambda: NOW)
    tokens = {scope: ApiKeys(url).create(f"{scope}-person", scope) for scope in ("read", "operator")}
    return app, url, keys, tokens


@pytest.fixture
def served(tmp_path):
    app, url, keys, tokens = _app(tmp_path)
    return TestClient(app), url, keys, tokens


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_health_needs_no_key_and_reports_the_newest_curated_reading(served):
    client, *_ = served
    body = client.get("/health").json()
    assert body == {"status": "ok", "newest_curated": (T0 + timedelta(hours=1)).isoformat(), "age_seconds": 3600.0}


def test_a_key_is_shown_once_and_stored_only_as_its_hash(served):
    client, url, _, tokens = served
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        stored = " ".join(str(v) for row in conn.execute(sa.text("SELECT * FROM api_keys")) for v in row)
    secret = tokens["operator"].rsplit("_", 1)[1]
    assert tokens["operator"] not in stored and secret not in stored
    keys = ApiKeys(url)
    assert keys.verify(tokens["read"]).scope == "read"
    assert client.get("/cases", headers={"X-API-Key": tokens["read"]}).status_code == 200
    assert keys.revoke(tokens["read"].split("_")[1])
    assert client.get("/cases", headers={"X-API-Key": tokens["read"]}).status_code == 401  # at once


def test_no_key_or_a_bad_one_is_401_and_a_read_key_cannot_act(served):
    client, _, keys, tokens = served
    assert client.get("/cases").status_code == 401
    assert client.get("/cases", headers=_auth("iotl_00000000_" + "x" * 43)).status_code == 401
    assert client.get("/cases", headers=_auth(tokens["operator"] + "x")).status_code == 401
    listed = client.get("/cases", headers=_auth(tokens["read"]))
    assert listed.status_code == 200 and sorted(c["key"] for c in listed.json()) == sorted(keys)
    denied = client.post(f"/cases/{quote(keys[0], safe='')}/ack", json={}, headers=_auth(tokens["read"]))
    assert denied.status_code == 403 and "operator" in denied.json()["detail"]


def test_filters_are_checked_and_applied(served):
    client, _, keys, tokens = served
    headers = _auth(tokens["read"])
    assert client.get("/cases?status=bogus", headers=headers).status_code == 422
    assert client.get("/cases?limit=0", headers=headers).status_code == 422
    assert [c["device_id"] for c in client.get("/cases?site=site-1&limit=1", headers=headers).json()] in (
        ["dev-001"],
        ["dev-002"],
    )
    assert client.get("/cases?site=elsewhere", headers=headers).json() == []
    later = (T0 + timedelta(minutes=4)).isoformat()
    assert [c["device_id"] for c in client.get("/cases", params={"since": later}, headers=headers).json()] == [
        "dev-002"
    ]


def test_an_operators_actions_go_through_the_case_store_like_the_clis(served):
    client, url, keys, tokens = served
    headers = _auth(tokens["operator"])
    one, two = (quote(k, safe="") for k in sorted(keys))
    assert client.post(f"/cases/{one}/ack", json={"note": "on it"}, headers=headers).json()["status"] == ACKNOWLEDGED
    detail = client.get(f"/cases/{one}", headers=headers).json()
    assert detail["history"][-1] | {"at": None} == {
        "at": None,
        "from_status": "open",
        "to_status": ACKNOWLEDGED,
        "actor": "api:operator-person",
        "note": "on it",
    }
    assert detail["evidence"]["max_score"] == detail["max_score"]
    assert client.post(f"/cases/{one}/ack", json={}, headers=headers).status_code == 409  # not open any more

    closed = client.post(f"/cases/{two}/false-positive", json={"note": "calibration"}, headers=headers)
    assert closed.status_code == 200 and closed.json()["status"] == FALSE_POSITIVE
    with CaseStore(url) as store:  # what retraining and the detector read back
        assert store.get(sorted(keys)[1]).status == FALSE_POSITIVE
        assert list(store.false_positive_periods()["device_id"]) == ["dev-002"]
    assert client.post(f"/cases/{two}/resolve", json={}, headers=headers).status_code == 409
    missing = client.post("/cases/dev-009%7Ctemperature%7C2026-11-20T10:00:00+00:00/resolve", json={}, headers=headers)
    assert missing.status_code == 404 and client.get("/cases/nope", headers=headers).status_code == 404
    assert client.post(f"/cases/{one}/resolve", json={"note": "x" * 1001}, headers=headers).status_code == 422


def test_two_operators_acting_on_one_case_at_once_one_wins(served):
    client, url, keys, _ = served
    key = sorted(keys)[0]
    tokens = [ApiKeys(url).create(name, "operator") for name in ("ana", "ben")]
    start, results = threading.Barrier(2), {}

    def act(token: str, action: str) -> None:
        start.wait()
        results[action] = client.post(f"/cases/{quote(key, safe='')}/{action}", json={}, headers=_auth(token))

    threads = [threading.Thread(target=act, args=pair) for pair in zip(tokens, ("resolve", "false-positive"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results.values())
    assert codes == [200, 409]
    winner = next(a for a, r in results.items() if r.status_code == 200)
    with CaseStore(url) as store:
        assert store.get(key).status == ("resolved" if winner == "resolve" else FALSE_POSITIVE)
        closing = [h for h in store.history(key) if h.to_status in ("resolved", FALSE_POSITIVE)]
        assert len(closing) == 1  # the loser changed nothing


def test_requests_are_rate_limited_per_key(tmp_path):
    app, url, _, tokens = _app(tmp_path, per_second=3)
    client = TestClient(app)
    codes = [client.get("/cases", headers=_auth(tokens["read"])).status_code for _ in range(5)]
    assert codes[:3] == [200] * 3 and 429 in codes[3:]
    assert client.get("/cases", headers=_auth(tokens["operator"])).status_code == 200  # another key is not slowed


def test_devices_come_from_the_newest_registry_snapshot(served):
    client, _, _, tokens = served
    headers = _auth(tokens["read"])
    assert client.get("/devices", headers=headers).json() == [
        {
            "device_id": "dev-001",
            "site_id": "site-1",
            "model": "tx-9",
            "firmware": "1.2",
            "metrics": [{"metric": "temperature", "unit": "degF", "canonical_unit": "degC"}],
        }
    ]
    assert client.get("/devices/dev-001", headers=headers).json()["site_id"] == "site-1"
    assert client.get("/devices/dev-404", headers=headers).status_code == 404


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_cli_creates_keys_and_serves_the_app(tmp_path):
    """`iot-lake api-keys create` then `iot-lake api`, as a person would run them, on the embedded default."""
    env = {**os.environ, "IOT_LAKE_ROOT": _lake(tmp_path)}
    cli = [sys.executable, "-m", "iot_lake.cli"]
    made = subprocess.run(
        [*cli, "api-keys", "create", "--name", "wall", "--scope", "read"], env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    bad = subprocess.run(
        [*cli, "api-keys", "create", "--name", " ", "--scope", "read"], env=env, capture_output=True, text=True
    )
    assert bad.returncode != 0 and "name" in bad.stderr
    port = _free_port()
    server = subprocess.Popen(
        [*cli, "api", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                health = requests.get(f"{base}/health", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert health.json()["newest_curated"] == (T0 + timedelta(hours=1)).isoformat()
        assert "/cases/{key}/false-positive" in requests.get(f"{base}/openapi.json", timeout=5).json()["paths"]
        assert requests.get(f"{base}/cases", headers=_auth(token), timeout=5).json() == []
        assert requests.get(f"{base}/cases", timeout=5).status_code == 401
    finally:
        server.terminate()
        server.wait(timeout=10)
    listed = subprocess.run([*cli, "api-keys", "list"], env=env, capture_output=True, text=True, check=True)
    assert token not in listed.stdout and '"name": "wall"' in listed.stdout


# Schemathesis: every endpoint of the published schema, valid and invalid inputs, as an operator.
_ROOT = Path(tempfile.mkdtemp(prefix="iot-lake-api-"))
_APP, _URL, _KEYS, _TOKENS = _app(_ROOT)
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


@schema.parametrize()
# Derandomized: the same examples on every CI run (a failure reproduces); schemathesis can count a
# request with one of the two auth schemes mutated as invalid though the other one authenticates it.
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_every_endpoint_conforms_to_its_schema(case):
    case.call_and_validate(headers=_auth(_TOKENS["operator"]))
