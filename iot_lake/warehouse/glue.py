"""The lake tables in the Glue Data Catalog, for Athena and Redshift Spectrum (prod).

Neither reads a Delta log the way delta-rs does, but both read a *symlink manifest*: a text file
per partition listing its current Parquet files (what Delta's ``GENERATE symlink_format_manifest``
writes). So each table is an external Glue table with ``SymlinkTextInputFormat`` over manifests
under ``warehouse/_manifests/<table>/``, its columns the declared contract (tables.py), and one
Glue partition per Delta partition. The historian's extracts and registry snapshots are plain
Parquet in a folder per day: the same manifests list a day's files, one partition per day. A
partition's manifest is rewritten only when its file list changed (its hash is kept in the
partition's parameters), so a refresh after an hourly MERGE touches the few partitions that MERGE
changed. The Redshift side is one external schema over the
Glue database (docs/warehouse.md, "The same tables in Redshift").
"""

from __future__ import annotations

import hashlib
from typing import Any

from iot_lake.lake import Lake
from iot_lake.warehouse.tables import TABLES, TYPES, LakeTable, TableFiles, describe, table_files

MANIFESTS_PREFIX = "warehouse/_manifests"
SYMLINK_INPUT = "org.apache.hadoop.hive.ql.io.SymlinkTextInputFormat"
IGNORE_KEY_OUTPUT = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
_BATCH = 100  # Glue's batch_create/delete_partition limit


def manifest_prefix(table: LakeTable, value: str | None = None) -> str:
    base = f"{MANIFESTS_PREFIX}/{table.name}"
    return f"{base}/{table.partition}={value}" if table.partition and value is not None else base


def _storage(lake: Lake, table: LakeTable, location_key: str) -> dict[str, Any]:
    return {
        "Columns": [{"Name": c.name, "Type": TYPES[c.type]["glue"]} for c in table.data_columns],
        "Location": lake.uri(location_key) + "/",
        "InputFormat": SYMLINK_INPUT,
        "OutputFormat": IGNORE_KEY_OUTPUT,
        "SerdeInfo": {"SerializationLibrary": PARQUET_SERDE},
    }


def _table_input(lake: Lake, files: TableFiles) -> dict[str, Any]:
    table = files.table
    source = lake.uri(table.key if table.format == "delta" else table.parquet_glob)
    return {
        "Name": table.name,
        "Description": table.description,
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {
            "classification": "parquet",
            "iot_lake.source": source,
            "iot_lake.delta_version": "" if files.version is None else str(files.version),
        },
        "StorageDescriptor": _storage(lake, table, manifest_prefix(table)),
        "PartitionKeys": [{"Name": table.partition, "Type": TYPES[table.partition_column.type]["glue"]}]
        if table.partition
        else [],
    }


def _manifest(uris: list[str]) -> tuple[str, str]:
    text = "".join(f"{u}\n" for u in sorted(uris))
    return text, hashlib.sha256(text.encode()).hexdigest()


def _existing_partitions(glue, database: str, name: str) -> dict[str, dict[str, str]]:
    out = {}
    for page in glue.get_paginator("get_partitions").paginate(DatabaseName=database, TableName=name):
        for p in page["Partitions"]:
            out[p["Values"][0]] = p.get("Parameters", {})
    return out


def _ensure_database(glue, database: str) -> None:
    try:
        glue.get_database(Name=database)
    except glue.exceptions.EntityNotFoundException:
        glue.create_database(
            DatabaseInput={
                "Name": database,
                "Description": "iot-lake: the lake tables (Delta and Parquet extracts, as symlink manifests)",
            }
        )


def _upsert_table(glue, database: str, table_input: dict[str, Any]) -> None:
    try:
        glue.get_table(DatabaseName=database, Name=table_input["Name"])
    except glue.exceptions.EntityNotFoundException:
        glue.create_table(DatabaseName=database, TableInput=table_input)
        return
    glue.update_table(DatabaseName=database, TableInput=table_input)


def register_table(lake: Lake, glue, database: str, files: TableFiles) -> dict[str, int]:
    """Upsert one table and its partitions; what changed."""
    table = files.table
    _upsert_table(glue, database, _table_input(lake, files))
    if not table.partition:
        text, _ = _manifest(files.partitions.get("", []))
        lake.write_text(f"{manifest_prefix(table)}/manifest", text)
        return {"written": 1, "unchanged": 0, "dropped": 0}

    existing = _existing_partitions(glue, database, table.name)
    created, updated, unchanged = [], [], 0
    for value, uris in sorted(files.partitions.items()):
        text, digest = _manifest(uris)
        if existing.get(value, {}).get("iot_lake.manifest_sha256") == digest:
            unchanged += 1
            continue
        key = manifest_prefix(table, value)
        lake.write_text(f"{key}/manifest", text)
        partition = {
            "Values": [value],
            "StorageDescriptor": _storage(lake, table, key),
            "Parameters": {"iot_lake.manifest_sha256": digest, "iot_lake.files": str(len(uris))},
        }
        (updated if value in existing else created).append(partition)
    for i in range(0, len(created), _BATCH):
        response = glue.batch_create_partition(
            DatabaseName=database, TableName=table.name, PartitionInputList=created[i : i + _BATCH]
        )
        if response.get("Errors"):
            raise RuntimeError(f"Glue refused partitions of {database}.{table.name}: {response['Errors'][:3]}")
    for partition in updated:
        glue.update_partition(
            DatabaseName=database,
            TableName=table.name,
            PartitionValueList=partition["Values"],
            PartitionInput=partition,
        )
    gone = sorted(set(existing) - set(files.partitions))
    for i in range(0, len(gone), _BATCH):
        glue.batch_delete_partition(
            DatabaseName=database,
            TableName=table.name,
            PartitionsToDelete=[{"Values": [v]} for v in gone[i : i + _BATCH]],
        )
    for value in gone:
        lake.delete(manifest_prefix(table, value), recursive=True)
    return {"written": len(created) + len(updated), "unchanged": unchanged, "dropped": len(gone)}


def register_tables(
    lake: Lake,
    glue,
    database: str,
    tables: tuple[LakeTable, ...] = TABLES,
    storage_options: dict[str, str] | None = None,
) -> dict:
    """Register ``tables`` in the Glue database (created if missing); a summary per table."""
    if not database:
        raise ValueError("the Glue database is not set (IOT_LAKE_GLUE_DATABASE)")
    _ensure_database(glue, database)
    listed = {t.name: table_files(lake, t, storage_options) for t in tables}
    summary = describe(listed)
    for name, files in listed.items():
        summary[name].update(register_table(lake, glue, database, files))
    return summary
