"""1-/5-minute aggregates on Sail, checked against a full recomputation in pandas."""

from __future__ import annotations

import json
from datetime import UTC, timedelta

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iot_lake.curated.aggregates import AGGREGATE_TABLES, GRAINS, refresh_aggregates
from iot_lake.curated.telemetry_job import CURATED_TELEMETRY, curate_hour
from tests.conftest import HOURS, START


def _frame(lake, key) -> pd.DataFrame:
    return DeltaTable(lake.path(key)).to_pandas()


def _expected(curated: pd.DataFrame, seconds: int) -> pd.DataFrame:
    """Every bucket of the whole curated table, computed independently of Spark."""
    df = curated.copy()
    epoch = df["event_ts"].dt.tz_localize(None).astype("datetime64[us]").astype("int64") // 1_000_000
    df["bucket_start"] = pd.to_datetime(epoch // seconds * seconds, unit="s")
    df = df.sort_values(["event_ts", "message_id"])
    grouped = df.groupby(["device_id", "metric", "bucket_start"])
    out = grouped["value"].agg(readings="count", mean="mean", min="min", max="max", stddev="std", last="last")
    return out.reset_index().sort_values(["device_id", "metric", "bucket_start"]).reset_index(drop=True)


def _actual(lake, grain: str) -> pd.DataFrame:
    df = _frame(lake, AGGREGATE_TABLES[grain])
    df["bucket_start"] = df["bucket_start"].dt.tz_localize(None).astype("datetime64[ns]")
    cols = ["device_id", "metric", "bucket_start", "readings", "mean", "min", "max", "stddev", "last"]
    return df[cols].sort_values(["device_id", "metric", "bucket_start"]).reset_index(drop=True)


def _run_hours(spark, lake, hours):
    for h in hours:
        hour = START + timedelta(hours=h)
        report = curate_hour(spark, lake, hour)
        refresh_aggregates(spark, lake, hour, report.event_dates, CURATED_TELEMETRY)


@pytest.mark.parametrize("grain", list(GRAINS))
def test_incremental_aggregates_equal_a_full_recompute(landed, spark, grain):
    _run_hours(spark, landed, range(HOURS))
    curated = _frame(landed, CURATED_TELEMETRY)
    expected, actual = _expected(curated, GRAINS[grain]), _actual(landed, grain)
    # Late records reopened buckets of earlier hours; incremental refreshes must have updated them.
    assert (curated["event_ts"] < pd.Timestamp(START)).any()
    assert len(actual) == len(expected) > 0
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False, check_exact=False, rtol=1e-9)
    assert actual["readings"].sum() == len(curated)
    # A bucket with one reading has no sample stddev; min <= mean <= max everywhere.
    assert actual.loc[actual["readings"] == 1, "stddev"].isna().all()
    assert ((actual["min"] <= actual["mean"]) & (actual["mean"] <= actual["max"])).all()


def test_rerun_and_out_of_order_hours_give_the_same_tables(landed, spark):
    _run_hours(spark, landed, [2, 0, 1])  # landing hours out of order
    first = {g: _actual(landed, g) for g in GRAINS}
    _run_hours(spark, landed, [1])  # a re-run
    for grain in GRAINS:
        pd.testing.assert_frame_equal(_actual(landed, grain), first[grain])
        expected = _expected(_frame(landed, CURATED_TELEMETRY), GRAINS[grain])
        pd.testing.assert_frame_equal(first[grain], expected, check_dtype=False, check_exact=False, rtol=1e-9)


def test_a_rerun_that_recomputes_the_same_buckets_rewrites_nothing(landed, spark):
    """Unchanged buckets are left as stored: a re-run commits no new version of the aggregate tables
    (updating them rewrote every file they were in); reopened buckets are still updated (above)."""
    _run_hours(spark, landed, range(HOURS))
    versions = {g: DeltaTable(landed.path(AGGREGATE_TABLES[g])).version() for g in GRAINS}
    first = {g: _actual(landed, g) for g in GRAINS}
    _run_hours(spark, landed, [1])
    for grain in GRAINS:
        assert DeltaTable(landed.path(AGGREGATE_TABLES[grain])).version() == versions[grain]
        pd.testing.assert_frame_equal(_actual(landed, grain), first[grain])


