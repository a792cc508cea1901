"""The table operations mean the same in both formats (here on Sail; on classic Spark in test_jvm_parity)."""

from __future__ import annotations

import pytest

from iot_lake.lake import Lake
from iot_lake.spark.tables import open_table

SCHEMA = "k int, v string, part string"


@pytest.mark.parametrize("table_format", ["delta", "parquet"])
def test_create_insert_new_upsert_and_replace(tmp_path, spark, table_format):
    table = open_table(spark, Lake(str(tmp_path)), "curated/t", "part", table_format)

    def rows():
        return sorted((r["k"], r["v"], r["part"]) for r in table.read().collect())

    assert not table.exists()
    table.create(spark.createDataFrame([(1, "a", "x"), (2, "b", "x"), (3, "c", "y"), (4, None, "y")], SCHEMA))
    assert table.exists()

    table.insert_new(spark.createDataFrame([(1, "changed", "x"), (5, "e", "y")], SCHEMA), on=("part", "k"))
    assert rows() == [(1, "a", "x"), (2, "b", "x"), (3, "c", "y"), (4, None, "y"), (5, "e", "y")]

    table.upsert(spark.createDataFrame([(1, "A", "x"), (6, "f", "z")], SCHEMA), on=("part", "k"))
    assert rows() == [(1, "A", "x"), (2, "b", "x"), (3, "c", "y"), (4, None, "y"), (5, "e", "y"), (6, "f", "z")]

    # Row 4's predicate is NULL: it is not in the slice and stays.
    table.replace(spark.createDataFrame([(7, "g", "y")], SCHEMA), where="v IN ('c', 'e', 'g')")
    assert rows() == [(1, "A", "x"), (2, "b", "x"), (4, None, "y"), (6, "f", "z"), (7, "g", "y")]


@pytest.mark.parametrize("table_format", ["delta", "parquet"])
def test_an_unpartitioned_table_merges_only_newer_rows(tmp_path, spark, table_format):
    """merge_newer, as the hot state uses it: a matching row is replaced only where ``newer`` holds."""
    table = open_table(spark, Lake(str(tmp_path)), "curated/state", None, table_format)
    schema = "k int, version int, v string"

    def rows():
        return sorted(tuple(r) for r in table.read().select("k", "version", "v").collect())

    table.create(spark.createDataFrame([(1, 5, "a"), (2, 5, "b")], schema))
    source = spark.createDataFrame([(1, 4, "older"), (2, 6, "newer"), (3, 1, "new")], schema)
    table.merge_newer(source, on=("k",), newer="s.version > t.version")
    assert rows() == [(1, 5, "a"), (2, 6, "newer"), (3, 1, "new")]
    table.merge_newer(source, on=("k",), newer="s.version > t.version")  # again: nothing is newer
    assert rows() == [(1, 5, "a"), (2, 6, "newer"), (3, 1, "new")]


def test_unknown_format_is_refused(tmp_path, spark):
    with pytest.raises(ValueError, match="delta, parquet"):
        open_table(spark, Lake(str(tmp_path)), "curated/t", "part", "iceberg")
