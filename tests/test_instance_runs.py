"""How the instances run runs (dagster.yaml and deploy/dagster.yaml): whole runs are re-executed only
when their worker died (``run_retries``, as an instance built from each file reads it: Dagster re-runs
a failed run whose failure was not a step's own error only when ``retry_on_asset_or_op_failure`` is
off), and landing_sensor's runs go one at a time. The `soak` benchmark kills run workers
under a running daemon while objects land (benchmarks/soak)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ("run_retries", "run_monitoring")


@pytest.fixture(params=["dagster.yaml", "deploy/dagster.yaml"])
def instance(request, tmp_path):
    """A local instance with the file's run retry and monitoring settings (its storage left local)."""
    settings = yaml.safe_load((REPO / request.param).read_text())
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({k: settings[k] for k in SETTINGS if k in settings}))
    with DagsterInstance.from_config(str(tmp_path)) as inst:
        yield inst


def test_a_run_whose_worker_died_is_retried_and_a_step_failure_is_not(instance):
    assert instance.run_monitoring_enabled and instance.run_retries_enabled
    assert instance.run_retries_max_retries >= 3  # a retry can be killed too
    # A step's own error was already retried by its policy (lib/retries.py), or must not be: only a
    # run that failed without one (its worker died, or it never started) is re-executed.
    assert instance.run_retries_retry_on_asset_or_op_failure is False
    assert instance.run_monitoring_start_timeout_seconds <= 300  # a run stuck starting is failed, then retried


def test_landing_sensor_runs_go_one_at_a_time_locally_as_in_production():
    """Two runs of one landing hour at once share its staging directory and race on the aggregates'
    MERGE (benchmarks/soak): the sensor's runs are queued one at a time by either instance file."""
    for name in ("dagster.yaml", "deploy/dagster.yaml"):
        limits = yaml.safe_load((REPO / name).read_text())["concurrency"]["runs"]["tag_concurrency_limits"]
        assert {"key": "dagster/sensor_name", "value": "landing_sensor", "limit": 1} in limits, name