def test_five_minute_buckets_roll_up_the_minute_buckets(landed, spark):
    _run_hours(spark, landed, range(HOURS))
    one, five = _actual(landed, "1min"), _actual(landed, "5min")
    one["bucket_start"] = one["bucket_start"].dt.floor("5min")
    one["total"] = one["mean"] * one["readings"]
    rolled = (
        one.groupby(["device_id", "metric", "bucket_start"])
        .agg(readings=("readings", "sum"), min=("min", "min"), max=("max", "max"), total=("total", "sum"))
        .reset_index()
    )
    five["total"] = five["mean"] * five["readings"]
    columns = ["device_id", "metric", "bucket_start", "readings", "min", "max"]
    pd.testing.assert_frame_equal(rolled[columns], five[columns], check_dtype=False)
    assert np.allclose(rolled["total"], five["total"], rtol=1e-9)


def test_aggregates_alone_rebuild_through_dagster(landed, spark):
    """Selecting only the aggregate assets runs the job's aggregate steps over existing curated rows."""
    from dagster import AssetKey, DagsterInstance, materialize

    from assets.curated.telemetry import curated_telemetry
    from resources.lake import LakeResource
    from resources.spark import SparkRunner

    curate_hour(spark, landed, START)
    partition = START.strftime("%Y-%m-%d-%H:%M")
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [curated_telemetry],
            partition_key=partition,
            instance=instance,
            selection=[AssetKey(["curated", "telemetry_1min"]), AssetKey(["curated", "telemetry_5min"])],
            resources={"lake": LakeResource(root=landed.url), "spark": SparkRunner(mode="local")},
        )
        assert result.success
        keys = {m.asset_key.to_user_string(): m for m in result.asset_materializations_for_node("curated_telemetry")}
    assert set(keys) == {"curated/telemetry_1min", "curated/telemetry_5min"}
    curated = _frame(landed, CURATED_TELEMETRY)
    for grain in GRAINS:
        assert keys[f"curated/telemetry_{grain}"].metadata["buckets_written"].value == len(_actual(landed, grain)) > 0
        pd.testing.assert_frame_equal(
            _actual(landed, grain), _expected(curated, GRAINS[grain]), check_dtype=False, check_exact=False, rtol=1e-9
        )


def test_last_is_the_reading_with_the_latest_event_time_then_message_id(spark):
    from datetime import datetime

    from iot_lake.curated.aggregates import aggregate

    t = datetime(2026, 11, 20, 10, 0, 30, tzinfo=UTC)
    rows = [  # (site, unit, value, event time, message id)
        ("site-01", "degC", 1.0, t, "m-b"),
        ("site-02", "degF", 2.0, t, "m-c"),  # tied event time, greatest message id: the last
        ("site-03", "degC", 3.0, t, "m-a"),
        ("site-04", "degC", 4.0, t - timedelta(seconds=20), "m-z"),
    ]
    df = spark.createDataFrame(
        [("dev-0001", "temperature", s, u, v, ts, m) for s, u, v, ts, m in rows],
        "device_id string, metric string, site_id string, unit string, value double, event_ts timestamp, "
        "message_id string",
    )
    (row,) = aggregate(df, 60).collect()
    assert (row["last"], row["site_id"], row["unit"], row["last_ts"]) == (
        2.0,
        "site-02",
        "degF",
        t.replace(tzinfo=None),
    )
    assert (row["readings"], row["min"], row["max"], row["mean"]) == (4, 1.0, 4.0, 2.5)


