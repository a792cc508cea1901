from __future__ import annotations

import gzip
import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
import s3fs

from iot_lake.lake import TELEMETRY_PREFIX, Lake
from iot_lake.simulate.deliveries import SimConfig
from iot_lake.simulate.runner import Simulator
from tests.cases_helpers import store_url  # noqa: F401  (fixture: an empty case store, SQLite or PostgreSQL)
from tests.iam_audit import REQUEST_LOG, ROLE_KEYS, SETUP_CREDENTIALS, CallRecorder, S3RequestLog
from tests.postgres import postgres_root_cert, postgres_server, postgres_url  # noqa: F401  (session fixtures: a real PostgreSQL server)

REGION = "us-east-1"  # of the moto tests
START = datetime(2026, 11, 20, tzinfo=UTC)  # a Friday: two days cover a weekday and a Saturday


@pytest.fixture(autouse=True)
def _embedded_default(monkeypatch):
    """Every test starts on the embedded default, whatever the developer's shell exports."""
    for var in (
        "IOT_LAKE_ENV",
        "IOT_LAKE_ROOT",
        "IOT_LAKE_HISTORIAN_URL",
        "IOT_LAKE_CASES_URL",
        "IOT_LAKE_CASES_WEBHOOK_URL",
        "IOT_LAKE_CASES_WEBHOOK_SECRET",
        "DAGSTER_HOME",
    ):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def defs():
    """The project's Definitions, built once per session on the embedded default."""
    import definitions

    with pytest.MonkeyPatch.context() as mp:
        for var in [v for v in os.environ if v.startswith("IOT_LAKE_")]:
            mp.delenv(var)
        return definitions.defs()


@pytest.fixture
def fake_aws(monkeypatch, tmp_path):
    """Fake credentials and no developer AWS config, so nothing here can reach a real account."""
    for var, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }.items():
        monkeypatch.setenv(var, value)
    for var in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_KINESIS",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(var, raising=False)


def simulate(root: Path, hours: int = 48, **overrides) -> tuple[Lake, Simulator]:
    cfg = SimConfig(**{"devices": 8, "seed": 7, **overrides})
    lake = Lake(str(root))
    sim = Simulator(cfg, lake)
    sim.backfill(START, START + timedelta(hours=hours))
    return lake, sim


def read_lines(lake: Lake) -> list[str]:
    """Every NDJSON line of every readable landing object."""
    lines = []
    for obj in lake.list(TELEMETRY_PREFIX):
        try:
            lines.extend(gzip.decompress(lake.read_bytes(obj.key)).decode().splitlines())
        except EOFError:
            continue
    return lines


def truth_objects(lake: Lake) -> dict[str, dict]:
    out = {}
    root = lake.path("landing/_simulator/deliveries")
    for path in lake.fs.find(root):
        doc = json.loads(lake.fs.cat_file(path))
        out[doc["key"]] = doc
    return out


@pytest.fixture(scope="session")
def two_days(tmp_path_factory) -> tuple[Lake, Simulator]:
    """Two simulated days with generous fault rates, shared by read-only tests."""
    return simulate(
        tmp_path_factory.mktemp("two_days"),
        hours=48,
        bad_rate=0.05,
        duplicate_rate=0.03,
        late_rate=0.02,
        truncated_rate=0.05,
        anomaly_rate=0.5,
    )


HOURS = 3


def land_faulty_hours(root: Path, hours: int = HOURS) -> Lake:
    """Landing hours with every kind of fault, plus the registry and inventories landed."""
    from iot_lake.simulate.historian import seed_historian
    from iot_lake.sources.historian import create_engine, land_registry
    from iot_lake.sources.telemetry import land_inventory

    lake, sim = simulate(
        root, hours=hours, devices=6, bad_rate=0.04, duplicate_rate=0.05, late_rate=0.03, truncated_rate=0.1
    )
    url = f"sqlite:///{root}/historian.sqlite"
    seed_historian(url, sim.fleet, sim.cfg, START.date())
    engine = create_engine(url)
    land_registry(lake, engine, START.date())
    engine.dispose()
    for h in range(hours):
        land_inventory(lake, START + timedelta(hours=h))
    return lake


@pytest.fixture
def landed(tmp_path):
    """A few landing hours with every kind of fault, plus the registry and inventories landed."""
    return land_faulty_hours(tmp_path)


@pytest.fixture(scope="session")
def moto_endpoint():
    """One moto server (HTTP, like AWS) for the run; tests isolate themselves by bucket and resource names."""
    import logging
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    server._server.app = S3RequestLog(server._server.app)  # what the job roles' stand-ins do in S3
    REQUEST_LOG[:] = [server._server.app]
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def spark():
    """One Sail (in-process Spark Connect) session for the whole test run."""
    from iot_lake.spark.session import spark_session

    with spark_session("tests") as session:
        yield session


@pytest.fixture
def aws(moto_endpoint, monkeypatch, tmp_path) -> Iterator[boto3.Session]:
    """Every AWS client in this process and its subprocesses talks to moto; none can reach an account.

    The runner's clients come from boto3's default session, replaced here by one the twins hook; it
    signs with the tests' own key (SETUP_KEY), and its production calls are recorded in the process
    (CallRecorder). The control plane's s3fs and delta-rs clients, and the runs it starts in other
    processes, take their credentials from the environment: the dagster role's key, so the moto
    server's log records them as that role's (S3RequestLog). Tests that set up or look at the lake
    themselves sign with SETUP_KEY (setup_storage_options, setup_delta_options).
    """
    for var, value in {
        "AWS_ACCESS_KEY_ID": ROLE_KEYS["dagster"],
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ALLOW_HTTP": "true",  # Sail's object store, in the twins' subprocesses
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }.items():
        monkeypatch.setenv(var, value)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    # fsspec caches S3 filesystems by their options, not by the credentials the environment gave
    # them: one made by an earlier test would sign this test's control-plane calls with its key.
    s3fs.S3FileSystem.clear_instance_cache()
    session = boto3.Session(region_name=REGION, **SETUP_CREDENTIALS)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", session)
    # Every call production code makes here must be allowed by the control plane's IAM policy.
    session.iam_recorder = CallRecorder()
    session.iam_recorder.attach(session)
    signed = _s3_request_log()
    signed.calls.clear()
    yield session
    # The requests signed as a role (the jobs', the control plane's s3fs and delta-rs), against its policy.
    denied = session.iam_recorder.denied("dagster") + signed.denied(session.iam_recorder.lake_buckets)
    signed.calls.clear()
    s3fs.S3FileSystem.clear_instance_cache()
    assert not denied, "deploy/iam/ denies calls the code made:\n" + "\n".join(
        f"  {r.call}: {r.action} on {r.resource} {dict(r.context) or ''}" for r in denied
    )


def _s3_request_log() -> S3RequestLog:
    """The moto server's request log (one server per run: moto_endpoint)."""
    return REQUEST_LOG[0]


@pytest.fixture
def lake_root(aws) -> str:
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    aws.client("s3").create_bucket(Bucket=bucket)
    aws.iam_recorder.lake_buckets.append(bucket)
    return f"s3://{bucket}/lake"
