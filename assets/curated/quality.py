"""Great Expectations suites on the curated Delta tables, run as Dagster asset checks.

Each asset gets one check running one suite over the slice of the table the partition wrote
(read with delta-rs in the Dagster process). Every expectation carries Great Expectations' own
``severity``: a "critical" expectation failing fails the check with ERROR severity, which, the
checks being blocking, stops downstream assets of the run; only "warning" expectations failing give
a WARN; an "info" one failing is reported in the check's table and fails nothing.

Great Expectations takes seconds to import, so it is imported inside the checks only, never
when the definitions load.
"""

import json
import sys
import warnings
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    MetadataValue,
    asset_check,
)

from assets.curated.daily import CURATED_FEATURES_KEY, CURATED_WEATHER_KEY
from assets.curated.telemetry import AGGREGATE_KEYS, CURATED_TELEMETRY_KEY
from assets.landing.telemetry import partition_hours
from assets.partitions import daily_partitions, hourly_partitions
from iot_lake.sources.historian import latest_registry_day, registry_key
from iot_lake.sources.telemetry import inventoried_keys, inventory_key
from iot_lake.sources.weather import RANGES
from resources.lake import LakeResource

# Partitioned checks (a result per partition in the UI) are a preview feature of Dagster 1.13.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec is currently in preview")

# Great Expectations' FailureSeverity values (great_expectations.expectations.metadata_types), as
# strings so the definitions never import Great Expectations.
ERROR, WARN, INFO = "critical", "warning", "info"
LATE_DAYS = 1  # records landed in an hour are checked in their event dates back to the day before


