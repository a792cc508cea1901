"""Freshness policies on the curated layer, evaluated by Dagster's own freshness daemon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dagster import AssetKey, AssetMaterialization
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time, instance_for_test
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.freshness import FreshnessDaemon

from tests.test_end_to_end import REPO

CURATED = AssetKey(["curated", "telemetry"])
FEATURES = AssetKey(["curated", "features"])


def test_curated_assets_go_stale_when_the_feed_stops():
    now = datetime.now(UTC)
    target = ModuleTarget(
        module_name="definitions", attribute="defs", working_directory=str(REPO), location_name="iot_lake"
    )
    with instance_for_test() as instance, create_test_daemon_workspace_context(target, instance) as context:

        def _evaluate(instance, at: datetime) -> dict[AssetKey, FreshnessState]:
            with freeze_time(at):
                list(FreshnessDaemon().run_iteration(context))
            records = instance.get_freshness_state_records([CURATED, FEATURES])
            return {key: record.freshness_state for key, record in records.items()}

        assert _evaluate(instance, now) == {CURATED: FreshnessState.UNKNOWN, FEATURES: FreshnessState.UNKNOWN}
        with freeze_time(now):
            instance.report_runless_asset_event(AssetMaterialization(CURATED))
            instance.report_runless_asset_event(AssetMaterialization(FEATURES))
        assert _evaluate(instance, now + timedelta(minutes=30)) == {
            CURATED: FreshnessState.PASS,
            FEATURES: FreshnessState.PASS,
        }
        # The hourly feed stalls: warn after 75 minutes, fail after two hours; the daily table is still fresh.
        assert _evaluate(instance, now + timedelta(minutes=80))[CURATED] == FreshnessState.WARN
        states = _evaluate(instance, now + timedelta(hours=3))
        assert states == {CURATED: FreshnessState.FAIL, FEATURES: FreshnessState.PASS}
        assert _evaluate(instance, now + timedelta(hours=27))[FEATURES] == FreshnessState.FAIL
