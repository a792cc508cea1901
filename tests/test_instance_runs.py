"""How the instances run runs (dagster.yaml and deploy/dagster.yaml): whole runs are re-executed only
when their worker died (``run_retries``, judged by Dagster's own retry decision on an instance built
from each file), and landing_sensor's runs go one at a time. The `soak` benchmark kills run workers
under a running daemon while objects land (benchmarks/soak)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.events import RunFailureReason
from dagster._core.execution.retries import auto_reexecution_should_retry_run
from dagster._core.storage.dagster_run import DagsterRun

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ("run_retries", "run_monitoring")


@pytest.fixture(params=["dagster.yaml", "deploy/dagster.yaml"])
def instance(request, tmp_path):
    """A local instance with the file's run retry and monitoring settings (its storage left local)."""
    settings = yaml.safe_load((REPO / request.param).read_text())
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({k: settings[k] for k in SETTINGS if k in settings}))
    with DagsterInstance.from_config(str(tmp_path)) as inst:
        yield inst


def _failed_run(instance: DagsterInstance):
    return instance.add_run(DagsterRun(job_name="telemetry_hourly_job", status=DagsterRunStatus.FAILURE))


def test_a_run_whose_worker_died_is_retried_and_a_step_failure_is_not(instance):
    assert instance.run_monitoring_enabled and instance.run_retries_enabled
    assert instance.run_retries_max_retries >= 3  # a retry can be killed too
    run = _failed_run(instance)
    # The code server fails a run whose process died without a step failure reason.
    assert auto_reexecution_should_retry_run(instance, run, None)
    assert auto_reexecution_should_retry_run(instance, run, RunFailureReason.RUN_WORKER_RESTART)
    # A step's own error was already retried by its policy (lib/retries.py), or must not be.
    assert not auto_reexecution_should_retry_run(instance, run, RunFailureReason.STEP_FAILURE)


def test_landing_sensor_runs_go_one_at_a_time_locally_as_in_production():
    """Two runs of one landing hour at once share its staging directory and race on the aggregates'
    MERGE (benchmarks/soak): the sensor's runs are queued one at a time by either instance file."""
    for name in ("dagster.yaml", "deploy/dagster.yaml"):
        limits = yaml.safe_load((REPO / name).read_text())["concurrency"]["runs"]["tag_concurrency_limits"]
        assert {"key": "dagster/sensor_name", "value": "landing_sensor", "limit": 1} in limits, name
