"""The main job as the README runs it, and `dagster dev` serving the platform with its daemon: its
sensor runs new landing data, and a headless Chromium screenshots the asset graph it draws
(test-artifacts/asset-graph.png)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from benchmarks.dagster_dev import copy_control_plane, free_port, served
from benchmarks.dagster_dev import dagster_dev as start_dagster_dev
from benchmarks.dagster_dev import graphql as _graphql
from benchmarks.dagster_dev import wait as _wait
from iot_lake.lake import Lake
from iot_lake.simulate.deliveries import SimConfig
from iot_lake.simulate.runner import Simulator
from iot_lake.sources.historian import create_engine, land_registry
from tests.conftest import START
from tests.unavailable import assert_skipped_locally_and_failed_in_ci, chromium_binary

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOT_LAKE", "DAGSTER_HOME"))}
    return {**env, **extra}


def test_main_job_end_to_end(tmp_path):
    """The whole loop after one command: sources, curated, training, forecasts, deviations, cases and the
    warehouse, with the closing table an operator reads."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    # Seed 130: a 4-device fleet with a device whose sampling phase once put a day's last sample
    # into the next day (the historian seed then failed on a duplicate reading): any seed must work.
    # Two days of history, one scored day, anomalies dense enough that some are injected in it.
    command = ["--devices", "4", "--days", "1", "--history-days", "2", "--start", "2026-11-20", "--seed", "130"]
    out = subprocess.run(
        [sys.executable, "-m", "jobs.main", *command, "--anomaly-rate", "0.5"],
        cwd=REPO,
        env=_env(IOT_LAKE_ROOT=str(tmp_path / "lake"), DAGSTER_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # (seed 130 has false cases: the operator-feedback row shows what marking them does)
    rows = ("champion model", "forecasts", "deviations", "cases opened", "precision", "recall", "operator feedback")
    for row in (*rows, "failed runs", "actuals inside the 80%/95% intervals"):
        assert row in out.stdout, (row, out.stdout)
    assert "iot-lake cases list" in out.stderr
    days = {"2026-11-18", "2026-11-19", "2026-11-20"}
    with DagsterInstance.from_config(str(home)) as instance:

        def partitions(key):
            return instance.get_materialized_partitions(AssetKey(key))

        assert len(partitions(["landing", "telemetry"])) == 72
        assert partitions(["curated", "telemetry"]) == partitions(["landing", "telemetry"])
        for grain in ("1min", "5min"):
            assert partitions(["curated", f"telemetry_{grain}"]) == partitions(["landing", "telemetry"])
        runs = instance.get_run_records()

        def count(job):
            return sum(r.dagster_run.job_name == job for r in runs)

        # Every hourly asset of the chain backfilled its range in one run, not one run per hour.
        assert count("telemetry_hourly_job") == 1
        assert count("forecast_refresh_job") == 1 and count("deviations_job") == 1
        assert count("weather_daily_job") == 1 and count("features_daily_job") == 1
        assert len(partitions(["ml", "batch_forecast"])) == 24
        assert "2026-11-19-23:00" in partitions(["ml", "batch_forecast"])
        # Every landed hour is scored, history too: the series' own channels are warm when forecasts begin.
        assert partitions(["ops", "deviations"]) == partitions(["landing", "telemetry"])
        assert partitions(["ml", "forecast_model"]) == {"2026-11-19"}
        # The features of the two weeks the first training reads (the historian's days before the
        # telemetry's three, issue 21), in one run: devices x metrics x 5-min buckets x telemetry days,
        # less the buckets of injected dropouts, and at most 96 buckets a day of curated history.
        trained = {(date(2026, 11, 6) + timedelta(days=n)).isoformat() for n in range(15)}
        assert partitions(["curated", "features"]) == trained
        # ... with their weather: the provider's past is landed for the historian's days too.
        assert partitions(["curated", "weather"]) == partitions(["landing", "weather"]) == trained
        features = instance.get_latest_materialization_event(AssetKey(["curated", "features"])).asset_materialization
        assert features.metadata["days"].value == 15
        rows = features.metadata["dagster/row_count"].value
        assert 0.95 * 3 * 4 * 4 * 288 <= rows <= 3 * 4 * 4 * 288 + 12 * 4 * 4 * 96
        # Every data-quality check ran in the main job's runs and passed.
        for key in ("telemetry", "telemetry_1min", "telemetry_5min", "weather", "features"):
            check = AssetCheckKey(AssetKey(["curated", key]), "gx_suite")
            latest = instance.event_log_storage.get_asset_check_execution_history(check, limit=1)
            assert latest and latest[0].status.value == "SUCCEEDED", (key, latest)
        curated = instance.get_latest_materialization_event(AssetKey(["curated", "telemetry"])).asset_materialization
        assert curated.metadata["curated_new"].value > 0 and curated.metadata["lines_landed"].value > 0
        # The simulator's bad input is quarantined, and the share of it is in the metadata.
        quarantined, landed = curated.metadata["quarantined"].value, curated.metadata["lines_landed"].value
        rate = curated.metadata["quarantine_rate"].value
        assert rate == pytest.approx(quarantined / landed, abs=1e-6) and 0 < rate < 0.2
        weather = instance.get_latest_materialization_event(AssetKey(["curated", "weather"])).asset_materialization
        rows_read = weather.metadata["rows_read"].value
        assert weather.metadata["quarantine_rate"].value == pytest.approx(
            weather.metadata["quarantined"].value / rows_read, abs=1e-6
        )
        assert partitions(["landing", "device_registry"]) == days
        assert partitions(["landing", "historical_readings"]) == days
        model = instance.get_latest_materialization_event(AssetKey(["ml", "forecast_model"])).asset_materialization
        assert model.metadata["method"].value in ("lightgbm", "seasonal_naive")
        deviations = instance.get_latest_materialization_event(AssetKey(["ops", "deviations"])).asset_materialization
        # Every minute of the three days of every series (less the few the simulator lost).
        assert deviations.metadata["dagster/row_count"].value > 0.9 * 16 * 1440 * 3
    assert (tmp_path / "lake" / "landing" / "_inventory" / "telemetry" / "2026" / "11" / "20" / "23.json").exists()
    assert sorted(p.name for p in (tmp_path / "lake").iterdir() if not p.name.startswith("_")) == sorted(
        ["landing", "curated", "warehouse", "models", "forecasts", "cases", "quarantine", "ops"]
    )
    # The cases reached the case store, the CLI and the warehouse; the forecasts the warehouse too.
    listed = subprocess.run(
        [sys.executable, "-m", "iot_lake.cli", "cases", "list", "--format", "json"],
        cwd=REPO,
        env=_env(IOT_LAKE_ROOT=str(tmp_path / "lake")),
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(listed.stdout)
    assert found and all("2026-11-18" <= c["start"] < "2026-11-21" for c in found)
    import duckdb

    warehouse = next((tmp_path / "lake" / "warehouse").glob("*.duckdb"))
    with duckdb.connect(str(warehouse), read_only=True) as db:
        rows = db.execute("select table_schema, table_name from information_schema.tables").fetchall()
        tables = {name: schema for schema, name in rows}
        n_forecast = db.execute(f"select count(*) from {tables['fct_forecast']}.fct_forecast").fetchone()[0]
        n_case = db.execute(f"select count(*) from {tables['fct_case']}.fct_case").fetchone()[0]
    assert n_forecast > 0 and n_case == len(found)


@dataclass
class DevServer:
    port: int
    project: Path
    lake_root: Path
    log: Path
    tmp: Path


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory) -> DevServer:
    """One `dagster dev` for the module's tests: a copy of the project's control plane, so its
    .dagster/ does not touch the checkout, on the embedded default with a fresh lake."""
    tmp = tmp_path_factory.mktemp("dagster_dev")
    project = tmp / "project"
    copy_control_plane(project)
    server = DevServer(port=free_port(), project=project, lake_root=tmp / "lake", log=tmp / "dagster-dev.log", tmp=tmp)
    with start_dagster_dev(project, _env(IOT_LAKE_ROOT=str(server.lake_root)), server.log, server.port):
        _wait(lambda: served(server.port), 120, "the UI")
        # Without --host, the UI listens on loopback only (docs/production.md).
        import psutil

        bound = {
            c.laddr.ip
            for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == server.port
        }
        assert bound == {"127.0.0.1"}, bound
        yield server


RUNS_QUERY = (
    '{ runsOrError(filter: {pipelineName: "telemetry_hourly_job"}) '
    "{ ... on Runs { results { status tags { key value } } } } }"
)


@pytest.fixture(scope="module")
def sensed_lake(dagster_dev) -> list[dict]:
    """A registry, then new landing objects: the daemon's sensor must notice them and run their
    partition. The run(s) that succeeded."""
    lake = Lake(str(dagster_dev.lake_root))
    sim = Simulator(SimConfig(devices=2, seed=3, history_days=1), lake)
    historian = dagster_dev.tmp / "historian.sqlite"
    sim.seed_historian(f"sqlite:///{historian}", START.date())
    engine = create_engine(f"sqlite:///{historian}")
    land_registry(lake, engine, START.date())
    engine.dispose()
    sim.backfill(START, START + timedelta(hours=1))

    def succeeded():
        runs = _graphql(dagster_dev.port, RUNS_QUERY)["runsOrError"]["results"]
        return [r for r in runs if r["status"] == "SUCCESS"]

    return _wait(succeeded, 180, "the sensor's run to succeed")


def test_dagster_dev_serves_the_ui_and_the_sensor_runs_new_landing_data(dagster_dev, sensed_lake):
    port, project = dagster_dev.port, dagster_dev.project
    nodes = _graphql(port, "{ assetNodes { assetKey { path } groupName } }")["assetNodes"]
    assert {"/".join(n["assetKey"]["path"]) for n in nodes} >= {"landing/telemetry", "landing/weather"}
    assert (project / ".dagster" / "storage").is_dir()  # storage under the project, not a temp dir

    tags = {t["key"]: t["value"] for t in sensed_lake[0]["tags"]}
    mats = _graphql(
        port, '{ assetNodes(assetKeys: [{path: ["curated", "telemetry"]}]) { assetMaterializations { partition } } }'
    )
    assert [m["partition"] for m in mats["assetNodes"][0]["assetMaterializations"]] == ["2026-11-20-00:00"]
    assert tags["dagster/partition"] == "2026-11-20-00:00" and tags["dagster/sensor_name"] == "landing_sensor"
    # The run is persisted in the project's .dagster/, not in dagster dev's scratch directory.
    with sqlite3.connect(project / ".dagster" / "storage" / "history" / "runs.db") as db:
        stored = db.execute("select count(*) from runs where pipeline_name = 'telemetry_hourly_job'").fetchone()[0]
    assert stored >= 1
    # The alert sensors run with the daemon too (and have nothing to say about a run that succeeded).
    sensors = _graphql(
        port,
        '{ sensorsOrError(repositorySelector: {repositoryName: "__repository__", '
        'repositoryLocationName: "iot_lake"}) { ... on Sensors { results { name sensorState '
        "{ status } } } } }",
    )["sensorsOrError"]["results"]
    assert {s["name"]: s["sensorState"]["status"] for s in sensors if s["name"].endswith("_alerts")} == {
        "run_failure_alerts": "RUNNING",
        "check_failure_alerts": "RUNNING",
    }
    events = dagster_dev.lake_root / "cases" / "_events" / "events.jsonl"
    lines = events.read_text().splitlines() if events.exists() else []
    assert [line for line in lines if json.loads(line).get("kind") == "alert"] == []
    assert f"Serving dagster-webserver on http://127.0.0.1:{port}" in dagster_dev.log.read_text()


GROUPS = ("landing", "curated", "ml", "ops", "warehouse", "dashboards")
ARTIFACTS = REPO / "test-artifacts"


def _chromium(binary: str, profile: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on the page until its scripts are idle (or 20 s of virtual time have passed)."""
    sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses to run as root
    return subprocess.run(
        [
            binary,
            "--headless",
            *sandbox,
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--window-size=1600,1000",
            "--virtual-time-budget=20000",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "HOME": str(profile)},
    )


def _graph_labels(dom: str) -> list[str]:
    """The text of the lineage graph's nodes: the SVG's foreignObjects, not the sidebar's tree."""
    return [
        " ".join(re.sub(r"<[^>]+>", " ", m).split())
        for m in re.findall(r"<foreignObject\b.*?</foreignObject>", dom, flags=re.S)
    ]


def test_the_ui_draws_the_asset_graph_with_its_groups(dagster_dev, sensed_lake):
    binary = chromium_binary("the UI screenshot test")
    ARTIFACTS.mkdir(exist_ok=True)
    png = ARTIFACTS / "asset-graph.png"
    png.unlink(missing_ok=True)
    url = f"http://127.0.0.1:{dagster_dev.port}/asset-groups"
    profile = dagster_dev.tmp / "chromium"
    shot = _chromium(binary, profile, url, f"--screenshot={png}")
    assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]
    print(f"asset graph screenshot: {png}")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000  # not a blank page

    dom = _chromium(binary, profile, url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Global asset lineage" in dom.stdout
    # Every group is a node of the drawn graph.
    assert sorted(_graph_labels(dom.stdout)) == sorted(GROUPS), _graph_labels(dom.stdout)


def test_missing_chromium_is_a_visible_skip_locally_and_a_failure_in_ci(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert_skipped_locally_and_failed_in_ci(
        monkeypatch, chromium_binary, skip="chromium not found at /usr/bin/chromium", fail="chromium not found"
    )
