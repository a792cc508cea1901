"""Warehouse layer: the dbt project (dbt_project/) as assets downstream of the curated, ML and ops assets."""

from assets.warehouse.dbt import warehouse_assets

__all__ = ["warehouse_assets"]
