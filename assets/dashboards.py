"""The Superset dashboards of dashboards/ as external assets, downstream of the warehouse marts their
charts read, so the lineage shows which dashboards a dbt change reaches. Superset's chart data cache
is keyed by the warehouse file's version (iot_lake/superset_addons.py, docs/dashboards.md), so a dbt
run invalidates it by itself and there is nothing for Dagster to refresh: it materializes none of them."""

from pathlib import Path

import yaml
from dagster import AssetKey, AssetSpec, MetadataValue

from iot_lake.dashboards import DASHBOARDS_DIR

GROUP = "dashboards"
OWNERS = ["team:data-platform"]
# libyaml's safe loader where PyYAML has it: the same documents, ~10x faster than the pure-Python
# one, which took 4-5 s of every definitions load (every run worker under dagster dev, the main job).
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _definitions(folder: Path) -> list[dict]:
    return [yaml.load(path.read_text(), Loader=SAFE_LOADER) for path in sorted(folder.rglob("*.yaml"))]


def dashboard_tables(source: Path = DASHBOARDS_DIR) -> dict[str, tuple[str, list[str]]]:
    """Dashboard slug -> its title and the warehouse tables its charts read."""
    tables = {d["uuid"]: d["table_name"] for d in _definitions(source / "datasets")}
    chart_tables = {c["uuid"]: tables[c["dataset_uuid"]] for c in _definitions(source / "charts")}
    out = {}
    for dashboard in _definitions(source / "dashboards"):
        charts = {
            v["meta"]["uuid"] for v in dashboard["position"].values() if isinstance(v, dict) and v["type"] == "CHART"
        }
        out[dashboard["slug"]] = (dashboard["dashboard_title"], sorted({chart_tables[c] for c in charts}))
    return out


def dashboard_specs(source: Path = DASHBOARDS_DIR) -> list[AssetSpec]:
    return [
        AssetSpec(
            key=AssetKey([GROUP, slug.replace("-", "_")]),
            deps=[AssetKey(["warehouse", table]) for table in tables],
            group_name=GROUP,
            owners=OWNERS,
            kinds={"superset"},
            description=f"The {title} dashboard in Superset (`iot-lake dashboards up`), over {', '.join(tables)}.",
            metadata={"path": MetadataValue.path(f"/superset/dashboard/{slug}/")},
        )
        for slug, (title, tables) in dashboard_tables(source).items()
    ]
