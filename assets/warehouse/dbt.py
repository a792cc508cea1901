"""The warehouse as dbt assets: staging views, dimensions and case facts (unpartitioned), the
incremental hourly facts (the telemetry hourly partitions) and the daily device-health mart.

Each dbt source names the Dagster asset that writes its lake table (``meta.dagster.asset_key`` in
models/staging/_sources.yml), so the graph runs landing -> curated -> warehouse in one lineage;
every dbt test is an asset check of the model it tests. A partitioned run passes its time window
to dbt (``min_ts``/``max_ts``), and the incremental models rebuild exactly that window.
"""

import json
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from dagster import AssetExecutionContext, AssetKey, BackfillPolicy
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, dbt_assets

from assets.partitions import daily_partitions, hourly_partitions
from assets.warehouse.project import dbt_project
from resources.lake import LakeResource
from resources.warehouse import WarehouseResource

OWNERS = ["team:data-platform"]
HOURLY, DAILY = "tag:hourly", "tag:daily"


class WarehouseTranslator(DagsterDbtTranslator):
    """Models and snapshots are ``warehouse/<name>``; sources are the assets their meta names."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            key = (dbt_resource_props.get("meta") or {}).get("dagster", {}).get("asset_key")
            if not key:
                raise ValueError(
                    f"dbt source {dbt_resource_props['unique_id']} names no Dagster asset "
                    "(meta.dagster.asset_key in models/staging/_sources.yml)"
                )
            return AssetKey(key)
        return AssetKey(["warehouse", dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "warehouse"

    def get_owners(self, dbt_resource_props: Mapping[str, Any]):
        return OWNERS


TRANSLATOR = WarehouseTranslator(
    DagsterDbtTranslatorSettings(enable_asset_checks=True, enable_duplicate_source_asset_keys=True)
)


def _window(context: AssetExecutionContext) -> dict[str, str]:
    if not context.has_partition_key and not context.has_partition_key_range:
        return {}
    window = context.partition_time_window
    fmt = "%Y-%m-%d %H:%M:%S"  # naive UTC, as the warehouse keeps timestamps
    return {
        "min_ts": window.start.astimezone(UTC).strftime(fmt),
        "max_ts": window.end.astimezone(UTC).strftime(fmt),
    }


def _build(context: AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource):
    catalogued = warehouse.register_lake_tables(lake.lake(), lake.delta_storage_options())
    context.log.info("lake tables catalogued: " + json.dumps(catalogued))
    with warehouse.dbt(_window(context)) as (dbt, target_path):
        yield from dbt.cli(
            ["build"],
            context=context,
            manifest=dbt_project.manifest_path,
            dagster_dbt_translator=TRANSLATOR,
            target_path=target_path,
        ).stream()


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=TRANSLATOR,
    exclude=f"{HOURLY} {DAILY}",
    name="warehouse_models",
)
def warehouse_models(context: AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource):
    """Staging views over the lake tables, the device snapshot, dimensions and the case facts."""
    yield from _build(context, lake, warehouse)


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=TRANSLATOR,
    select=HOURLY,
    partitions_def=hourly_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    name="warehouse_hourly",
)
def warehouse_hourly(context: AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource):
    """The incremental hourly facts: a range of hours is one dbt run over its window."""
    yield from _build(context, lake, warehouse)


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=TRANSLATOR,
    select=DAILY,
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    name="warehouse_daily",
)
def warehouse_daily(context: AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource):
    """The daily device-health mart."""
    yield from _build(context, lake, warehouse)


warehouse_assets = [warehouse_models, warehouse_hourly, warehouse_daily]
