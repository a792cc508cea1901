"""lib/sqlite_event_log.py: the repo instance's event log reuses each SQLite file's engine, and stores
and reads what Dagster's own SQLite event log does, in the same files."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetKey,
    BackfillPolicy,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    HourlyPartitionsDefinition,
    MaterializeResult,
    asset,
    define_asset_job,
)
from sqlalchemy import event
from sqlalchemy.engine import Engine

from lib.sqlite_event_log import ENGINES_KEPT, EngineKeepingSqliteEventLogStorage, storage_config

REPO = Path(__file__).resolve().parents[1]
HOURS = HourlyPartitionsDefinition(start_date="2026-12-01-00:00")
RANGE = {
    "dagster/asset_partition_range_start": "2026-12-01-00:00",
    "dagster/asset_partition_range_end": "2026-12-01-23:00",
}


@asset(
    partitions_def=HOURS,
    backfill_policy=BackfillPolicy.single_run(),
    check_specs=[AssetCheckSpec("has_hours", asset="hourly_facts")],
)
def hourly_facts(context) -> MaterializeResult:
    """A range of hours in one run: Dagster stores a materialization per hour, and plans its check
    for each hour (as for the dbt tests of the hourly warehouse facts)."""
    hours = len(context.partition_keys)
    return MaterializeResult(
        metadata={"hours": hours}, check_results=[AssetCheckResult(check_name="has_hours", passed=hours > 0)]
    )


JOB = define_asset_job("hourly_job", selection=[hourly_facts])
DEFS = Definitions(assets=[hourly_facts], jobs=[JOB])


def _home(path: Path, storage: dict) -> Path:
    path.mkdir()
    (path / "dagster.yaml").write_text(yaml.safe_dump({**storage, "telemetry": {"enabled": False}}))
    return path


@pytest.fixture
def engines_used():
    """The distinct SQLAlchemy engines that connected to each event-log file (SQLAlchemy's own event)."""
    seen: dict[str, set[int]] = {}

    def on_connect(conn):
        path = conn.engine.url.database or ""
        if f"{os.sep}history{os.sep}runs{os.sep}" in path:
            seen.setdefault(os.path.basename(path), set()).add(id(conn.engine))

    event.listen(Engine, "engine_connect", on_connect)
    yield seen
    event.remove(Engine, "engine_connect", on_connect)


def _run_range(home: Path) -> str:
    with DagsterInstance.from_config(str(home)) as instance:
        result = DEFS.resolve_job_def("hourly_job").execute_in_process(instance=instance, tags=RANGE)
        assert result.success
        return result.run_id


def _materialized(home: Path) -> tuple[set[str], int]:
    """Through Dagster's own SQLite storage (a reader such as the UI): hours, materialization events."""
    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(AssetKey("hourly_facts"), limit=1000).records
        return instance.get_materialized_partitions(AssetKey("hourly_facts")), len(records)


def _check_rows(home: Path) -> list[tuple]:
    """The check's executions as index.db holds them (a planned row per hour, then its evaluation)."""
    with sqlite3.connect(home / "storage" / "history" / "runs" / "index.db") as db:
        query = "SELECT asset_key, check_name, partition, execution_status FROM asset_check_executions"
        return sorted(db.execute(query), key=repr)


def test_the_repo_instance_uses_it_in_the_files_of_dagsters_sqlite_storage():
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    assert "storage" not in config  # Dagster refuses `storage` beside the three entries
    assert {k: config[k] for k in ("run_storage", "event_log_storage", "schedule_storage")} == storage_config(
        ".dagster/storage"
    )


def test_a_range_run_stores_what_dagsters_storage_does_with_one_engine_per_file(tmp_path, engines_used):
    ours = _home(tmp_path / "ours", storage_config(str(tmp_path / "ours" / "storage")))
    theirs = _home(tmp_path / "theirs", {"storage": {"sqlite": {"base_dir": str(tmp_path / "theirs" / "storage")}}})

    run_id = _run_range(ours)
    ours_engines = {file: len(engines) for file, engines in engines_used.items()}
    engines_used.clear()
    _run_range(theirs)
    theirs_engines = {file: len(engines) for file, engines in engines_used.items()}

    # Read back by Dagster's own storage classes: the same files, the same content.
    ours_hours, ours_events = _materialized(ours)
    theirs_hours, theirs_events = _materialized(theirs)
    assert ours_hours == theirs_hours and len(ours_hours) == 24
    assert ours_events == theirs_events == 24
    rows = _check_rows(ours)
    assert rows == _check_rows(theirs)  # the check's rows as Dagster's own storage writes them
    assert {r[2] for r in rows if r[3] == "PLANNED"} == ours_hours  # planned for each hour of the range
    # Upstream builds an engine per connection: dozens for the run's file and index.db each (a
    # materialization and its planned event per hour); ours one per file (and one more for index.db,
    # Dagster's own, when it creates the file at start-up).
    assert set(ours_engines) == {"index.db", f"{run_id}.db"}
    assert ours_engines[f"{run_id}.db"] == 1 and ours_engines["index.db"] <= 2
    assert min(theirs_engines.values()) > 24


def test_the_engines_kept_are_bounded_and_every_run_stays_readable(tmp_path):
    home = _home(tmp_path / "home", storage_config(str(tmp_path / "home" / "storage")))
    with DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, EngineKeepingSqliteEventLogStorage)
        runs = [
            instance.create_run_for_job(DEFS.resolve_job_def("hourly_job"), tags=RANGE) for _ in range(ENGINES_KEPT + 4)
        ]
        for n, run in enumerate(runs):
            instance.report_engine_event(f"event {n}", run)
        assert len(storage._engines) == ENGINES_KEPT
    with DagsterInstance.from_config(str(home)) as instance:
        for n, run in enumerate(runs):
            messages = [
                e.dagster_event.message for e in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)
            ]
            assert messages == [f"event {n}"]


def test_the_class_imports_where_dagster_dev_runs_without_the_repo_on_the_path(tmp_path):
    """The webserver and daemon load dagster.yaml's classes by module name, from the venv alone (the
    project's editable install includes lib)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    home = _home(tmp_path / "home", storage_config(str(tmp_path / "home" / "storage")))
    out = subprocess.run(
        [sys.executable, "-m", "dagster", "instance", "info"],
        cwd=tmp_path,
        env={**env, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "EngineKeepingSqliteEventLogStorage" in out.stdout
