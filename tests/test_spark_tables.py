"""The table operations mean the same in both formats (here on Sail; on classic Spark in test_jvm_parity)."""

from __future__ import annotations

from datetime import date

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
    # No row matches (a first load into new partitions): inserted, the rest untouched; then one does.
    table.upsert(spark.createDataFrame([(8, "h", "w")], SCHEMA), on=("part", "k"), partitions=())
    table.upsert(spark.createDataFrame([(8, "H", "w"), (9, "i", "w")], SCHEMA), on=("part", "k"))
    assert rows()[-3:] == [(6, "f", "z"), (8, "H", "w"), (9, "i", "w")] and len(rows()) == 8
    table.delete_matching(spark.createDataFrame([(8, None, "w"), (9, None, "w")], SCHEMA), on=("part", "k"))

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


def test_a_merge_given_its_partitions_opens_no_other_partitions_files(tmp_path, spark):
    """The partitions of a MERGE's rows are a literal on the table's side: day 1's files are never
    read when day 2's rows are merged. They are deleted from disk here, so a MERGE that opens them
    (one matching on the partition column alone read the whole table: benchmarks/growth) fails."""
    table = open_table(spark, Lake(str(tmp_path)), "curated/t", "part", "delta")
    schema = "k int, v string, part date"
    day1, day2 = date(2026, 11, 1), date(2026, 11, 2)
    table.create(spark.createDataFrame([(1, "a", day1), (2, "b", day2), (3, "c", day2)], schema))
    for data_file in (tmp_path / "curated" / "t").glob("part=2026-11-01/*.parquet"):
        data_file.unlink()

    def day2_rows():
        return sorted(tuple(r) for r in table.read().where(f"part = date'{day2}'").select("k", "v").collect())

    table.insert_new(spark.createDataFrame([(2, "changed", day2), (4, "d", day2)], schema), ("part", "k"), [day2])
    assert day2_rows() == [(2, "b"), (3, "c"), (4, "d")]
    table.upsert(spark.createDataFrame([(3, "C", day2)], schema), ("part", "k"), partitions=[day2.isoformat()])
    assert day2_rows() == [(2, "b"), (3, "C"), (4, "d")]
    table.delete_matching(spark.createDataFrame([(4, None, day2)], schema), ("part", "k"), partitions=[day2])
    assert day2_rows() == [(2, "b"), (3, "C")]
