"""The prod side of the warehouse without an AWS account: the lake tables registered in Glue (moto)
as symlink-manifest tables Athena and Redshift Spectrum read, and the dbt project compiled for the
Redshift target offline, its SQL parsed as Redshift's."""

from __future__ import annotations

import io
import json
import os
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
from deltalake import DeltaTable, write_deltalake
from sqlglot import exp

from assets.partitions import PARTITIONS_START
from iot_lake.lake import Lake, registry_key
from iot_lake.sources.historian import create_engine, land_readings, metadata, readings
from iot_lake.warehouse.glue import MANIFESTS_PREFIX, SYMLINK_INPUT
from iot_lake.warehouse.tables import TABLES
from resources.lake import LakeResource
from resources.warehouse import DBT_PROJECT_DIR, WarehouseResource, dbt_executable
from tests.conftest import REGION
from tests.iam_audit import REQUEST_LOG, setup_delta_options, setup_storage_options

DATABASE = "iot_lake_test"


def _delta_options() -> dict[str, str]:
    """The test's own Delta writes and reads (not the control plane's: those sign as its role)."""
    return {**setup_delta_options(), "AWS_REGION": REGION}


def _minutes(day: date, n: int) -> pa.Table:
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    ts = pa.array([start + timedelta(minutes=i) for i in range(n)], pa.timestamp("us", tz="UTC"))
    return pa.table(
        {
            "device_id": ["dev-0001"] * n,
            "site_id": ["site-01"] * n,
            "metric": ["power"] * n,
            "unit": ["kW"] * n,
            "bucket_start": ts,
            "readings": pa.array([1] * n, pa.int64()),
            "mean": [1.0] * n,
            "min": [1.0] * n,
            "max": [1.0] * n,
            "stddev": pa.array([None] * n, pa.float64()),
            "last": [1.0] * n,
            "last_ts": ts,
            "event_date": pa.array([day] * n, pa.date32()),
        }
    )


def _read_manifest_rows(lake: Lake, key: str) -> int:
    uris = lake.read_bytes(key).decode().split()
    total = 0
    for uri in uris:
        with lake.open(lake.key_of(uri.removeprefix("s3://"))) as f:
            total += pq.read_table(io.BytesIO(f.read())).num_rows
    return total


