"""The few table operations the Spark jobs do, in the lake's format (Delta) or in plain Parquet.

Delta is the lake's format on every engine: Sail locally, delta-spark on EMR Serverless and Glue.
Parquet exists so the same job code also runs on a classic Spark that has no Delta jars, which is
how tests/test_jvm_parity.py compares Sail with the JVM engine: the table format is then the only
difference. It has no transaction log, so its writes are not atomic and its updates rewrite the
table; it is a stand-in for tests, never a format for the lake.

    table = open_table(spark, lake, "curated/telemetry", partition_by="event_date", table_format="delta")
    if table.exists(): table.insert_new(rows, on=("event_date", "device_id", ...))
    else: table.create(rows)
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from iot_lake.lake import Lake

TABLE_FORMATS = ("delta", "parquet")


@dataclass(frozen=True)
class _Table:
    spark: object
    lake: Lake
    key: str
    partition_by: str | None  # None: unpartitioned (a small table such as the hot state)

    @property
    def uri(self) -> str:
        return self.lake.uri(self.key)

    def _partitioned(self, writer):
        return writer.partitionBy(self.partition_by) if self.partition_by else writer


class SparkDeltaTable(_Table):
    def exists(self) -> bool:
        return self.lake.exists(f"{self.key}/_delta_log")

    def read(self):
        return self.spark.read.format("delta").load(self.uri)

    def create(self, df) -> None:
        self._partitioned(df.write.format("delta")).save(self.uri)

    def insert_new(self, df, on: Sequence[str], partitions: Sequence[date | str] = ()) -> None:
        """Insert the rows of ``df`` whose ``on`` columns match no row of the table. ``partitions``:
        the dates of the partition column every row of ``df`` lies in (see ``_merge``)."""
        # MERGE, not append: a concurrent run writing the same rows still cannot insert one twice.
        self._merge(df, on, "WHEN NOT MATCHED THEN INSERT *", partitions)

    def upsert(self, df, on: Sequence[str], partitions: Sequence[date | str] = (), compare: Sequence[str] = ()) -> None:
        """Rows of ``df`` replace the table's rows with the same ``on`` columns; the others are inserted.
        ``compare``: a matched row whose columns all equal these of its replacement (null-safe) is
        left as it is, the same table: a re-run that recomputes the same rows then commits nothing,
        where updating them rewrote every file they were in (a day's, in a daily partition)."""
        changed = " OR ".join(f"NOT (t.{c} <=> s.{c})" for c in compare)
        matched = f"WHEN MATCHED AND ({changed}) THEN UPDATE SET *" if compare else "WHEN MATCHED THEN UPDATE SET *"
        self._merge(df, on, f"{matched} WHEN NOT MATCHED THEN INSERT *", partitions)

    def merge_newer(self, df, on: Sequence[str], newer: str) -> None:
        """Like ``upsert``, but a row of ``df`` replaces a matching row only where the SQL predicate
        ``newer`` (over ``t``, the table's row, and ``s``, the new one) is true."""
        self._merge(df, on, f"WHEN MATCHED AND ({newer}) THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *")

    def delete_matching(self, df, on: Sequence[str], partitions: Sequence[date | str] = ()) -> None:
        """Delete the table's rows whose ``on`` columns match a row of ``df``."""
        self._merge(df, on, "WHEN MATCHED THEN DELETE", partitions)

    def replace(self, df, where: str) -> None:
        """The table's rows for which the SQL predicate ``where`` is true become the rows of ``df``."""
        # delta-spark keeps a row whose predicate is NULL (as DELETE does); Sail 0.7 deletes it.
        # IS TRUE makes every engine keep it.
        df.write.format("delta").mode("overwrite").option("replaceWhere", f"({where}) IS TRUE").save(self.uri)

    def _merge(self, df, on: Sequence[str], clauses: str, partitions: Sequence[date | str] = ()) -> None:
        view = "merge_source_" + re.sub(r"\W", "_", self.key)
        df.createOrReplaceTempView(view)
        # The columns are the job's own constants; the path is quoted (a backtick is doubled).
        condition = " AND ".join(f"t.{c} = s.{c}" for c in on)
        if partitions and self.partition_by:
            # A literal on the table's side: the engine matches against those partitions' files only.
            # Joined on the partition column alone, it read every file of the table, so an hour's
            # MERGE grew with the history (benchmarks/growth).
            days = ", ".join(
                f"date'{date.fromisoformat(str(d)):%Y-%m-%d}'" for d in sorted({str(d) for d in partitions})
            )
            condition += f" AND t.{self.partition_by} IN ({days})"
        path = self.uri.replace("`", "``")
        self.spark.sql(f"MERGE INTO delta.`{path}` t USING {view} s ON {condition} {clauses}").collect()


class SparkParquetTable(_Table):
    def exists(self) -> bool:
        # Data files and partition folders appear when a write commits; until then the folder
        # holds only hidden ones (_temporary/); Sail writes no _SUCCESS marker to go by.
        path = self.lake.path(self.key)
        return self.lake.fs.isdir(path) and any(
            not posixpath.basename(p.rstrip("/")).startswith(("_", ".")) for p in self.lake.fs.ls(path, detail=False)
        )

    def read(self):
        return self.spark.read.parquet(self.uri)

    def create(self, df) -> None:
        # Overwrite: whatever is there was left by a write that never committed.
        self._partitioned(df.write.mode("overwrite")).parquet(self.uri)

    # ``partitions`` is only a pruning hint for Delta's MERGE: a Parquet table is rewritten whole anyway.
    def insert_new(self, df, on: Sequence[str], partitions: Sequence[date | str] = ()) -> None:
        new = df.join(self.read().select(*on), list(on), "left_anti")
        self._partitioned(new.write.mode("append")).parquet(self.uri)

    def upsert(self, df, on: Sequence[str], partitions: Sequence[date | str] = (), compare: Sequence[str] = ()) -> None:
        # The same rows either way: an unchanged row replaced by its equal (``compare`` saves Delta the rewrite).
        self._rewrite(self.read().join(df.select(*on), list(on), "left_anti"), df)

    def merge_newer(self, df, on: Sequence[str], newer: str) -> None:
        from pyspark.sql import functions as F

        current = self.read()
        condition = [F.col(f"s.{c}") == F.col(f"t.{c}") for c in on]
        matched = df.alias("s").join(current.alias("t"), condition, "left")
        winners = matched.where(F.col(f"t.{on[0]}").isNull() | F.expr(newer)).select("s.*")
        self._rewrite(current.join(winners.select(*on), list(on), "left_anti"), winners)

    def delete_matching(self, df, on: Sequence[str], partitions: Sequence[date | str] = ()) -> None:
        kept = self.read().join(df.select(*on).distinct(), list(on), "left_anti")
        self._rewrite(kept, kept.limit(0))

    def replace(self, df, where: str) -> None:
        self._rewrite(self.read().where(f"NOT (({where}) IS TRUE)"), df)

    def _rewrite(self, kept, df) -> None:
        # Parquet files cannot lose rows, so the whole table is rewritten. Spark refuses to overwrite
        # files its plan still reads: write beside the table, then swap (not atomic).
        folder, name = posixpath.split(self.key)
        scratch = posixpath.join(folder, f"_{name}_rewrite")
        self._partitioned(kept.unionByName(df).write.mode("overwrite")).parquet(self.lake.uri(scratch))
        self.lake.delete(self.key, recursive=True)
        self.lake.move_files(self.lake.fs.find(self.lake.path(scratch)), scratch, self.key)
        self.lake.delete(scratch, recursive=True)


# Spark SQL type names of the Arrow types the curated jobs' parsed rows use (mapInArrow's output schema).
_DDL_TYPES = {
    "string": "string",
    "double": "double",
    "int64": "bigint",
    "date32[day]": "date",
    "timestamp[us, tz=UTC]": "timestamp",
}


def ddl(schema) -> str:
    """A pyarrow schema as the DDL string Spark's mapInArrow takes for its output."""
    return ", ".join(f"{f.name} {_DDL_TYPES[str(f.type)]}" for f in schema)


def staged(spark, df, uri: str):
    """Write an intermediate result once and read it back, so later steps do not recompute it."""
    # Snappy: staging lives for one run, so writing fast beats the lake's denser default codec.
    df.write.mode("overwrite").option("compression", "snappy").parquet(uri)
    back = spark.read.parquet(uri)
    # Sail writes an empty result as no file, which reads back without columns. (Reading with the
    # schema instead would type its timestamps by the session time zone, not as the files have them,
    # and Sail's Delta writes then refuse to mix the two.)
    return back if back.columns else spark.createDataFrame([], df.schema)


def open_table(
    spark, lake: Lake, key: str, partition_by: str | None, table_format: str = "delta"
) -> SparkDeltaTable | SparkParquetTable:
    if table_format == "delta":
        return SparkDeltaTable(spark, lake, key, partition_by)
    if table_format == "parquet":
        return SparkParquetTable(spark, lake, key, partition_by)
    raise ValueError(f"unknown table format {table_format!r}; expected one of {', '.join(TABLE_FORMATS)}")
