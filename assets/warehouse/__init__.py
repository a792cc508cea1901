"""Warehouse layer: the dbt project (dbt_project/) as assets downstream of the curated, ML and ops assets."""