def test_lake_tables_are_registered_in_glue_as_manifest_tables_and_refreshed_by_partition(aws, lake_root, tmp_path):
    lake = Lake(lake_root, setup_storage_options())
    table_uri = lake.uri("curated/telemetry_1min")
    write_deltalake(
        table_uri,
        pa.concat_tables([_minutes(date(2026, 11, 20), 30), _minutes(date(2026, 11, 21), 20)]),
        partition_by=["event_date"],
        storage_options=_delta_options(),
    )
    lake.write_bytes(
        registry_key(date(2026, 11, 20), "devices"),
        _parquet(
            pa.table(
                {
                    "device_id": ["dev-0001"],
                    "site_id": ["site-01"],
                    "model": ["TX-200"],
                    "firmware": ["1.0"],
                    "installed_on": [date(2025, 1, 1)],
                    "updated_at": pa.array([datetime(2026, 1, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
                }
            )
        ),
    )

    extract = _land_historian_readings(lake, tmp_path)
    write_deltalake(lake.uri("curated/device_state"), _state(), storage_options=_delta_options())

    warehouse = WarehouseResource(target="prod", glue_database=DATABASE, region=REGION)
    # As the dbt asset registers them: the lake resource's s3fs and delta-rs, as the dagster role.
    resource = LakeResource(root=lake_root, region=REGION)

    def register() -> dict:
        return warehouse.register_lake_tables(resource.lake(), resource.delta_storage_options())

    summary = register()
    glue = aws.client("glue")
    names = {t["Name"] for t in glue.get_tables(DatabaseName=DATABASE)["TableList"]}
    assert names == {t.name for t in TABLES}  # the ones not written yet too: typed, empty
    # Every layer, the historian's extract included (issue 21): Athena and Spectrum see them all.
    assert names >= {
        "historical_readings",
        "registry_devices",
        "curated_telemetry",
        "curated_weather",
        "curated_features",
        "curated_device_state",
        "quarantine_telemetry",
        "quarantine_weather",
        "forecasts_telemetry_5min",
        "ops_deviations",
        "cases_cases",
        "cases_feedback",
    }
    history = glue.get_table(DatabaseName=DATABASE, Name="historical_readings")["Table"]
    assert history["Parameters"]["iot_lake.source"] == lake.uri("landing/historical/readings/*/*/*/*.parquet")
    assert history["PartitionKeys"] == [{"Name": "extract_date", "Type": "date"}]
    [day] = glue.get_partitions(DatabaseName=DATABASE, TableName="historical_readings")["Partitions"]
    assert day["Values"] == ["2026-11-20"]
    key = f"{MANIFESTS_PREFIX}/historical_readings/extract_date=2026-11-20/manifest"
    assert lake.read_bytes(key).decode().split() == [lake.uri(k) for k in extract.files]
    assert _read_manifest_rows(lake, key) == extract.rows == 3
    # The hot state is unpartitioned: one manifest, no Glue partitions.
    assert glue.get_table(DatabaseName=DATABASE, Name="curated_device_state")["Table"]["PartitionKeys"] == []
    assert _read_manifest_rows(lake, f"{MANIFESTS_PREFIX}/curated_device_state/manifest") == 2

    table = glue.get_table(DatabaseName=DATABASE, Name="curated_telemetry_1min")["Table"]
    sd = table["StorageDescriptor"]
    assert sd["InputFormat"] == SYMLINK_INPUT and sd["SerdeInfo"]["SerializationLibrary"].endswith("ParquetHiveSerDe")
    assert [(c["Name"], c["Type"]) for c in sd["Columns"]][:6] == [
        ("device_id", "string"),
        ("site_id", "string"),
        ("metric", "string"),
        ("unit", "string"),
        ("bucket_start", "timestamp"),
        ("readings", "bigint"),
    ]
    assert table["PartitionKeys"] == [{"Name": "event_date", "Type": "date"}]
    partitions = {
        p["Values"][0]: p
        for p in glue.get_partitions(DatabaseName=DATABASE, TableName="curated_telemetry_1min")["Partitions"]
    }
    assert set(partitions) == {"2026-11-20", "2026-11-21"}
    # Each partition's manifest lists exactly the Delta version's files, which hold its rows.
    delta = DeltaTable(table_uri, storage_options=_delta_options())
    for value, rows in {"2026-11-20": 30, "2026-11-21": 20}.items():
        key = f"{MANIFESTS_PREFIX}/curated_telemetry_1min/event_date={value}/manifest"
        assert partitions[value]["StorageDescriptor"]["Location"] == lake.uri(key.removesuffix("/manifest")) + "/"
        listed = set(lake.read_bytes(key).decode().split())
        assert listed == {u for u in delta.file_uris() if f"event_date={value}" in u}
        assert _read_manifest_rows(lake, key) == rows
    assert summary["curated_telemetry_1min"] == {
        "partitions": 2,
        "files": 2,
        "version": 0,
        "written": 2,
        "unchanged": 0,
        "dropped": 0,
    }
    devices = glue.get_partitions(DatabaseName=DATABASE, TableName="registry_devices")["Partitions"]
    assert [p["Values"] for p in devices] == [["2026-11-20"]]

    # An append to one day rewrites that day's manifest only; a rewrite without the other day drops it.
    write_deltalake(table_uri, _minutes(date(2026, 11, 21), 5), mode="append", storage_options=_delta_options())
    again = register()["curated_telemetry_1min"]
    assert (again["written"], again["unchanged"], again["dropped"]) == (1, 1, 0)
    assert _read_manifest_rows(lake, f"{MANIFESTS_PREFIX}/curated_telemetry_1min/event_date=2026-11-21/manifest") == 25
    write_deltalake(
        table_uri,
        _minutes(date(2026, 11, 21), 3),
        mode="overwrite",
        partition_by=["event_date"],
        storage_options=_delta_options(),
    )
    last = register()["curated_telemetry_1min"]
    assert (last["written"], last["dropped"]) == (1, 1)
    assert [
        p["Values"]
        for p in glue.get_partitions(DatabaseName=DATABASE, TableName="curated_telemetry_1min")["Partitions"]
    ] == [["2026-11-21"]]
    assert not lake.exists(f"{MANIFESTS_PREFIX}/curated_telemetry_1min/event_date=2026-11-20/manifest")
    # The registration's delta-rs reads of the tables and s3fs writes and deletes of the manifests were
    # signed as the Dagster role, so its policy is checked against them when the test ends.
    assert {"GetObject", "ListObjectsV2"} <= {op for _, op, _ in REQUEST_LOG[0].of("dagster", "object_store")}
    assert {"PutObject", "DeleteObjects"} <= {op for _, op, _ in REQUEST_LOG[0].of("dagster", "s3fs")}


def test_glue_registration_needs_a_database(aws, lake_root):
    with pytest.raises(ValueError, match="IOT_LAKE_GLUE_DATABASE"):
        WarehouseResource(target="prod", region=REGION).register_lake_tables(Lake(lake_root))


def _land_historian_readings(lake: Lake, tmp_path: Path):
    """A historian with three readings, one of them loaded late, extracted for 2026-11-20 as the
    nightly asset does (Parquet under landing/historical/readings/2026/11/20/)."""
    engine = create_engine(f"sqlite:///{tmp_path}/historian.sqlite")
    metadata.create_all(engine)
    at = datetime(2026, 11, 20, 6)
    rows = [
        {"device_id": "dev-0001", "metric": "power", "recorded_at": at, "value": 1.5, "unit": "kW", "loaded_at": at},
        {
            "device_id": "dev-0001",
            "metric": "power",
            "recorded_at": at + timedelta(minutes=15),
            "value": 1.7,
            "unit": "kW",
            "loaded_at": at + timedelta(minutes=16),
        },
        {
            "device_id": "dev-0002",
            "metric": "temperature",
            "recorded_at": at - timedelta(days=2),
            "value": 71.6,
            "unit": "degF",
            "loaded_at": at + timedelta(hours=3),
        },
    ]
    with engine.begin() as conn:
        conn.execute(readings.insert(), rows)
    try:
        return land_readings(lake, engine, date(2026, 11, 20), now=datetime(2026, 11, 21, 2, tzinfo=UTC))
    finally:
        engine.dispose()


def _state() -> pa.Table:
    ts = pa.array([datetime(2026, 11, 21, 0, 20, tzinfo=UTC)] * 2, pa.timestamp("us", tz="UTC"))
    return pa.table(
        {
            "device_id": ["dev-0001", "dev-0002"],
            "metric": ["power", "temperature"],
            "site_id": ["site-01", "site-01"],
            "event_ts": ts,
            "message_id": ["m-1", "m-2"],
            "value": [1.0, 22.0],
            "unit": ["kW", "degC"],
            "updated_at": ts,
        }
    )


def _parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


# Functions the compiled prod SQL may call that sqlglot does not model; each exists in Redshift.
REDSHIFT_FUNCTIONS = {"MD5"}


@pytest.fixture(scope="module")
def compiled_prod(tmp_path_factory) -> Path:
    """`dbt compile --target prod` offline (its target path: compiled/ and manifest.json)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("IOT_LAKE", "DBT_"))}
    target = tmp_path_factory.mktemp("prod")
    env = {
        **base,
        "IOT_LAKE_REDSHIFT_HOST": "127.0.0.1",
        "IOT_LAKE_REDSHIFT_PORT": "9",
        "IOT_LAKE_REDSHIFT_DATABASE": "analytics",
        "IOT_LAKE_REDSHIFT_USER": "dbt",
        "IOT_LAKE_REDSHIFT_PASSWORD": "unused",
        "IOT_LAKE_SPECTRUM_SCHEMA": "spectrum_lake",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    result = subprocess.run(
        [
            dbt_executable(),
            "compile",
            "--target",
            "prod",
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
            "--target-path",
            str(target),
            "--no-populate-cache",
            "--no-introspect",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return target


def test_every_model_and_test_compiles_for_redshift_and_parses_as_redshift_sql(compiled_prod):
    compiled = compiled_prod / "compiled" / "iot_lake"
    files = sorted(compiled.rglob("*.sql"))
    models = {f.stem for f in files if "models" in f.parts and "marts" in f.parts}
    assert {
        "fct_telemetry_minute",
        "fct_telemetry_hourly",
        "fct_forecast",
        "fct_deviation",
        "fct_case",
        "dim_device",
        "dim_site",
        "mart_device_health",
    } <= models
    assert len(files) > 140  # the models, the snapshot and every test
    unknown = {}
    for path in files:
        sql = path.read_text()
        tree = sqlglot.parse_one(sql, read="redshift")  # raises on SQL Redshift's grammar does not have
        names = {f.name.upper() for f in tree.find_all(exp.Anonymous)} - REDSHIFT_FUNCTIONS
        if names:
            unknown[path.name] = names
        assert "epoch(" not in sql.lower() and "timezone(" not in sql.lower(), path  # DuckDB's, not Redshift's
    assert not unknown, unknown
    source = (compiled / "models" / "staging" / "stg_telemetry_minute.sql").read_text()
    assert '"analytics"."spectrum_lake"."curated_telemetry_1min"' in source
    fact = (compiled / "models" / "marts" / "fct_telemetry_minute.sql").read_text()
    assert '"analytics"."analytics_staging"."stg_telemetry_minute"' in fact


MICROBATCH = {"fct_telemetry_minute", "fct_telemetry_hourly", "fct_forecast", "fct_deviation", "mart_device_health"}


def test_each_microbatch_batch_is_redshift_sql(compiled_prod):
    """What dbt runs per batch, which `dbt compile` does not render: the model over its inputs
    filtered to the batch (dbt-redshift's own relation rendering), and the delete of the batch's rows
    dbt-redshift writes. Each parses as Redshift, on columns the model and its inputs have."""
    from dbt.adapters.base.relation import EventTimeFilter
    from dbt.adapters.redshift.relation import RedshiftRelation

    manifest = json.loads((compiled_prod / "manifest.json").read_text())
    nodes = {**manifest["nodes"], **manifest["sources"]}
    batches = {
        n["name"]: n for n in manifest["nodes"].values() if n["config"].get("incremental_strategy") == "microbatch"
    }
    assert set(batches) == MICROBATCH
    start, end = datetime(2026, 11, 20, 10, tzinfo=UTC), datetime(2026, 11, 20, 11, tzinfo=UTC)
    for name, node in batches.items():
        config = node["config"]
        assert config["batch_size"] == "day", name  # a partition per daily batch (fewer fixed costs)
        assert config["begin"].startswith(PARTITIONS_START) and config["lookback"] >= 0, name  # Dagster's first
        sql, inputs = node["compiled_code"], 0
        assert config["event_time"] in sqlglot.parse_one(sql, read="redshift").named_selects, name
        for upstream in node["depends_on"]["nodes"]:
            parent = nodes[upstream]
            event_time = (parent.get("config") or {}).get("event_time")
            if not event_time:
                continue
            relation = RedshiftRelation.create(
                database=parent["database"],
                schema=parent["schema"],
                identifier=parent.get("alias") or parent.get("identifier") or parent["name"],
            )
            # Its rows in the batch are selected on a column it has.
            parent_sql = parent.get("compiled_code")
            if parent_sql:
                assert event_time in sqlglot.parse_one(parent_sql, read="redshift").named_selects, (name, upstream)
            filtered = relation.incorporate(
                event_time_filter=EventTimeFilter(field_name=event_time, start=start, end=end)
            )
            assert relation.render() in sql, (name, upstream)
            sql = sql.replace(relation.render(), str(filtered))
            inputs += 1
        assert inputs, name  # each reads at least one input by batch
        sqlglot.parse_one(sql, read="redshift")
        target = RedshiftRelation.create(database=node["database"], schema=node["schema"], identifier=node["alias"])
        # dbt-redshift's redshift__get_incremental_microbatch_sql
        delete = (
            f"delete from {target} where ({config['event_time']} >= TIMESTAMP '{start}' "
            f"and {config['event_time']} < TIMESTAMP '{end}')"
        )
        sqlglot.parse_one(delete, read="redshift")


def test_a_duckdb_only_function_is_caught():
    """The check above can fail: DuckDB's epoch() is not a function sqlglot knows for Redshift."""
    tree = sqlglot.parse_one("select epoch(ts) - epoch(ts2) from t", read="redshift")
    assert {f.name.upper() for f in tree.find_all(exp.Anonymous)} == {"EPOCH"}
    with pytest.raises(sqlglot.errors.ParseError):
        sqlglot.parse_one("select * from t where x in [1, 2)", read="redshift")
