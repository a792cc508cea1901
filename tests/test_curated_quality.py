"""Great Expectations suites as asset checks, on real Delta tables written by the real jobs."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from dagster import AssetCheckSeverity, AssetKey, DagsterInstance, asset, materialize
from deltalake import DeltaTable

from assets.curated.daily import curated_features
from assets.curated.quality import (
    aggregate_expectations,
    quality_checks,
    read_delta,
    run_suite,
    telemetry_expectations,
)
from assets.curated.telemetry import curated_telemetry
from assets.landing.telemetry import landing_telemetry
from assets.partitions import daily_partitions
from iot_lake.curated.aggregates import refresh_aggregates
from iot_lake.curated.telemetry_job import CURATED_TELEMETRY, curate_hour
from iot_lake.sources.historian import registry_key
from resources.lake import LakeResource
from resources.spark import SparkRunner
from tests.conftest import START

METRICS = pd.DataFrame(
    {
        "metric": ["temperature", "pressure"],
        "canonical_unit": ["degC", "kPa"],
        "min_value": [-40.0, 0.0],
        "max_value": [150.0, 2000.0],
    }
)


def _telemetry(**overrides) -> pd.DataFrame:
    ts = pd.date_range(START, periods=4, freq="min", tz="UTC")
    frame = pd.DataFrame(
        {
            "device_id": ["D1"] * 4,
            "site_id": ["S1"] * 4,
            "metric": ["temperature", "temperature", "pressure", "pressure"],
            "value": [20.0, 21.0, 100.0, 101.0],
            "unit": ["degC", "degC", "kPa", "kPa"],
            "event_ts": ts,
            "message_id": ["m1", "m2", "m3", "m4"],
            "event_date": ts.date,
        }
    )
    for column, values in overrides.items():
        frame[column] = values
    frame["event_ts_date"] = frame["event_ts"].dt.date
    return frame


def _check(frame, expectations):
    result = run_suite("test", frame, expectations)
    return result.passed, result.severity, result.metadata


def test_clean_rows_pass():
    passed, _, metadata = _check(_telemetry(), telemetry_expectations(METRICS))
    assert passed and metadata["rows_validated"].value == 4 and metadata["failed_error"].value == 0


@pytest.mark.parametrize(
    "overrides, severity",
    [
        (
            {
                "message_id": ["m1", "m1", "m3", "m4"],
                "event_ts": [pd.Timestamp(START)] * 2 + list(pd.date_range(START, periods=2, freq="min", tz="UTC")),
            },
            AssetCheckSeverity.ERROR,
        ),  # duplicate natural key
        ({"value": [20.0, None, 100.0, 101.0]}, AssetCheckSeverity.ERROR),  # a null value
        ({"metric": ["temperature", "humidity", "pressure", "pressure"]}, AssetCheckSeverity.ERROR),  # unknown metric
        ({"value": [20.0, 21.0, 100.0, 5000.0]}, AssetCheckSeverity.WARN),  # implausible, not broken
    ],
)
def test_defects_fail_with_their_severity(overrides, severity):
    passed, got, metadata = _check(_telemetry(**overrides), telemetry_expectations(METRICS))
    assert not passed and got == severity
    assert "**FAIL**" in metadata["results"].value


def test_aggregate_suite_catches_an_inconsistent_bucket():
    ts = pd.Timestamp(START)
    good = pd.DataFrame(
        {
            "device_id": ["D1"],
            "metric": ["temperature"],
            "bucket_start": [ts],
            "readings": [3],
            "mean": [2.0],
            "min": [1.0],
            "max": [3.0],
            "stddev": [1.0],
            "last": [3.0],
            "last_ts": [ts + pd.Timedelta(seconds=50)],
        }
    )
    assert _check(good, aggregate_expectations())[0]
    bad = good.assign(mean=[5.0])  # mean above max
    passed, severity, _ = _check(bad, aggregate_expectations())
    assert not passed and severity == AssetCheckSeverity.ERROR


def _resources(lake):
    return {"lake": LakeResource(root=lake.url), "spark": SparkRunner(mode="local")}


def test_suites_pass_on_what_the_hourly_job_writes(landed):
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [landing_telemetry, curated_telemetry, *quality_checks],
            instance=instance,
            partition_key=START.strftime("%Y-%m-%d-%H:%M"),
            resources=_resources(landed),
            selection=[
                AssetKey(["landing", "telemetry"]),
                AssetKey(["curated", "telemetry"]),
                AssetKey(["curated", "telemetry_1min"]),
                AssetKey(["curated", "telemetry_5min"]),
            ],
        )
    assert result.success
    evaluations = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    for key in ("curated/telemetry", "curated/telemetry_1min", "curated/telemetry_5min"):
        evaluation = evaluations[(key, "gx_suite")]
        assert evaluation.passed, evaluation.metadata["results"].value
        assert evaluation.metadata["rows_validated"].value > 0
    # The telemetry suite reads only the columns it checks, yet every curated row of the hour's objects.
    curated = DeltaTable(landed.path(CURATED_TELEMETRY)).to_pyarrow_table()
    assert evaluations[("curated/telemetry", "gx_suite")].metadata["rows_validated"].value == curated.num_rows
    one = curated["source_object"][0].as_py()
    dates = sorted({d.as_py() for d in curated["event_date"]})
    rows = read_delta(
        _resources(landed)["lake"],
        CURATED_TELEMETRY,
        "event_date",
        dates,
        ds.field("source_object") == one,
        columns=["device_id", "value"],
    )
    assert list(rows.columns) == ["device_id", "value"]
    assert len(rows) == pc.sum(pc.equal(curated["source_object"], one)).as_py() > 0


def test_a_failing_blocking_suite_stops_downstream_assets(landed, spark):
    for h in range(3):
        hour = START + timedelta(hours=h)
        refresh_aggregates(spark, landed, hour, curate_hour(spark, landed, hour).event_dates, CURATED_TELEMETRY)
    # A registry bug upstream: the historian snapshot lists a device twice, so the feature join doubles rows.
    key = registry_key(START.date(), "devices")
    with landed.open(key) as f:
        devices = pq.read_table(f)
    with landed.open(key, "wb") as f:
        pq.write_table(pa.concat_tables([devices, devices.slice(0, 1)]), f)

    ran = []

    @asset(deps=[curated_features], partitions_def=daily_partitions)
    def forecast_inputs():
        ran.append(True)

    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [curated_features, forecast_inputs, *quality_checks],
            instance=instance,
            partition_key=START.date().isoformat(),
            resources=_resources(landed),
            raise_on_error=False,
            selection=[AssetKey(["curated", "features"]), AssetKey(["forecast_inputs"])],
        )
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "gx_suite")
    assert not evaluation.passed and evaluation.severity == AssetCheckSeverity.ERROR
    assert "| **FAIL** | critical | `expect_compound_columns_to_be_unique`" in evaluation.metadata["results"].value
    assert ran == []  # the blocking check stopped the downstream asset


def test_suites_run_in_a_python_dash_c_process_like_dagsters_step_workers():
    """pyspark-client exits `python -c` processes that import it; GX must not drag it in there."""
    import subprocess
    import sys

    from tests.test_end_to_end import REPO

    code = (
        "from assets.curated.quality import run_suite, aggregate_expectations; import pandas as pd; "
        "r = run_suite('t', pd.DataFrame({'readings': [1]}), aggregate_expectations()); "
        "print('severity', r.severity.value); import pyspark"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "severity ERROR" in out.stdout, out.stderr[-2000:]


@pytest.mark.parametrize(
    "failing, passed, severity",
    [
        ({"critical"}, False, AssetCheckSeverity.ERROR),
        ({"critical", "warning"}, False, AssetCheckSeverity.ERROR),
        ({"warning"}, False, AssetCheckSeverity.WARN),
        ({"info"}, True, AssetCheckSeverity.WARN),  # reported in the table, fails nothing
        (set(), True, AssetCheckSeverity.WARN),
    ],
)
def test_great_expectations_severity_decides_the_check(failing, passed, severity):
    """The check's outcome follows each expectation's own GX severity (critical, warning, info)."""
    from assets.curated.quality import _e

    frame = _telemetry()
    expectations = [
        # value <= 50 fails on the pressure rows (100, 101); value >= 0 always holds.
        _e(
            "ExpectColumnValuesToBeBetween",
            level,
            column="value",
            min_value=0,
            max_value=50 if level in failing else 1e6,
        )
        for level in ("critical", "warning", "info")
    ]
    result = run_suite("severity", frame, expectations)
    assert (result.passed, result.severity) == (passed, severity)
    assert result.metadata["failed_error"].value == int("critical" in failing)
    assert result.metadata["failed_warn"].value == int("warning" in failing)
    for level in ("critical", "warning", "info"):
        assert f"| {level} |" in result.metadata["results"].value