def test_the_mean_of_equal_readings_is_that_reading(spark):
    """0.1 + 0.1 + 0.1 = 0.30000000000000004: a stuck sensor's mean must not leave [min, max],
    which the blocking GX suite enforces exactly."""
    from datetime import datetime

    from iot_lake.curated.aggregates import aggregate

    t = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    df = spark.createDataFrame(
        [("dev-0001", "temperature", "site-01", "degC", 0.1, t + timedelta(seconds=s), f"m-{s}") for s in (1, 2, 3)],
        "device_id string, metric string, site_id string, unit string, value double, event_ts timestamp, "
        "message_id string",
    )
    assert sum([0.1] * 3) / 3 > 0.1  # what an unclamped mean would store
    (row,) = aggregate(df, 60).collect()
    assert row["min"] == row["mean"] == row["max"] == 0.1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(st.floats(-1e4, 1e4, allow_subnormal=False).map(lambda v: round(v, 3)), min_size=1, max_size=60),
    order=st.randoms(use_true_random=False),
)
def test_the_same_readings_in_any_order_give_the_same_bits(spark, values, order):
    """A re-run reads the same rows in another order (files, partitions, threads): its buckets must
    be bit for bit the ones the first run wrote, or every table downstream (forecasts trained on the
    5-minute means) drifts between runs. Plain avg()/stddev_samp() fail this."""
    from datetime import datetime

    from iot_lake.curated.aggregates import aggregate

    t = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    rows = [
        ("dev-0001", "power", "site-01", "kW", v, t + timedelta(seconds=i), f"m-{i:03}") for i, v in enumerate(values)
    ]
    shuffled = rows[:]
    order.shuffle(shuffled)
    schema = (
        "device_id string, metric string, site_id string, unit string, value double, event_ts timestamp, "
        "message_id string"
    )
    first = aggregate(spark.createDataFrame(rows, schema), 300).collect()
    again = aggregate(spark.createDataFrame(shuffled, schema).repartition(3), 300).collect()
    assert [(r["mean"], r["stddev"]) for r in first] == [(r["mean"], r["stddev"]) for r in again]
    (row,) = first
    assert row["mean"] == pytest.approx(float(np.mean(values)), rel=1e-12, abs=1e-9)
    if len(values) > 1:
        assert row["stddev"] == pytest.approx(float(np.std(values, ddof=1)), rel=1e-9, abs=1e-9)
    else:
        assert row["stddev"] is None


def test_a_refresh_counts_the_later_readings_of_its_last_bucket(tmp_path, spark):
    """The hour's last bucket also holds readings that landed in the next hour (after its latest
    reading): recomputing the bucket must count them."""
    from datetime import datetime

    import pyarrow as pa
    from deltalake import write_deltalake

    from iot_lake.lake import Lake
    from iot_lake.sources.telemetry import inventory_key

    lake = Lake(str(tmp_path))
    hour = datetime(2026, 11, 20, 10, tzinfo=UTC)
    ts = [hour.replace(minute=59, second=10), hour.replace(minute=59, second=50)]
    objects = ["landing/telemetry/2026/11/20/10/a.gz", "landing/telemetry/2026/11/20/11/b.gz"]
    write_deltalake(
        lake.path(CURATED_TELEMETRY),
        pa.table(
            {
                "device_id": ["dev-0001"] * 2,
                "site_id": ["site-01"] * 2,
                "metric": ["power"] * 2,
                "value": [1.0, 3.0],
                "unit": ["kW"] * 2,
                "event_ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
                "message_id": ["m1", "m2"],
                "source_object": objects,
                "event_date": pa.array([hour.date()] * 2, pa.date32()),
            }
        ),
        partition_by=["event_date"],
    )
    lake.write_text(inventory_key(hour), json.dumps({"objects": [{"key": objects[0]}]}))
    refresh_aggregates(spark, lake, hour, [hour.date().isoformat()], CURATED_TELEMETRY)
    for grain in GRAINS:
        (bucket,) = _frame(lake, AGGREGATE_TABLES[grain]).to_dict("records")
        assert (bucket["readings"], bucket["mean"], bucket["last"]) == (2, 2.0, 3.0), grain
