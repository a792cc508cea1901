"""The hot state (curated/device_state) on Sail: the latest reading per series, checked against the
curated table computed without Spark; late older readings and re-runs leave it unchanged."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
from deltalake import DeltaTable, write_deltalake

from iot_lake.curated.state import DEVICE_STATE, refresh_state, refresh_state_from
from iot_lake.curated.telemetry_job import CURATED_TELEMETRY, curate_hour
from tests.conftest import HOURS, START

COLUMNS = ["device_id", "metric", "site_id", "event_ts", "message_id", "value", "unit"]


def _frame(lake, key) -> pd.DataFrame:
    return DeltaTable(lake.path(key)).to_pandas()


def _state(lake) -> pd.DataFrame:
    return _frame(lake, DEVICE_STATE).sort_values(["device_id", "metric"]).reset_index(drop=True)


def _expected(curated: pd.DataFrame) -> pd.DataFrame:
    """The reading with the greatest (event_ts, message_id) of every series, by pandas."""
    latest = curated.sort_values(["event_ts", "message_id"]).groupby(["device_id", "metric"]).tail(1)
    return latest[COLUMNS].sort_values(["device_id", "metric"]).reset_index(drop=True)


def _run_hours(spark, lake, hours):
    for h in hours:
        hour = START + timedelta(hours=h)
        report = curate_hour(spark, lake, hour)
        refresh_state(spark, lake, hour, report.event_dates, CURATED_TELEMETRY)


def test_state_is_the_latest_reading_of_every_series(landed, spark):
    _run_hours(spark, landed, range(HOURS))
    curated, state = _frame(landed, CURATED_TELEMETRY), _state(landed)
    assert len(state) == curated.groupby(["device_id", "metric"]).ngroups > 1
    pd.testing.assert_frame_equal(state[COLUMNS], _expected(curated), check_dtype=False)
    assert state["updated_at"].notna().all()


def test_hours_out_of_order_and_a_rerun_leave_the_same_state(landed, spark):
    # The last hour first: the earlier hours' readings (late ones included) are all older.
    _run_hours(spark, landed, [HOURS - 1])
    newest = _state(landed)
    _run_hours(spark, landed, range(HOURS - 1))
    after = _state(landed)
    expected = _expected(_frame(landed, CURATED_TELEMETRY))
    pd.testing.assert_frame_equal(after[COLUMNS], expected, check_dtype=False)
    # A series the last hour had is untouched by the older hours, down to its updated_at.
    kept = newest.merge(after, on=["device_id", "metric"], suffixes=("", "_after"))
    assert len(kept) == len(newest) > 0
    assert (kept["event_ts"] == kept["event_ts_after"]).all()
    assert (kept["updated_at"] == kept["updated_at_after"]).all()
    _run_hours(spark, landed, [0, HOURS - 1])  # re-runs
    pd.testing.assert_frame_equal(_state(landed), after)


def test_a_late_older_reading_never_overwrites_a_newer_state(landed, spark):
    """A reading landed after the state moved on, older than it, changes nothing; a newer one wins."""
    _run_hours(spark, landed, range(HOURS))
    before = _state(landed)
    series = before.iloc[0]
    curated = _frame(landed, CURATED_TELEMETRY)
    row = (
        curated[(curated.device_id == series.device_id) & (curated.metric == series.metric)]
        .head(1)
        .reset_index(drop=True)
    )
    # Two readings of the series curated by a later landing object: one an hour older than its state, one newer.
    late = row.assign(
        event_ts=[series.event_ts - timedelta(hours=1)], value=[-999.0], message_id=["late"], source_object=["late"]
    )
    fresh = row.assign(event_ts=[series.event_ts + timedelta(minutes=1)], value=[42.0], message_id=["fresh"])
    fresh = fresh.assign(source_object=["fresh"])
    for df in (late, fresh):
        df["event_date"] = df["event_ts"].dt.date
    write_deltalake(landed.path(CURATED_TELEMETRY), late, mode="append")
    dates = [str(d) for d in late["event_date"]]
    assert refresh_state(spark, landed, [], dates, CURATED_TELEMETRY) == 0  # no hours, nothing read
    assert refresh_state_from(spark, landed, ["late"], dates, CURATED_TELEMETRY) == 1
    pd.testing.assert_frame_equal(_state(landed), before)

    write_deltalake(landed.path(CURATED_TELEMETRY), fresh, mode="append")
    refresh_state_from(spark, landed, ["fresh"], [str(d) for d in fresh["event_date"]], CURATED_TELEMETRY)
    after = _state(landed)
    changed = after[(after.device_id == series.device_id) & (after.metric == series.metric)].iloc[0]
    assert (changed.value, changed.message_id) == (42.0, "fresh")
    others = (after.device_id != series.device_id) | (after.metric != series.metric)
    pd.testing.assert_frame_equal(after[others].reset_index(drop=True), before.iloc[1:].reset_index(drop=True))


def test_the_curated_job_keeps_the_state_through_dagster(landed):
    """Selecting curated telemetry and the hot state runs both steps of the Spark job in one run."""
    from dagster import AssetKey, DagsterInstance, materialize

    from assets.curated.telemetry import curated_telemetry
    from resources.lake import LakeResource
    from resources.spark import SparkRunner

    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [curated_telemetry],
            partition_key=START.strftime("%Y-%m-%d-%H:%M"),
            instance=instance,
            selection=[AssetKey(["curated", "telemetry"]), AssetKey(["curated", "device_state"])],
            resources={"lake": LakeResource(root=landed.url), "spark": SparkRunner(mode="local")},
        )
        assert result.success
        keys = {m.asset_key.to_user_string(): m for m in result.asset_materializations_for_node("curated_telemetry")}
    assert set(keys) == {"curated/telemetry", "curated/device_state"}
    state = _state(landed)
    assert keys["curated/device_state"].metadata["series_refreshed"].value == len(state) > 0
    pd.testing.assert_frame_equal(state[COLUMNS], _expected(_frame(landed, CURATED_TELEMETRY)), check_dtype=False)
