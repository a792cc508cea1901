"""``python -m iot_lake.warehouse [LAKE_ROOT] [--database PATH]``: refresh the lake views of the
local warehouse file, as every Dagster run of the dbt project does first (for dbt by hand)."""

from __future__ import annotations

import argparse
import json

from iot_lake.lake import Lake
from iot_lake.settings import local_warehouse_path
from iot_lake.warehouse.duckdb_views import register_views


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lake", nargs="?", default=".lake", help="local lake root (default .lake)")
    parser.add_argument("--database", help="DuckDB file (default <lake>/warehouse/iot_lake.duckdb)")
    args = parser.parse_args(argv)
    lake = Lake(args.lake)
    if not lake.is_local:
        parser.error("the local warehouse reads a local lake; in prod the Glue catalog is refreshed by Dagster")
    database = args.database or local_warehouse_path(lake.base)
    print(json.dumps({"database": database, "tables": register_views(lake, database)}, indent=2))


if __name__ == "__main__":
    main()
