"""Warehouse layer: the dbt project (dbt_project/) as assets downstream of the curated, ML and ops assets.

``warehouse_assets()`` builds the three dbt multi-assets (cached; importing builds nothing); jobs
select them with the ``WAREHOUSE_*_SELECTION`` constants, which need no asset object.
"""

from assets.warehouse.dbt import (
    WAREHOUSE_DAILY_SELECTION,
    WAREHOUSE_HOURLY_SELECTION,
    WAREHOUSE_MODELS_SELECTION,
    warehouse_assets,
)

__all__ = [
    "WAREHOUSE_DAILY_SELECTION",
    "WAREHOUSE_HOURLY_SELECTION",
    "WAREHOUSE_MODELS_SELECTION",
    "warehouse_assets",
]
