"""Dagster's daemons, run one iteration at a time in the test process, at a frozen clock.

Two tests need Dagster's own daemons rather than a definition called directly: the freshness
policies as the freshness daemon evaluates them (tests/test_curated_freshness.py), and the landing
sensor under the sensor daemon crashing mid-tick (tests/test_fault_tolerance.py). Dagster has no
public API to run a daemon iteration in process (its own test suite uses these internals), so this
module is the one place in the repository that imports ``dagster._...``: the check in
tests/test_layout.py allows this file and no other. If a Dagster upgrade moves these internals,
only this file changes; the tests speak in public terms (states and statuses as their string values,
tags by their documented names).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from dagster import AssetKey, DagsterInstance
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget, ModuleTarget
from dagster._daemon.freshness import FreshnessDaemon
from dagster._daemon.sensor import execute_sensor_iteration

# A run launcher that records the runs it is asked to launch and runs nothing.
RECORDING_RUN_LAUNCHER = {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"}

__all__ = ["RECORDING_RUN_LAUNCHER", "DaemonWorkspace", "freeze_time"]


class DaemonWorkspace:
    """A code location as the daemon sees it, and one iteration of a daemon over it at a given time."""

    def __init__(self, context: Any, instance: DagsterInstance):
        self._context = context
        self.instance = instance

    @classmethod
    @contextmanager
    def of_module(
        cls, instance: DagsterInstance, module_name: str, attribute: str, working_directory: str, location_name: str
    ) -> Iterator[DaemonWorkspace]:
        """The code location a module's attribute defines, loaded as ``dagster dev`` would."""
        target = ModuleTarget(
            module_name=module_name,
            attribute=attribute,
            working_directory=working_directory,
            location_name=location_name,
        )
        with create_test_daemon_workspace_context(target, instance) as context:
            yield cls(context, instance)

    @classmethod
    @contextmanager
    def in_process(
        cls, instance: DagsterInstance, module_name: str, attribute: str, location_name: str
    ) -> Iterator[DaemonWorkspace]:
        """The code location a module's attribute defines, loaded in this process (no code server)."""
        target = InProcessWorkspaceLoadTarget(
            InProcessCodeLocationOrigin(
                LoadableTargetOrigin(module_name=module_name, attribute=attribute), location_name=location_name
            )
        )
        with create_test_daemon_workspace_context(target, instance) as context:
            yield cls(context, instance)

    def freshness_iteration(self, at: datetime) -> None:
        """One iteration of the freshness daemon: it evaluates every freshness policy at ``at``."""
        with freeze_time(at):
            list(FreshnessDaemon().run_iteration(self._context))

    def freshness_states(self, keys: list[AssetKey]) -> dict[AssetKey, str]:
        """The freshness state the daemon stored per asset: PASS, WARN, FAIL or UNKNOWN."""
        records = self.instance.get_freshness_state_records(keys)
        return {key: record.freshness_state.value for key, record in records.items()}

    def sensor_iteration(self, at: datetime, crash: dict[str, Exception] | None = None, sensor: str = "") -> None:
        """One iteration of the sensor daemon at ``at``. ``crash`` makes it raise at Dagster's debug crash
        points of ``sensor`` (``{"RUN_LAUNCHED": RuntimeError(...)}``: right after the tick's first run)."""
        logger = logging.getLogger("tests.sensor_daemon")
        with freeze_time(at):
            list(
                execute_sensor_iteration(
                    self._context, logger, None, None, debug_crash_flags={sensor: crash} if crash else None
                )
            )

    def tick_statuses(self, sensor: str) -> list[str]:
        """The status of each tick of the named sensor, newest first: SUCCESS, FAILURE, SKIPPED or STARTED."""
        [state] = [s for s in self.instance.all_instigator_state() if s.name == sensor]
        return [t.status.value for t in self.instance.get_ticks(state.instigator_origin_id, state.selector_id)]

    def cursor(self, sensor: str) -> str | None:
        """The cursor the instance stored for the named sensor."""
        [state] = [s for s in self.instance.all_instigator_state() if s.name == sensor]
        return state.instigator_data.cursor if state.instigator_data else None
