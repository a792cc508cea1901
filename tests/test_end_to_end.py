"""The main job as the README runs it, and `dagster dev` serving the platform with its daemon."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from iot_lake.lake import Lake
from iot_lake.simulate.deliveries import SimConfig
from iot_lake.simulate.runner import Simulator
from iot_lake.sources.historian import create_engine, land_registry
from tests.conftest import START

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOT_LAKE", "DAGSTER_HOME"))}
    return {**env, **extra}


def test_main_job_end_to_end(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "jobs.main", "--devices", "4", "--days", "1", "--start", "2026-11-20"],
        cwd=REPO, env=_env(IOT_LAKE_ROOT=str(tmp_path / "lake"), DAGSTER_HOME=str(home)),
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "failed runs" in out.stdout
    with DagsterInstance.from_config(str(home)) as instance:
        def partitions(key):
            return instance.get_materialized_partitions(AssetKey(key))

        assert len(partitions(["landing", "telemetry"])) == 24
        assert partitions(["curated", "telemetry"]) == partitions(["landing", "telemetry"])
        for grain in ("1min", "5min"):
            assert partitions(["curated", f"telemetry_{grain}"]) == partitions(["landing", "telemetry"])
        # The day's 24 hours ran as one single-run backfill: one Spark session, not 24.
        runs = instance.get_run_records()
        assert sum(r.dagster_run.job_name == "telemetry_hourly_job" for r in runs) == 1
        for key in (["curated", "weather"], ["curated", "features"]):
            assert partitions(key) == {"2026-11-20"}
        features = instance.get_latest_materialization_event(AssetKey(["curated", "features"])).asset_materialization
        assert features.metadata["dagster/row_count"].value == 4 * 4 * 288  # devices x metrics x 5-min buckets
        # Every data-quality check ran in the main job's runs and passed.
        for key in ("telemetry", "telemetry_1min", "telemetry_5min", "weather", "features"):
            check = AssetCheckKey(AssetKey(["curated", key]), "gx_suite")
            latest = instance.event_log_storage.get_asset_check_execution_history(check, limit=1)
            assert latest and latest[0].status.value == "SUCCEEDED", (key, latest)
        curated = instance.get_latest_materialization_event(AssetKey(["curated", "telemetry"])).asset_materialization
        assert curated.metadata["curated_new"].value > 0 and curated.metadata["lines_landed"].value > 0
        assert partitions(["landing", "weather"]) == {"2026-11-20"}
        assert partitions(["landing", "device_registry"]) == {"2026-11-20"}
        assert partitions(["landing", "historical_readings"]) == {"2026-11-20"}
        event = instance.get_latest_materialization_event(AssetKey(["landing", "historical_readings"]))
        assert event.asset_materialization.metadata["rows"].value == 4 * 4 * 7 * 96  # a week of 15-min means
    assert (tmp_path / "lake" / "landing" / "_inventory" / "telemetry" / "2026" / "11" / "20" / "23.json").exists()
    assert sorted(p.name for p in (tmp_path / "lake").iterdir() if not p.name.startswith("_")) == sorted(
        ["landing", "curated", "warehouse", "models", "forecasts", "cases", "quarantine"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["data"]


def _wait(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_dagster_dev_serves_the_ui_and_the_sensor_runs_new_landing_data(tmp_path):
    # A copy of the project's control plane, so the test's .dagster/ does not touch the checkout.
    project = tmp_path / "project"
    project.mkdir()
    for name in ("assets", "resources", "jobs", "sensors", "dbt_project"):  # dbt_project: with its manifest
        shutil.copytree(REPO / name, project / name, ignore=shutil.ignore_patterns("__pycache__", "runs", "logs"))
    for name in ("definitions.py", "workspace.yaml", "dagster.yaml"):
        shutil.copy(REPO / name, project / name)
    lake_root = tmp_path / "lake"
    port = _free_port()
    log = open(tmp_path / "dagster-dev.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-p", str(port)], cwd=project,
        env=_env(IOT_LAKE_ROOT=str(lake_root)), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        _wait(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5).status == 200, 120, "the UI")
        # Without --host, the UI listens on loopback only (README, "Operating in production").
        import psutil

        bound = {c.laddr.ip for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        assert bound == {"127.0.0.1"}, bound
        nodes = _graphql(port, "{ assetNodes { assetKey { path } groupName } }")["assetNodes"]
        assert {"/".join(n["assetKey"]["path"]) for n in nodes} >= {"landing/telemetry", "landing/weather"}
        assert (project / ".dagster" / "storage").is_dir()  # storage under the project, not a temp dir

        # A registry, then new landing objects: the daemon's sensor must notice them and run their partition.
        lake = Lake(str(lake_root))
        sim = Simulator(SimConfig(devices=2, seed=3, history_days=1), lake)
        sim.seed_historian(f"sqlite:///{tmp_path}/historian.sqlite", START.date())
        engine = create_engine(f"sqlite:///{tmp_path}/historian.sqlite")
        land_registry(lake, engine, START.date())
        engine.dispose()
        sim.backfill(START, START + timedelta(hours=1))
        query = '{ runsOrError(filter: {pipelineName: "telemetry_hourly_job"}) { ... on Runs { results { status tags { key value } } } } }'

        def succeeded():
            runs = _graphql(port, query)["runsOrError"]["results"]
            return [r for r in runs if r["status"] == "SUCCESS"]

        runs = _wait(succeeded, 180, "the sensor's run to succeed")
        tags = {t["key"]: t["value"] for t in runs[0]["tags"]}
        mats = _graphql(port, '{ assetNodes(assetKeys: [{path: ["curated", "telemetry"]}]) { assetMaterializations { partition } } }')
        assert [m["partition"] for m in mats["assetNodes"][0]["assetMaterializations"]] == ["2026-11-20-00:00"]
        assert tags["dagster/partition"] == "2026-11-20-00:00" and tags["dagster/sensor_name"] == "landing_sensor"
        # The run is persisted in the project's .dagster/, not in dagster dev's scratch directory.
        with sqlite3.connect(project / ".dagster" / "storage" / "history" / "runs.db") as db:
            stored = db.execute("select count(*) from runs where pipeline_name = 'telemetry_hourly_job'").fetchone()[0]
        assert stored >= 1
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    text = (tmp_path / "dagster-dev.log").read_text()
    assert f"Serving dagster-webserver on http://127.0.0.1:{port}" in text
