"""A month of history without a month of runs: copies of one hour's rows, shifted back an hour each.

The growth benchmark asks whether an hour costs more when the tables hold 30 days than when they
hold one hour. What matters is the tables' size and layout, not how the rows got there, so the
history is the primed hour's own rows (those whose time lies in it) copied ``hours`` times, the
k-th copy ``k`` hours earlier: every timestamp column moved by k hours, every date column to the
date of its row's time moved as much, partitions included. The rows of earlier hours the primed
hour brought (late records) are dropped first, so every earlier hour is exactly a copy in every
table: no key twice, and the warehouse's tests (uniqueness, facts reconciling with curated) hold.
Rows of later hours (the forecast made for the measured hour) stay. Delta tables get the copies
in a few appends (a compacted month holds few files per day, as after the nightly
delta_maintenance_job); the warehouse's DuckDB tables in one INSERT each.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

CHUNK_HOURS = 72  # copies per Delta commit: a few days


def _is_date(t: pa.DataType) -> bool:
    return pa.types.is_date32(t) or pa.types.is_date64(t)


def in_hour(table: pa.Table, column: str, hour: datetime) -> pa.Table:
    """The rows whose ``column`` lies in [hour, hour + 1 h)."""
    col = table[column]
    lo, hi = pa.scalar(hour, type=col.type), pa.scalar(hour + timedelta(hours=1), type=col.type)
    return table.filter(pc.and_(pc.greater_equal(col, lo), pc.less(col, hi)))


def shifted(table: pa.Table, back: timedelta, hour: datetime) -> pa.Table:
    """``table`` (rows of ``hour``) moved ``back`` earlier: timestamps by ``back``, dates to the date
    of ``hour - back`` plus their own offset from ``hour``'s date."""
    columns = []
    new_day = (hour - back).date()
    for field in table.schema:
        col = table[field.name]
        if pa.types.is_timestamp(field.type):
            col = pc.subtract(col, pa.scalar(back, type=pa.duration(field.type.unit)))
        elif _is_date(field.type):
            # Date columns of an hour's rows are its date (late rows were left out): the copy's date.
            col = pa.array([new_day] * len(table), type=field.type)
        columns.append(col.cast(field.type))
    return pa.Table.from_arrays(columns, schema=table.schema)


def copies(table: pa.Table, hour: datetime, hours: int, chunk: int = CHUNK_HOURS) -> Iterator[pa.Table]:
    """The ``hours`` copies of ``table`` before ``hour``, ``chunk`` of them per table yielded."""
    for first in range(1, hours + 1, chunk):
        yield pa.concat_tables(
            shifted(table, timedelta(hours=k), hour) for k in range(first, min(first + chunk, hours + 1))
        )


def replicate_delta(uri: str, column: str, hour: datetime, hours: int) -> int:
    """Replace the Delta table's rows before ``hour`` by ``hours`` copies of its rows of ``hour``;
    the rows added."""
    from deltalake import DeltaTable, write_deltalake

    dt = DeltaTable(uri)
    everything = dt.to_pyarrow_table()
    rows = in_hour(everything, column, hour)
    partition_by = dt.metadata().partition_columns or None
    kept = everything.filter(pc.greater_equal(everything[column], pa.scalar(hour, type=everything[column].type)))
    write_deltalake(uri, kept, mode="overwrite", partition_by=partition_by)
    added = 0
    for part in copies(rows, hour, hours):
        write_deltalake(uri, part, mode="append", partition_by=partition_by)
        added += part.num_rows
    return added


def replicate_object_counts(uri: str, hour: datetime, hours: int) -> int:
    """``replicate_delta`` for curated/telemetry_object_counts, whose key is the landing object: each
    copy's objects are renamed into its own hour's folder (landing/telemetry/YYYY/MM/DD/HH/...), so an
    object is counted once, as in a month of runs; the rows added."""
    from deltalake import DeltaTable, write_deltalake

    from iot_lake.lake import TELEMETRY_PREFIX

    folder = len(f"{TELEMETRY_PREFIX}/YYYY/MM/DD/HH")
    dt = DeltaTable(uri)
    everything = dt.to_pyarrow_table()
    rows = in_hour(everything, "landing_hour", hour)
    kept = everything.filter(
        pc.greater_equal(everything["landing_hour"], pa.scalar(hour, everything["landing_hour"].type))
    )
    write_deltalake(uri, kept, mode="overwrite", partition_by=["landing_date"])
    added = 0
    for part in copies(rows, hour, hours):
        keys = [
            f"{TELEMETRY_PREFIX}/{h:%Y/%m/%d/%H}{key[folder:]}"
            for key, h in zip(part["source_object"].to_pylist(), part["landing_hour"].to_pylist())
        ]
        part = part.set_column(part.schema.get_field_index("source_object"), "source_object", pa.array(keys))
        write_deltalake(uri, part, mode="append", partition_by=["landing_date"])
        added += part.num_rows
    return added


def replicate_duckdb(database: str, table: str, column: str, hour: datetime, hours: int) -> int:
    """The same for a warehouse table (``schema.name``) in DuckDB, in one INSERT; the rows added."""
    import duckdb

    schema, _, name = table.rpartition(".")
    with duckdb.connect(database) as con:
        types = dict(
            con.execute(
                "select column_name, data_type from information_schema.columns where table_name = ? "
                "and table_schema = coalesce(nullif(?, ''), current_schema())",
                [name, schema],
            ).fetchall()
        )
        replace = []
        for name, kind in types.items():
            quoted = '"' + name.replace('"', '""') + '"'
            if kind.startswith("TIMESTAMP"):
                replace.append(f"{quoted} - k.h * interval 1 hour as {quoted}")
            elif kind == "DATE":
                replace.append(f"cast(cast($hour as timestamp) - k.h * interval 1 hour as date) as {quoted}")
        select = f"select t.* replace ({', '.join(replace)})" if replace else "select t.*"
        time = '"' + column.replace('"', '""') + '"'
        params = {"hour": hour.replace(tzinfo=None)}
        con.execute(f"delete from {table} where {time} < $hour", params)
        before = con.execute(f"select count(*) from {table}").fetchone()[0]
        con.execute(
            f"insert into {table} {select} from {table} t cross join (select range as h from range(1, $n + 1)) k "
            f"where {time} >= $hour and {time} < $hour + interval 1 hour",
            {**params, "n": hours},
        )
        return con.execute(f"select count(*) from {table}").fetchone()[0] - before
