from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.landing.telemetry import OWNERS
from assets.partitions import daily_partitions, days_of
from iot_lake.lake import weather_day_prefix
from iot_lake.sources.weather import land_weather_day, weather_inventory_key
from lib.retries import permanent_errors
from resources.lake import LakeResource

LANDING_WEATHER_KEY = AssetKey(["landing", "weather"])


@asset(
    key=LANDING_WEATHER_KEY,
    partitions_def=daily_partitions,
    # A backfill of many days is one run (with curated/weather's one Spark session), not a run per day.
    backfill_policy=BackfillPolicy.single_run(),
    group_name="landing",
    owners=OWNERS,
    kinds={"s3", "csv", "json"},
    description=(
        "Third-party hourly weather per site, CSV or JSON files dropped under "
        "landing/thirdparty/weather/YYYY/MM/DD/. Each file is validated against the weather schema; "
        "unusable files and out-of-range rows are reported with reasons, never fatal."
    ),
    check_specs=[
        AssetCheckSpec("files_valid", asset=LANDING_WEATHER_KEY, description="Every weather file of the day is usable.")
    ],
)
def landing_weather(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    the_lake = lake.lake()
    days = days_of(context.partition_time_window)
    with permanent_errors(context, "weather landing"):
        results = [land_weather_day(the_lake, day) for day in days]
    files = [f for result in results for f in result.files]
    for f in files:
        if f.errors:
            context.log.warning(f"weather file {f.key}: {'; '.join(f.errors)}")
    sites = sorted({s for result in results for s in result.table.column("site_id").to_pylist()})
    rows = sum(result.table.num_rows for result in results)
    bad_files = sum(len(result.bad_files) for result in results)
    problems = "\n".join(
        f"- `{f.key}` ({'rejected' if not f.ok else 'rows rejected'}): {'; '.join(f.errors)}" for f in files if f.errors
    )
    return MaterializeResult(
        metadata={
            "files": MetadataValue.int(len(files)),
            "bad_files": MetadataValue.int(bad_files),
            "rows": MetadataValue.int(rows),
            "rejected_rows": MetadataValue.int(sum(f.rejected_rows for f in files)),
            "dagster/row_count": MetadataValue.int(rows),
            "sites": MetadataValue.text(", ".join(sites)),
            "days": MetadataValue.int(len(days)),
            "prefix": MetadataValue.path(the_lake.uri(weather_day_prefix(days[0]))),
            "inventory": MetadataValue.path(the_lake.uri(weather_inventory_key(days[0]))),
            "problems": MetadataValue.md(problems or "none"),
        },
        check_results=[
            AssetCheckResult(
                check_name="files_valid",
                passed=not problems,
                severity=AssetCheckSeverity.WARN,
                metadata={
                    "bad_files": MetadataValue.int(bad_files),
                    "problems": MetadataValue.md(problems or "none"),
                },
            )
        ],
    )