def read_delta(
    lake: LakeResource,
    key: str,
    partition_column: str,
    dates: Sequence[date],
    row_filter: pc.Expression | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Rows of a Delta table in some date partitions, through delta-rs (no Spark in the Dagster process);
    only ``columns`` if given (the filter may use others)."""
    from deltalake import DeltaTable

    the_lake = lake.lake()
    if not the_lake.exists(f"{key}/_delta_log"):
        return pd.DataFrame()
    table = DeltaTable(the_lake.uri(key), storage_options=lake.delta_storage_options())
    dataset = table.to_pyarrow_dataset(
        file_pruning_predicate=[(partition_column, "in", [d.isoformat() for d in dates])]
    )
    return dataset.to_table(columns=None if columns is None else list(columns), filter=row_filter).to_pandas()


def registry_metrics(lake: LakeResource, day: date) -> pd.DataFrame:
    """The registry's metrics with their canonical unit and widest physical range over devices."""
    the_lake = lake.lake()
    snapshot = latest_registry_day(the_lake, day)
    if snapshot is None:
        return pd.DataFrame(columns=["metric", "canonical_unit", "min_value", "max_value"])
    with the_lake.open(registry_key(snapshot, "device_metrics")) as f:
        metrics = pq.read_table(f).to_pandas()
    return metrics.groupby(["metric", "canonical_unit"], as_index=False).agg(
        min_value=("min_value", "min"), max_value=("max_value", "max")
    )


def import_gx():
    """Great Expectations, imported without its optional Spark support.

    GX probes pyspark on import; pyspark-client (installed for Sail) takes a `python -c` process,
    which is what Dagster's step workers are, for a doctest run and exits it. The suites validate
    pandas frames, so GX is imported with pyspark hidden, and pyspark stays importable afterwards.
    """
    if "great_expectations" in sys.modules or "pyspark" in sys.modules:
        import great_expectations

        return great_expectations
    sys.modules["pyspark"] = None  # type: ignore[assignment]  # makes `import pyspark` raise ImportError
    try:
        import great_expectations
    finally:
        del sys.modules["pyspark"]
    return great_expectations


def run_suite(name: str, frame: pd.DataFrame, expectations: list) -> AssetCheckResult:
    """Validate a DataFrame with an ephemeral GX context; summarise per expectation."""
    gx = import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # Progress bars would interleave with Dagster's logs (and the main job's own progress bar).
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = (
        context.data_sources.add_pandas(name)
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe("partition")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    validation = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    with warnings.catch_warnings():
        # GX reads tz-aware columns through Series.values, which pandas 3 deprecates; the result is unaffected.
        warnings.filterwarnings("ignore", message="Series.values returning an ndarray that drops timezone")
        result = validation.run(batch_parameters={"dataframe": frame})

    rows, failed = [], {ERROR: 0, WARN: 0, INFO: 0}
    for r in result.results:
        config = r.expectation_config
        severity = str(getattr(config.severity, "value", config.severity))
        if not r.success:
            failed[severity] += 1
        kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id",)}
        unexpected = r.result.get("unexpected_count", r.result.get("observed_value", ""))
        rows.append(
            f"| {'pass' if r.success else '**FAIL**'} | {severity} | `{config.type}` | "
            f"`{json.dumps(kwargs, default=str)[:120]}` | {unexpected} |"
        )
    table = "| result | severity | expectation | arguments | unexpected |\n|---|---|---|---|---|\n" + "\n".join(rows)
    return AssetCheckResult(
        passed=not (failed[ERROR] or failed[WARN]),
        severity=AssetCheckSeverity.ERROR if failed[ERROR] else AssetCheckSeverity.WARN,
        metadata={
            "rows_validated": MetadataValue.int(len(frame)),
            "expectations": MetadataValue.int(len(rows)),
            "failed_error": MetadataValue.int(failed[ERROR]),
            "failed_warn": MetadataValue.int(failed[WARN]),
            "results": MetadataValue.md(table),
        },
    )


def _e(name: str, severity: str = ERROR, **kwargs: Any):
    return getattr(import_gx().expectations, name)(severity=severity, **kwargs)


def _not_null(*columns: str, severity: str = ERROR, **kwargs: Any) -> list:
    return [_e("ExpectColumnValuesToNotBeNull", severity, column=c, **kwargs) for c in columns]


# The curated telemetry columns the suite checks, and all it reads: the others (reported value and
# unit, ingestion time, source object) added ~250 MiB to the suite's peak on the 2M-row hour of
# benchmarks.curate, where the suite held the run's peak memory.
TELEMETRY_CHECKED = ("device_id", "site_id", "metric", "value", "unit", "event_ts", "message_id", "event_date")


def telemetry_expectations(metrics: pd.DataFrame) -> list:
    import_gx()
    from great_expectations.expectations.row_conditions import Column

    out = [
        *_not_null(*TELEMETRY_CHECKED),
        _e("ExpectCompoundColumnsToBeUnique", column_list=["device_id", "metric", "event_ts", "message_id"]),
        _e("ExpectColumnValuesToBeInSet", column="metric", value_set=sorted(metrics["metric"])),
        _e("ExpectColumnValuesToBeInSet", column="unit", value_set=sorted(set(metrics["canonical_unit"]))),
        _e("ExpectColumnPairValuesToBeEqual", column_A="event_date", column_B="event_ts_date"),
    ]
    for m in metrics.itertuples():
        out.append(
            _e(
                "ExpectColumnValuesToBeBetween",
                WARN,
                column="value",
                min_value=m.min_value,
                max_value=m.max_value,
                row_condition=Column("metric") == m.metric,
            )
        )
    return out


def aggregate_expectations() -> list:
    return [
        *_not_null("device_id", "metric", "bucket_start", "readings", "mean", "min", "max", "last", "last_ts"),
        _e("ExpectCompoundColumnsToBeUnique", column_list=["device_id", "metric", "bucket_start"]),
        _e("ExpectColumnValuesToBeBetween", column="readings", min_value=1),
        _e("ExpectColumnPairValuesAToBeGreaterThanB", column_A="max", column_B="mean", or_equal=True),
        _e("ExpectColumnPairValuesAToBeGreaterThanB", column_A="mean", column_B="min", or_equal=True),
        _e("ExpectColumnPairValuesAToBeGreaterThanB", column_A="last_ts", column_B="bucket_start", or_equal=True),
        _e("ExpectColumnValuesToBeBetween", column="stddev", min_value=0),
    ]


def weather_expectations() -> list:
    return [
        *_not_null("site_id", "observed_at", *RANGES),
        _e("ExpectCompoundColumnsToBeUnique", column_list=["site_id", "observed_at"]),
        *(_e("ExpectColumnValuesToBeBetween", column=c, min_value=lo, max_value=hi) for c, (lo, hi) in RANGES.items()),
        _e("ExpectTableRowCountToBeBetween", WARN, min_value=1),
    ]


def features_expectations() -> list:
    return [
        *_not_null("device_id", "metric", "bucket_start", "mean", "hour_of_day", "day_of_week", "event_date"),
        _e("ExpectCompoundColumnsToBeUnique", column_list=["device_id", "metric", "bucket_start"]),
        _e("ExpectColumnValuesToBeBetween", column="hour_of_day", min_value=0, max_value=23),
        _e("ExpectColumnValuesToBeBetween", column="local_hour", min_value=0, max_value=23),
        # Gaps in third-party weather or in the registry degrade forecasts but must not stop them.
        *_not_null("temperature_c", severity=WARN, mostly=0.9),
        *_not_null("model", "site_id", "latitude", severity=WARN),
    ]


def _dates_back(first: date, last: date, days: int = LATE_DAYS) -> list[date]:
    return [first - timedelta(days=days) + timedelta(days=i) for i in range((last - first).days + days + 1)]


def _landed_keys(lake: LakeResource, hours: list[datetime]) -> list[str]:
    the_lake = lake.lake()
    keys = []
    for hour in hours:
        if the_lake.exists(inventory_key(hour)):
            keys += inventoried_keys(the_lake, hour)
    return keys


@asset_check(
    asset=CURATED_TELEMETRY_KEY,
    name="gx_suite",
    blocking=True,
    partitions_def=hourly_partitions,
    description="Great Expectations suite on the curated rows the hour's landing objects produced.",
)
def curated_telemetry_suite(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
    hours = partition_hours(context)
    keys = _landed_keys(lake, hours)
    rows = read_delta(
        lake,
        "curated/telemetry",
        "event_date",
        _dates_back(hours[0].date(), hours[-1].date()),
        ds.field("source_object").isin(pa.array(keys or [""], pa.string())),
        columns=TELEMETRY_CHECKED,
    )
    if not rows.empty:
        rows["event_ts_date"] = rows["event_ts"].dt.date
    return run_suite("curated_telemetry", rows, telemetry_expectations(registry_metrics(lake, hours[-1].date())))


def _aggregate_suite(grain: str) -> Callable:
    @asset_check(
        asset=AGGREGATE_KEYS[grain],
        name="gx_suite",
        blocking=True,
        partitions_def=hourly_partitions,
        description=f"Great Expectations suite on the {grain} buckets of the hour and the hour before.",
    )
    def suite(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
        hours = partition_hours(context)
        start, end = hours[0] - timedelta(hours=1), hours[-1] + timedelta(hours=1)
        rows = read_delta(
            lake,
            f"curated/telemetry_{grain}",
            "event_date",
            _dates_back(hours[0].date(), end.date()),
            (ds.field("bucket_start") >= pa.scalar(start)) & (ds.field("bucket_start") < pa.scalar(end)),
        )
        return run_suite(f"curated_telemetry_{grain}", rows, aggregate_expectations())

    suite.__name__ = f"curated_telemetry_{grain}_suite"
    return suite


def _daily_suite(key: AssetKey, partition_column: str, expectations: Callable[[], list], description: str):
    @asset_check(asset=key, name="gx_suite", blocking=True, partitions_def=daily_partitions, description=description)
    def suite(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
        day = context.partition_time_window.start.date()
        return run_suite(
            "_".join(key.path), read_delta(lake, "/".join(key.path), partition_column, [day]), expectations()
        )

    suite.__name__ = f"{'_'.join(key.path)}_suite"
    return suite


quality_checks = [
    curated_telemetry_suite,
    *(_aggregate_suite(grain) for grain in AGGREGATE_KEYS),
    _daily_suite(
        CURATED_WEATHER_KEY,
        "observed_date",
        weather_expectations,
        "Great Expectations suite on the day's curated weather.",
    ),
    _daily_suite(
        CURATED_FEATURES_KEY,
        "event_date",
        features_expectations,
        "Great Expectations suite on the day's feature rows; weather and registry gaps only warn.",
    ),
]
