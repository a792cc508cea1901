"""The local equivalent of the Glue Data Catalog: views in the warehouse's DuckDB file over the
lake tables' current Parquet files, as delta-rs lists them.

DuckDB's own ``delta`` extension is downloaded at run time, which the embedded default cannot
rely on; delta-rs already knows a version's files, and DuckDB reads Parquet natively. A view is a
snapshot of the file list: it is re-made before every dbt run (a later commit's files, and vacuumed
ones, are only seen then), exactly as the Glue tables' manifests are in prod.
"""

from __future__ import annotations

from pathlib import Path

from iot_lake.lake import Lake
from iot_lake.warehouse.tables import TABLES, TYPES, LakeTable, TableFiles, describe, table_files

LAKE_SCHEMA = "lake"  # the schema dbt's sources read; in Redshift, the Spectrum external schema


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def view_sql(files: TableFiles, schema: str = LAKE_SCHEMA) -> str:
    """CREATE OR REPLACE VIEW for one table: its declared columns, typed, from its current files."""
    table = files.table
    if not files.exists:
        # Not written yet: typed and empty, so models over it build (and say zero rows).
        select = (
            "SELECT "
            + ", ".join(f"CAST(NULL AS {TYPES[c.type]['duckdb']}) AS {_ident(c.name)}" for c in table.columns)
            + " WHERE false"
        )
    else:
        parts = []
        for value, uris in sorted(files.partitions.items()):
            present = files.partition_columns.get(value, files.file_columns)
            cols = [_column(table, c.name, present) for c in table.data_columns]
            if table.partition:
                cols.append(
                    f"CAST({_quote(value)} AS {TYPES[table.partition_column.type]['duckdb']}) "
                    f"AS {_ident(table.partition)}"
                )
            parts.append(
                f"SELECT {', '.join(cols)} FROM read_parquet([{', '.join(map(_quote, uris))}], union_by_name = true)"
            )
        select = "\nUNION ALL\n".join(parts)
    return f"CREATE OR REPLACE VIEW {_ident(schema)}.{_ident(table.name)} AS\n{select}"


def _column(table: LakeTable, name: str, present: dict) -> str:
    column = next(c for c in table.columns if c.name == name)
    if name not in present:
        return f"CAST(NULL AS {TYPES[column.type]['duckdb']}) AS {_ident(name)}"
    if column.type == "timestamp" and getattr(present[name], "tz", None):
        # timezone('UTC', zoned) is naive UTC whatever the reader's session time zone; a CAST is not.
        return f"timezone('UTC', {_ident(name)}) AS {_ident(name)}"
    # An extract's retyped column (text in a numeric one) reads as null, not as a failed query.
    cast = "TRY_CAST" if table.format == "extract" else "CAST"
    return f"{cast}({_ident(name)} AS {TYPES[column.type]['duckdb']}) AS {_ident(name)}"


def register_views(
    lake: Lake, database: str | Path, tables: tuple[LakeTable, ...] = TABLES, schema: str = LAKE_SCHEMA
) -> dict:
    """(Re)make the views of ``tables`` in the DuckDB file ``database``; a summary per table."""
    import duckdb

    listed = {t.name: table_files(lake, t) for t in tables}
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(database)) as con:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(schema)}")
        con.execute("BEGIN")
        for files in listed.values():
            con.execute(view_sql(files, schema))
        con.execute("COMMIT")
    return describe(listed)
