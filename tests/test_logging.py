"""The data plane logs with the standard library; Dagster's managed Python loggers carry those lines
into the run's event log (dagster.yaml and deploy/dagster.yaml, ``python_logs``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dagster import asset, instance_for_test, materialize

from iot_lake.cases.sinks import LogSink, OutboxEvent

REPO = Path(__file__).resolve().parents[1]
KEY = "dev-001/temperature/20261120T1000"


def _python_logs(path: str) -> dict:
    return yaml.safe_load((REPO / path).read_text())["python_logs"]


@asset
def delivers_a_case_event() -> None:
    payload = {"device_id": "dev-001", "metric": "temperature", "site_id": "site-a", "severity": "high"}
    LogSink().deliver(OutboxEvent(id=1, case_key=KEY, event="opened", payload={**payload, "status": "open"}))


def _messages(overrides: dict) -> list[str]:
    with instance_for_test(overrides=overrides) as instance:
        result = materialize([delivers_a_case_event], instance=instance)
        assert result.success
        return [record.user_message for record in instance.all_logs(result.run_id)]


def test_local_and_production_instances_manage_the_data_planes_loggers():
    local = _python_logs("dagster.yaml")
    assert local == _python_logs("deploy/dagster.yaml")
    assert "iot_lake" in local["managed_python_loggers"]


@pytest.mark.parametrize("managed", [True, False])
def test_a_data_plane_log_line_reaches_the_runs_event_log(managed):
    overrides = {"python_logs": _python_logs("dagster.yaml")} if managed else {}
    case_lines = [m for m in _messages(overrides) if KEY in m]
    if managed:
        assert case_lines and "case opened" in case_lines[0] and "dev-001 temperature" in case_lines[0]
    else:  # what the setting changes: without it the line never reaches the event log
        assert case_lines == []
