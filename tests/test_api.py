"""The serving API (iot_lake/api) in-process over a real SQLite case store and a lake directory:
keys and scopes, the case lifecycle shared with the CLI, concurrency, rate limits, and schemathesis
over the published OpenAPI schema."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pytest
import requests
import schemathesis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from benchmarks.dagster_dev import free_port
from iot_lake.api import limits
from iot_lake.api.app import DeviceState, create_app, presented_key
from iot_lake.api.keys import ApiKeys
from iot_lake.api.readings import FORECASTS
from iot_lake.cases.model import ACKNOWLEDGED, FALSE_POSITIVE, REJECTED
from iot_lake.cases.store import CaseStore
from iot_lake.cases.views import case_json
from iot_lake.curated.state import DEVICE_STATE
from tests.api_helpers import NOW, auth, make_app, make_lake
from tests.cases_helpers import T0


@pytest.fixture
def served(tmp_path):
    app, url, keys, tokens = make_app(tmp_path)
    return TestClient(app), url, keys, tokens


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
    assert client.get("/cases", headers=auth("iotl_00000000_" + "x" * 43)).status_code == 401
    assert client.get("/cases", headers=auth(tokens["operator"] + "x")).status_code == 401
    listed = client.get("/cases", headers=auth(tokens["read"]))
    assert listed.status_code == 200 and sorted(c["key"] for c in listed.json()) == sorted(keys)
    denied = client.post(f"/cases/{quote(keys[0], safe='')}/ack", json={}, headers=auth(tokens["read"]))
    assert denied.status_code == 403 and "operator" in denied.json()["detail"]


def test_filters_are_checked_and_applied(served):
    client, _, keys, tokens = served
    headers = auth(tokens["read"])
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
    headers = auth(tokens["operator"])
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
        results[action] = client.post(f"/cases/{quote(key, safe='')}/{action}", json={}, headers=auth(token))

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
        loser = next(a for a in results if a != winner)
        (rejected,) = [h for h in store.history(key) if h.to_status == REJECTED]
    # The history shows both attempts: the winner's change and the loser's refused attempt, by its key.
    assert rejected.from_status == closing[0].to_status
    assert rejected.actor == f"api:{'ana' if loser == 'resolve' else 'ben'}"
    attempted = "close as resolved" if loser == "resolve" else f"close as {FALSE_POSITIVE}"
    assert rejected.note.startswith(f"rejected {attempted}: case {key} was already closed")
    assert closing[0].actor == f"api:{'ana' if winner == 'resolve' else 'ben'}"
    detail = client.get(f"/cases/{quote(key, safe='')}", headers=auth(tokens[0])).json()
    assert [h["to_status"] for h in detail["history"]][-2:] == [closing[0].to_status, REJECTED]


HEADER_NAMES = st.sampled_from([b"authorization", b"x-api-key", b"accept", b"x-api-keys"])
HEADER_VALUES = st.one_of(
    st.sampled_from([b"Bearer k1", b"bearer  k2 ", b"BEARER\tk3", b"Basic k4", b"Bearer", b"Bearer ", b"", b"k5"]),
    st.binary(max_size=12),
)


@given(headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=5))
@settings(max_examples=300, deadline=None)
def test_the_hot_path_reads_the_key_fastapis_dependencies_read(headers):
    """The hot routes' own header parsing (presented_key) and the routes' dependencies (HTTPBearer,
    then APIKeyHeader) take the same key from any headers: repeated, empty, other schemes, odd bytes."""
    import asyncio

    from fastapi.security import APIKeyHeader, HTTPBearer
    from starlette.requests import Request

    request = Request({"type": "http", "method": "GET", "path": "/cases", "headers": headers})

    async def dependencies():
        bearer = await HTTPBearer(auto_error=False)(request)
        return bearer.credentials if bearer else await APIKeyHeader(name="X-API-Key", auto_error=False)(request)

    assert presented_key(headers) == asyncio.run(dependencies())


def test_requests_are_rate_limited_per_key(tmp_path):
    app, url, _, tokens = make_app(tmp_path, per_second=3)
    client = TestClient(app)
    codes = [client.get("/cases", headers=auth(tokens["read"])).status_code for _ in range(5)]
    assert codes[:3] == [200] * 3 and 429 in codes[3:]
    assert client.get("/cases", headers=auth(tokens["operator"])).status_code == 200  # another key is not slowed


def test_the_rate_limit_holds_across_the_servers_processes(tmp_path, monkeypatch):
    """`--workers N`: each process builds its own app, and any of them may take a key's next request.
    Two apps on one limits file (two workers) let a key send its limit, not twice it."""
    monkeypatch.setattr(limits, "NOW", lambda: 10**12)  # the requests arrive within the same instant
    shared = str(tmp_path / "limits")
    app, url, _, tokens = make_app(tmp_path, per_second=4, limits_path=shared)
    other = create_app(url, str(tmp_path / "lake"), per_second=4, clock=lambda: NOW, limits_path=shared)
    workers = [TestClient(app), TestClient(other)]
    codes = [workers[i % 2].get("/cases", headers=auth(tokens["read"])).status_code for i in range(8)]
    assert codes.count(200) == 4 and codes.count(429) == 4
    assert workers[1].get("/cases", headers=auth(tokens["operator"])).status_code == 200  # another key is not slowed


def test_devices_come_from_the_newest_registry_snapshot(served):
    client, _, _, tokens = served
    headers = auth(tokens["read"])
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


def test_state_is_the_hot_state_with_the_band_for_now_and_the_active_case(served):
    client, url, keys, tokens = served
    headers = auth(tokens["operator"])
    body = client.get("/devices/dev-001/state", headers=headers).json()
    (temperature,) = body["metrics"]
    assert {k: temperature[k] for k in ("metric", "value", "unit")} == {
        "metric": "temperature",
        "value": 21.5,
        "unit": "degC",
    }
    assert _instant(temperature["event_ts"]) == T0 + timedelta(hours=1)
    # NOW's bucket is covered by the origins T0 and T0+1h: the latest wins; T0+3h's is not made yet.
    band = temperature["forecast"]
    assert (band["yhat"], band["lo_95"], band["hi_80"]) == (20.0, 18.0, 21.0)
    assert _instant(band["origin"]) == T0 + timedelta(hours=1) and _instant(band["bucket_start"]) == NOW
    dev_001 = next(k for k in keys if k.startswith("dev-001|"))
    assert [c["key"] for c in body["active_cases"]] == [dev_001] and body["site_id"] == "site-1"

    client.post(f"/cases/{quote(dev_001, safe='')}/resolve", json={}, headers=headers)
    assert client.get("/devices/dev-001/state", headers=headers).json()["active_cases"] == []
    assert client.get("/devices/dev-404/state", headers=headers).status_code == 404
    assert client.get("/devices/dev-001/state").status_code == 401


def test_state_reads_only_the_hot_state_table(tmp_path):
    """No scan of curated telemetry per request: without the hot state there is no latest value,
    though curated telemetry holds readings of the device."""
    app, _, _, tokens = make_app(tmp_path)
    shutil.rmtree(tmp_path / "lake" / DEVICE_STATE)
    body = TestClient(app).get("/devices/dev-001/state", headers=auth(tokens["read"])).json()
    assert body["metrics"] == [] and len(body["active_cases"]) == 1


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _series(client, token, **params):
    return client.get("/devices/dev-001/series", params={"metric": "temperature", **params}, headers=auth(token))


def test_series_pages_through_the_aggregates_with_their_forecast_band(served):
    client, _, _, tokens = served
    start, end = T0 + timedelta(minutes=30), T0 + timedelta(minutes=90)
    points, token, pages = [], None, 0
    while True:
        params = {"from": start.isoformat(), "to": end.isoformat(), "grain": "1min", "limit": 25}
        page = _series(client, tokens["read"], **params, **({"page_token": token} if token else {}))
        assert page.status_code == 200, page.text
        body = page.json()
        points += body["points"]
        pages, token = pages + 1, body["next_page_token"]
        if token is None:
            break
    assert pages == 3 and [_instant(p["bucket_start"]) for p in points] == [
        start + timedelta(minutes=m) for m in range(60)
    ]
    assert [p["mean"] for p in points] == [float(m) for m in range(30, 90)]
    # Each minute has the band of its 5-minute bucket from the latest origin at or before it.
    yhat = [p["forecast"]["yhat"] for p in points]
    assert yhat == [10.0] * 30 + [20.0] * 30
    # The detector's scores where it scored: the 1-minute ones, and the highest of each 5 minutes.
    assert [(p["score"], p["anomalous"]) for p in points[30:33]] == [(0.0, False), (0.1, False), (0.9, True)]
    assert points[0]["score"] is None and points[-1]["anomalous"] is None
    five = _series(client, tokens["read"], grain="5min").json()  # default range: the day before NOW
    by_start = {_instant(p["bucket_start"]): p for p in five["points"]}
    assert [
        (by_start[T0 + timedelta(minutes=m)]["score"], by_start[T0 + timedelta(minutes=m)]["anomalous"])
        for m in (55, 60, 65)
    ] == [(None, None), (0.9, True), (0.4, False)]
    assert len(five["points"]) == 24 and _instant(five["to"]) == NOW and five["next_page_token"] is None
    assert five["points"][0]["forecast"]["yhat"] == 10.0 and five["points"][-1]["forecast"]["yhat"] == 20.0


def test_series_bounds_and_tokens_are_checked(served):
    client, _, _, tokens = served
    token = tokens["read"]
    eight_days = {"from": (NOW - timedelta(days=8)).isoformat(), "to": NOW.isoformat()}
    too_long = _series(client, token, **eight_days)
    assert too_long.status_code == 422 and "7 days" in too_long.text
    assert _series(client, token, **{"from": NOW.isoformat(), "to": T0.isoformat()}).status_code == 422
    assert _series(client, token, grain="1h").status_code == 422
    assert _series(client, token, page_token="garbage!").status_code == 422
    first = _series(client, token, grain="1min", limit=10).json()
    elsewhere = {"from": (NOW - timedelta(days=3)).isoformat(), "to": (NOW - timedelta(days=2)).isoformat()}
    assert _series(client, token, page_token=first["next_page_token"], **elsewhere).status_code == 422
    assert _series(client, token, metric="humidity").status_code == 404
    assert client.get("/devices/dev-404/series?metric=temperature", headers=auth(token)).status_code == 404
    # A range before any aggregate or forecast: no points, no band, no next page.
    empty = _series(client, token, **elsewhere).json()
    assert empty["points"] == [] and empty["next_page_token"] is None


def test_the_cli_creates_keys_and_serves_themake_app(tmp_path):
    """`iot-lake api-keys create` then `iot-lake api`, as a person would run them, on the embedded default
    (with two worker processes, as a server with cores to spare runs it)."""
    env = {**os.environ, "IOT_LAKE_ROOT": make_lake(tmp_path)}
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
    port = free_port()
    server = subprocess.Popen(
        [*cli, "api", "--port", str(port), "--workers", "2", "--rate-limit", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):  # each worker imports the app on its own
            try:
                health = requests.get(f"{base}/health", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert health.json()["newest_curated"] == (T0 + timedelta(hours=1)).isoformat()
        assert "/cases/{key}/false-positive" in requests.get(f"{base}/openapi.json", timeout=5).json()["paths"]
        assert requests.get(f"{base}/cases", headers=auth(token), timeout=5).json() == []
        assert requests.get(f"{base}/cases", timeout=5).status_code == 401
        # The workbench's files ship with the package and are served from it.
        assert "workbench.js" in requests.get(f"{base}/workbench", timeout=5).text
        assert requests.get(f"{base}/workbench/static/workbench.js", timeout=5).status_code == 200
        with requests.Session() as session:  # one connection, so one worker: --rate-limit 1 reached it
            codes = [session.get(f"{base}/cases", headers=auth(token), timeout=5).status_code for _ in range(4)]
        assert 429 in codes
    finally:
        server.terminate()
        server.wait(timeout=10)
    listed = subprocess.run([*cli, "api-keys", "list"], env=env, capture_output=True, text=True, check=True)
    assert token not in listed.stdout and '"name": "wall"' in listed.stdout


# Schemathesis: every endpoint of the published schema, valid and invalid inputs, as an operator.
_ROOT = Path(tempfile.mkdtemp(prefix="iot-lake-api-"))
# The device of the schema's examples, so the device routes answer 200 as well as 404.
_APP, _URL, _KEYS, _TOKENS = make_app(_ROOT, device="dev-0001")
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


@schema.parametrize()
# Derandomized: the same examples on every CI run (a failure reproduces); schemathesis can count a
# request with one of the two auth schemes mutated as invalid though the other one authenticates it.
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_every_endpoint_conforms_to_its_schema(case):
    if case.operation.path != "/devices/{device_id}/series":
        case.call_and_validate(headers=auth(_TOKENS["operator"]))
        return
    # The series' range and page token have rules across fields no schema can state (to after from,
    # at most 7 days; a token of the same range): a schema-valid request may get a 422, for those only.
    response = case.call_and_validate(headers=auth(_TOKENS["operator"]), excluded_checks=[positive_data_acceptance])
    if response.status_code == 422 and case.meta and not case.meta.generation.mode.is_negative:
        assert {e["loc"][-1] for e in response.json()["detail"]} <= {"to", "page_token"}, response.text


def _commit(path: Path, change) -> None:
    """A new version of a Delta table: its rows, each changed by ``change``, as the jobs would commit them."""
    from deltalake import DeltaTable, write_deltalake

    table = DeltaTable(str(path)).to_pyarrow_table()
    write_deltalake(
        str(path), pa.Table.from_pylist([change(r) for r in table.to_pylist()], table.schema), mode="overwrite"
    )


def test_a_commit_is_served_by_the_next_request(served, tmp_path):
    """The app keeps its Delta tables and what it derives from a version between requests: a commit of
    the hot state, the forecasts or curated telemetry must be visible to the very next request."""
    client, _, _, tokens = served
    headers, lake = auth(tokens["read"]), tmp_path / "lake"
    (before,) = client.get("/devices/dev-001/state", headers=headers).json()["metrics"]
    client.get("/health")
    _commit(lake / DEVICE_STATE, lambda r: {**r, "value": 22.5, "event_ts": NOW})
    # Every origin's yhat up by 5: NOW's band, from the origin T0+1h, 20 -> 25.
    _commit(lake / FORECASTS, lambda r: {**r, "yhat": r["yhat"] + 5})
    _commit(lake / "curated" / "telemetry", lambda r: {**r, "event_ts": NOW})
    (after,) = client.get("/devices/dev-001/state", headers=headers).json()["metrics"]
    assert (before["value"], before["forecast"]["yhat"]) == (21.5, 20.0)
    assert (after["value"], _instant(after["event_ts"]), after["forecast"]["yhat"]) == (22.5, NOW, 25.0)
    assert client.get("/health").json()["newest_curated"] == NOW.isoformat()


def test_the_case_list_is_the_cases_json_without_reading_their_evidence(served):
    client, url, _, tokens = served
    store = client.app.state.store
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    listed = client.get("/cases", headers=auth(tokens["read"])).json()
    with CaseStore(url) as other:
        assert listed == [case_json(c) for c in other.list_cases()]  # the shape the CLI prints
    case_reads = [s for s in statements if "FROM cases" in s]
    # Lists decode no case's evidence: the database hands over its max_score alone.
    assert case_reads and not any(re.search(r"(?<!JSON_EXTRACT\()cases\.evidence", s, re.I) for s in case_reads)


def test_the_state_answer_is_as_its_model_writes_it(served):
    """The state route writes its JSON itself (the metrics once per version): it must be what the
    published model would write, field for field."""
    client, _, _, tokens = served
    for _ in range(2):  # built, then from the cache
        body = client.get("/devices/dev-001/state", headers=auth(tokens["read"])).json()
        assert body["metrics"] and body["active_cases"]
        assert body == DeviceState.model_validate(body).model_dump(mode="json")


def test_the_polled_reads_answer_as_the_routes_do(tmp_path):
    """The state of a device and the unfiltered case list are answered before FastAPI's routing
    (``HotReads``) when the request is sure to be a 200: status, headers and body must be the routes'
    own, for good requests and for every way of getting them wrong."""
    fast, url, _, tokens = make_app(tmp_path)
    routed = create_app(url, str(tmp_path / "lake"), per_second=1000, clock=lambda: NOW, hot_reads=False)
    read, key = auth(tokens["read"]), tokens["read"]
    asked = [
        ("/devices/dev-001/state", read),
        ("/devices/dev-001/state?extra=1", {"X-API-Key": key}),
        ("/devices/dev-001/state", {"Authorization": f"bearer   {key} "}),
        ("/devices/dev-001/state", {"Authorization": f"Basic {key}", "X-API-Key": key}),
        ("/devices/dev-001/state", {"Authorization": f"Basic {key}"}),
        ("/devices/dev-001/state", {"Authorization": "Bearer ", "X-API-Key": key}),
        ("/devices/dev-001/state", {"Authorization": "Bearer iotl_nope_x", "X-API-Key": key}),
        ("/devices/dev-001/state", {}),
        ("/devices/dev-404/state", read),
        (f"/devices/{'d' * 65}/state", read),
        ("/devices/dev-001/state/", read),
        ("/devices//state", read),
        ("/cases", read),
        ("/cases", {"X-API-Key": key}),
        ("/cases", {"X-API-Key": "iotl_nope_x"}),
        ("/cases?limit=200", read),
        ("/cases?status=open", read),
        ("/cases?limit=0", read),
        ("/cases/", read),
    ]
    for path, headers in asked:
        ours, theirs = TestClient(fast).get(path, headers=headers), TestClient(routed).get(path, headers=headers)
        assert (ours.status_code, ours.content) == (theirs.status_code, theirs.content), path
        assert sorted(ours.headers.items()) == sorted(theirs.headers.items()), path
    assert TestClient(fast).get("/devices/dev-001/state", headers=read).json()["active_cases"]

    # A registered id longer than the route takes is still the route's 422, not a state.
    (tmp_path / "long").mkdir()
    long_id = "d" * 65
    fast, url, _, tokens = make_app(tmp_path / "long", device=long_id)
    routed = create_app(url, str(tmp_path / "long" / "lake"), clock=lambda: NOW, hot_reads=False)
    asked = [TestClient(app).get(f"/devices/{long_id}/state", headers=auth(tokens["read"])) for app in (fast, routed)]
    assert [a.status_code for a in asked] == [422, 422] and asked[0].content == asked[1].content


def test_every_answer_says_no_store(served):
    """Case states change under an operator's feet: no cache (a browser's, a proxy's) may keep an answer,
    a refusal or the workbench."""
    client, _, _, tokens = served
    answers = [
        client.get("/health"),
        client.get("/cases", headers=auth(tokens["read"])),
        client.get("/devices/dev-001/state", headers=auth(tokens["read"])),
        client.get("/devices/dev-404/state", headers=auth(tokens["read"])),
        client.get("/cases"),
        client.get("/workbench"),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 404, 401, 200]
    assert all(a.headers.get_list("cache-control") == ["no-store"] for a in answers)


def test_what_is_read_from_the_store_is_kept_until_another_process_commits(tmp_path):
    """The key checks and active cases are kept while SQLite's data_version stands still; a commit of
    any other connection, here another process (the CLI, the detector), moves it."""
    from iot_lake.api.unchanged import Unchanged

    path = tmp_path / "cases.sqlite"
    with sa.create_engine(f"sqlite:///{path}").begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    kept = Unchanged(f"sqlite:///{path}")
    assert kept.get("k", lambda: 1) == 1 and kept.get("k", lambda: 2) == 1
    write = f"import sqlite3; c = sqlite3.connect({str(path)!r}); c.execute('INSERT INTO t VALUES (1)'); c.commit()"
    subprocess.run([sys.executable, "-c", write], check=True)
    assert kept.get("k", lambda: 3) == 3
    assert Unchanged("postgresql://u@localhost/cases").get("k", lambda: 4) == 4  # no counter: always read
