from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.landing.telemetry import OWNERS
from assets.partitions import daily_partitions
from iot_lake.lake import weather_day_prefix
from iot_lake.sources.weather import land_weather_day, weather_inventory_key
from resources.lake import LakeResource

LANDING_WEATHER_KEY = AssetKey(["landing", "weather"])


@asset(
    key=LANDING_WEATHER_KEY,
    partitions_def=daily_partitions,
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
    day = context.partition_time_window.start.date()
    the_lake = lake.lake()
    result = land_weather_day(the_lake, day)
    for f in result.files:
        if f.errors:
            context.log.warning(f"weather file {f.key}: {'; '.join(f.errors)}")
    sites = sorted(set(result.table.column("site_id").to_pylist()))
    problems = "\n".join(
        f"- `{f.key}` ({'rejected' if not f.ok else 'rows rejected'}): {'; '.join(f.errors)}"
        for f in result.files
        if f.errors
    )
    return MaterializeResult(
        metadata={
            "files": MetadataValue.int(len(result.files)),
            "bad_files": MetadataValue.int(len(result.bad_files)),
            "rows": MetadataValue.int(result.table.num_rows),
            "rejected_rows": MetadataValue.int(sum(f.rejected_rows for f in result.files)),
            "dagster/row_count": MetadataValue.int(result.table.num_rows),
            "sites": MetadataValue.text(", ".join(sites)),
            "prefix": MetadataValue.path(the_lake.uri(weather_day_prefix(day))),
            "inventory": MetadataValue.path(the_lake.uri(weather_inventory_key(day))),
            "problems": MetadataValue.md(problems or "none"),
        },
        check_results=[
            AssetCheckResult(
                check_name="files_valid",
                passed=not problems,
                severity=AssetCheckSeverity.WARN,
                metadata={
                    "bad_files": MetadataValue.int(len(result.bad_files)),
                    "problems": MetadataValue.md(problems or "none"),
                },
            )
        ],
    )
