"""Freshness policies on the curated layer, evaluated by Dagster's own freshness daemon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dagster import AssetKey, AssetMaterialization, instance_for_test

from tests.dagster_daemons import DaemonWorkspace, freeze_time
from tests.test_end_to_end import REPO

CURATED = AssetKey(["curated", "telemetry"])
FEATURES = AssetKey(["curated", "features"])


def test_curated_assets_go_stale_when_the_feed_stops():
    now = datetime.now(UTC)
    with (
        instance_for_test() as instance,
        DaemonWorkspace.of_module(instance, "definitions", "defs", str(REPO), "iot_lake") as workspace,
    ):

        def _evaluate(at: datetime) -> dict[AssetKey, str]:
            workspace.freshness_iteration(at)
            return workspace.freshness_states([CURATED, FEATURES])

        assert _evaluate(now) == {CURATED: "UNKNOWN", FEATURES: "UNKNOWN"}
        with freeze_time(now):
            instance.report_runless_asset_event(AssetMaterialization(CURATED))
            instance.report_runless_asset_event(AssetMaterialization(FEATURES))
        assert _evaluate(now + timedelta(minutes=30)) == {CURATED: "PASS", FEATURES: "PASS"}
        # The hourly feed stalls: warn after 75 minutes, fail after two hours; the daily table is still fresh.
        assert _evaluate(now + timedelta(minutes=80))[CURATED] == "WARN"
        assert _evaluate(now + timedelta(hours=3)) == {CURATED: "FAIL", FEATURES: "PASS"}
        assert _evaluate(now + timedelta(hours=27))[FEATURES] == "FAIL"
