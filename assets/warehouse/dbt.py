"""The warehouse as dbt assets: staging views, dimensions and case facts (unpartitioned), the
microbatch hourly facts (a partition per UTC day, dbt's batch) and the daily device-health mart.

Each dbt source names the Dagster asset that writes its lake table (``meta.dagster.asset_key`` in
models/staging/_sources.yml), so the graph runs landing -> curated -> warehouse in one lineage;
every dbt test is an asset check of the model it tests. A partitioned run passes its time window
to dbt as ``--event-time-start``/``--event-time-end``, widened by the selected models' ``lookback``,
and dbt's microbatch models rebuild that window batch by batch (a range of partitions is one run).

Importing this module builds nothing: ``warehouse_assets()`` reads the manifest and makes the three
``@dbt_assets`` definitions on first call, once per process. Jobs select them with the
``*_SELECTION`` constants, which need neither the manifest nor the asset objects.
"""

# No `from __future__ import annotations`: Dagster checks the assets' parameter annotations as objects.
import functools
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from dagster import AssetExecutionContext, AssetKey, AssetSelection, BackfillPolicy

from assets.partitions import current_day_partitions, daily_partitions
from assets.warehouse.project import dbt_project, manifest
from resources.lake import LakeResource
from resources.warehouse import WarehouseResource, event_time_args

if TYPE_CHECKING:
    from dagster import AssetsDefinition
    from dagster_dbt import DagsterDbtTranslator

OWNERS = ["team:data-platform"]
GROUP = "warehouse"
HOURLY, DAILY = "hourly", "daily"  # dbt tags; dagster-dbt makes each a Dagster tag with value ""

# What the three jobs run, by group and dbt tag (so exactly the three multi-assets' models and
# their tests as checks; tests/test_warehouse.py checks they match the asset definitions).
WAREHOUSE_MODELS_SELECTION = (
    AssetSelection.groups(GROUP) - AssetSelection.tag(HOURLY, "") - AssetSelection.tag(DAILY, "")
)
WAREHOUSE_HOURLY_SELECTION = AssetSelection.groups(GROUP) & AssetSelection.tag(HOURLY, "")
WAREHOUSE_DAILY_SELECTION = AssetSelection.groups(GROUP) & AssetSelection.tag(DAILY, "")

BATCH_SIZES = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


@functools.cache
def translator() -> "DagsterDbtTranslator":
    from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings

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
            return AssetKey([GROUP, dbt_resource_props["name"]])

        def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
            return GROUP

        def get_owners(self, dbt_resource_props: Mapping[str, Any]):
            return OWNERS

    return WarehouseTranslator(
        DagsterDbtTranslatorSettings(enable_asset_checks=True, enable_duplicate_source_asset_keys=True)
    )


@functools.cache
def lookbacks() -> dict[str, timedelta]:
    """Each microbatch model's ``lookback``, as a duration (lookback x batch_size)."""
    out = {}
    for node in manifest()["nodes"].values():
        config = node.get("config") or {}
        if node["resource_type"] == "model" and config.get("incremental_strategy") == "microbatch":
            if config.get("batch_size") not in BATCH_SIZES:
                raise ValueError(
                    f"{node['name']}: batch_size {config.get('batch_size')!r} is not one of {set(BATCH_SIZES)}"
                )
            out[node["name"]] = (config.get("lookback") or 0) * BATCH_SIZES[config["batch_size"]]
    return out


def event_time_window(context: AssetExecutionContext) -> tuple[datetime, datetime] | None:
    """The run's partition window, its start moved back by the longest lookback of the selected
    models. dbt applies ``lookback`` only when it picks the batches itself (from the current time);
    given --event-time-start it starts there, so the lookback is added here."""
    if not context.has_partition_key and not context.has_partition_key_range:
        return None
    window = context.partition_time_window
    back = max(
        (lookbacks().get(key.path[-1], timedelta(0)) for key in context.selected_asset_keys), default=timedelta(0)
    )
    return window.start - back, window.end


def _build(context: AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource):
    catalogued = warehouse.register_lake_tables(lake.lake(), lake.delta_storage_options())
    context.log.info("lake tables catalogued: " + json.dumps(catalogued))
    window = event_time_window(context)
    args = ["build", *(event_time_args(*window) if window else [])]
    with warehouse.dbt() as (dbt, target_path):
        yield from stream_stopping_dbt(
            dbt.cli(
                args,
                context=context,
                manifest=dbt_project().manifest_path,
                dagster_dbt_translator=translator(),
                target_path=target_path,
            )
        )


def stream_stopping_dbt(invocation):
    """The invocation's events; if the step fails before dbt ends, dbt is stopped. dagster-dbt
    leaves the process running when an event cannot be mapped (a node missing from the manifest the
    run loaded) or the consumer goes away, and the orphan holds DuckDB's lock on the warehouse, so
    each retry of the step failed on the lock, not on its cause."""
    try:
        yield from invocation.stream()
    finally:
        if invocation.process.poll() is None:
            invocation.process.kill()
            invocation.process.wait()


@functools.cache
def warehouse_assets() -> list["AssetsDefinition"]:
    """The three dbt multi-assets: ``warehouse_models``, ``warehouse_hourly``, ``warehouse_daily``."""
    from dagster_dbt import dbt_assets

    project = dbt_project()
    common = {"manifest": project.manifest_path, "project": project, "dagster_dbt_translator": translator()}

    @dbt_assets(**common, exclude=f"tag:{HOURLY} tag:{DAILY}", name="warehouse_models")
    def warehouse_models(context: AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource):
        """Staging views over the lake tables, the device snapshot, dimensions and the case facts."""
        yield from _build(context, lake, warehouse)

    @dbt_assets(
        **common,
        select=f"tag:{HOURLY}",
        partitions_def=current_day_partitions,
        backfill_policy=BackfillPolicy.single_run(),
        name="warehouse_hourly",
    )
    def warehouse_hourly(context: AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource):
        """The microbatch hourly facts. A partition is a UTC day, what dbt rebuilds as one batch (the
        day in progress included, rebuilt each hour as its hours arrive); a range of days is one dbt
        run. Hourly partitions recorded 24 materializations and, per test, 24 planned check rows for
        the one batch: most of a long range's run (benchmarks/demo)."""
        yield from _build(context, lake, warehouse)

    @dbt_assets(
        **common,
        select=f"tag:{DAILY}",
        partitions_def=daily_partitions,
        backfill_policy=BackfillPolicy.single_run(),
        name="warehouse_daily",
    )
    def warehouse_daily(context: AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource):
        """The daily device-health mart."""
        yield from _build(context, lake, warehouse)

    return [warehouse_models, warehouse_hourly, warehouse_daily]


def __getattr__(name: str):
    """``warehouse_models``, ``warehouse_hourly``, ``warehouse_daily`` as module attributes, built on
    first access (``from assets.warehouse.dbt import warehouse_hourly`` inside a definitions function)."""
    names = ["warehouse_models", "warehouse_hourly", "warehouse_daily"]
    if name in names:
        return warehouse_assets()[names.index(name)]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
