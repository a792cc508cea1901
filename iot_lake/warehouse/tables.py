"""Every table of the lake, each with the columns the warehouse relies on (its contract).

One list for both catalogs: every Delta table the pipelines write, the historian's readings extract
and the registry snapshots (plain Parquet, a folder per day). tests/test_warehouse.py compares it
with the tables a lake built by the real writers holds, so a new table cannot be left out.

The same declaration makes the local DuckDB views (duckdb.py) and the Glue tables Athena and
Redshift Spectrum read in prod (glue.py), so the dbt sources see one schema, named the same, in
both. Declared rather than inferred: a table that does not exist yet (forecasts before the first
champion, cases before the first deviation) still has a typed, empty relation, and a table that
lost a column fails here by name instead of deep inside a model.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from iot_lake.cases.feedback import CASES_FEEDBACK, FEEDBACK_SCHEMA
from iot_lake.check_results import CHECK_RESULTS_KEY
from iot_lake.lake import HISTORIAN_PREFIX, REGISTRY_PREFIX, Lake

# Warehouse types: what each engine calls them. Timestamps are naive UTC in the warehouse (Redshift
# Spectrum has no zoned timestamp on external tables), so both engines compute the same buckets.
TYPES = {
    "string": {"duckdb": "VARCHAR", "glue": "string"},
    "double": {"duckdb": "DOUBLE", "glue": "double"},
    "bigint": {"duckdb": "BIGINT", "glue": "bigint"},
    "int": {"duckdb": "INTEGER", "glue": "int"},
    "boolean": {"duckdb": "BOOLEAN", "glue": "boolean"},
    "date": {"duckdb": "DATE", "glue": "date"},
    "timestamp": {"duckdb": "TIMESTAMP", "glue": "timestamp"},
}
# Reader features a file list cannot honour: the files alone would show deleted or renamed data.
UNSUPPORTED_READER_FEATURES = {"deletionVectors", "columnMapping"}


class CatalogError(RuntimeError):
    """A lake table the warehouse cannot read as declared."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    optional: bool = False  # may be missing from older files: read as NULL

    def __post_init__(self):
        if self.type not in TYPES:
            raise ValueError(f"column {self.name}: unknown warehouse type {self.type!r}")


@dataclass(frozen=True)
class LakeTable:
    name: str  # relation name in the warehouse's lake schema, e.g. curated_telemetry
    key: str  # lake key: a Delta table, an extract's folder, or the registry table's name under its snapshots
    columns: tuple[Column, ...]
    partition: str  # partition column (Delta partition, or the day of a registry snapshot or extract)
    format: str = "delta"  # delta | registry | extract (daily Parquet extracts under key/YYYY/MM/DD/)
    description: str = ""

    @property
    def data_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.name != self.partition)

    @property
    def partition_column(self) -> Column:
        return next(c for c in self.columns if c.name == self.partition)

    @property
    def parquet_glob(self) -> str:
        """The Parquet files of a registry or extract table (not Delta: no log lists them)."""
        if self.format == "registry":
            return f"{REGISTRY_PREFIX}/*/*/*/{self.key}.parquet"
        return f"{self.key}/*/*/*/*.parquet"


@dataclass
class TableFiles:
    """A table's current data files grouped by partition value, and the columns the files hold."""

    table: LakeTable
    partitions: dict[str, list[str]] = field(default_factory=dict)  # partition value (ISO) -> file URIs
    file_columns: dict[str, Any] = field(default_factory=dict)  # name -> Arrow type, as the files hold it
    version: int | None = None  # Delta version the file list is of
    # An extract's columns per partition (its parts' schemas together): a historian's drift differs by day.
    partition_columns: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return bool(self.partitions)


def _cols(spec: str, optional: tuple[str, ...] = ()) -> tuple[Column, ...]:
    out = []
    for item in spec.split(","):
        name, type_ = item.split()
        out.append(Column(name, type_, optional=name in optional))
    return tuple(out)


TABLES: tuple[LakeTable, ...] = (
    LakeTable(
        "curated_telemetry",
        "curated/telemetry",
        _cols(
            "device_id string, site_id string, metric string, value double, unit string, event_ts timestamp, "
            "message_id string, ingested_at timestamp, source_object string, event_date date"
        ),
        "event_date",
        description="Validated telemetry in canonical units, one row per (device, metric, event time, message id).",
    ),
    *(
        LakeTable(
            f"curated_telemetry_{grain}",
            f"curated/telemetry_{grain}",
            _cols(
                "device_id string, site_id string, metric string, unit string, bucket_start timestamp, "
                "readings bigint, mean double, min double, max double, stddev double, last double, "
                "last_ts timestamp, event_date date"
            ),
            "event_date",
            description=f"{grain} aggregates of curated telemetry per device and metric.",
        )
        for grain in ("1min", "5min")
    ),
    # Written by the curated telemetry job with curated/telemetry (iot_lake/curated/object_counts.py):
    # the row accounting's curated rows per landing object, so the warehouse never counts the big table.
    LakeTable(
        "curated_telemetry_object_counts",
        "curated/telemetry_object_counts",
        _cols(
            "source_object string, landing_hour timestamp, curated_rows bigint, counted_at timestamp, landing_date date"
        ),
        "landing_date",
        description="Curated rows per landing object, as the curated telemetry job counted them.",
    ),
    # The quarantine keeps each rejected line's raw text too: the warehouse leaves it in the lake.
    LakeTable(
        "quarantine_telemetry",
        "quarantine/telemetry",
        _cols(
            "landing_hour timestamp, source_object string, line_number bigint, reason string, detail string, "
            "device_id string, metric string, landing_date date"
        ),
        "landing_date",
        description="Every landed line the curated layer rejected, with its reason and source object.",
    ),
    # The raw row of a rejected historian reading stays in the lake too.
    LakeTable(
        "quarantine_historian",
        "quarantine/historian",
        _cols(
            "source_object string, row_number bigint, reason string, detail string, device_id string, "
            "metric string, landing_date date"
        ),
        "landing_date",
        description="Every historian reading the curated layer rejected, with its reason and extract part.",
    ),
    # The raw row of a rejected weather line stays in the lake too.
    LakeTable(
        "quarantine_weather",
        "quarantine/weather",
        _cols("source_file string, row_number bigint, reason string, detail string, landing_date date"),
        "landing_date",
        description="Every third-party weather row the curated layer rejected, with its reason and source file.",
    ),
    LakeTable(
        "curated_weather",
        "curated/weather",
        _cols(
            "site_id string, observed_at timestamp, temperature_c double, humidity_pct double, wind_speed_ms double, "
            "precipitation_mm double, source_file string, observed_date date"
        ),
        "observed_date",
        description="Validated third-party weather per site, one row per (site, observation time).",
    ),
    LakeTable(
        "curated_features",
        "curated/features",
        _cols(
            "device_id string, metric string, bucket_start timestamp, site_id string, unit string, readings bigint, "
            "mean double, min double, max double, stddev double, last double, hour_of_day int, day_of_week int, "
            "local_hour int, local_day_of_week int, is_weekend_local boolean, model string, firmware string, "
            "device_age_days int, latitude double, longitude double, temperature_c double, humidity_pct double, "
            "wind_speed_ms double, precipitation_mm double, event_date date"
        ),
        "event_date",
        description="The forecasting features per device, metric and 5-minute bucket: calendar, device, site weather.",
    ),
    # The hot state is small and unpartitioned (one row per series), MERGEd every hour.
    LakeTable(
        "curated_device_state",
        "curated/device_state",
        _cols(
            "device_id string, metric string, site_id string, event_ts timestamp, message_id string, value double, "
            "unit string, updated_at timestamp"
        ),
        "",
        description="The hot state: the latest reading per (device, metric), what the serving API's /state answers.",
    ),
    LakeTable(
        "forecasts_telemetry_5min",
        "forecasts/telemetry_5min",
        _cols(
            "device_id string, metric string, bucket_start timestamp, yhat double, lo_80 double, hi_80 double, "
            "lo_95 double, hi_95 double, origin timestamp, model_version string, method string, origin_date date",
            optional=("method",),
        ),
        "origin_date",
        description="The champion's 24-hour forecasts per device and metric, one set per origin.",
    ),
    LakeTable(
        "ops_deviations",
        "ops/deviations",
        _cols(
            "device_id string, metric string, site_id string, ts timestamp, actual double, expected double, "
            "expected_lo double, expected_hi double, residual double, score double, is_anomalous boolean, "
            "forecast_origin timestamp, model_version string, event_date date"
        ),
        "event_date",
        description="Every scored minute: actual against the forecast band, score in [0, 1], anomalous or not.",
    ),
    # The case mirror is replaced whole and unpartitioned: the mirror's write time stands in.
    LakeTable(
        "cases_cases",
        "cases/cases",
        _cols(
            "case_key string, device_id string, metric string, site_id string, incident_start timestamp, "
            "last_seen timestamp, back_in_band_since timestamp, severity string, status string, auto_resolved boolean, "
            "opened_at timestamp, updated_at timestamp, resolved_at timestamp, reopen_count int"
        ),
        "",
        description="Every case in the case store, as mirrored to the lake.",
    ),
    LakeTable(
        "cases_history",
        "cases/history",
        _cols("case_key string, at timestamp, from_status string, to_status string, actor string, note string"),
        "",
        description="Every status change of every case.",
    ),
    # One row per trained forecaster, upserted by version (iot_lake/forecast/registry.py): small, unpartitioned.
    LakeTable(
        "models_forecast_metrics",
        "models/forecast/metrics",
        _cols(
            "version string, trained_for date, trained_at timestamp, method string, mase double, coverage_80 double, "
            "coverage_95 double, naive_method string, naive_mase double, promoted boolean, reason string"
        ),
        "",
        description="Every trained forecast model's backtest scores and whether it was promoted to champion.",
    ),
    # Copied from Dagster's instance by the ops/check_results asset (iot_lake/check_results.py).
    LakeTable(
        "ops_check_results",
        CHECK_RESULTS_KEY,
        _cols(
            "run_id string, event_id bigint, job string, asset_key string, check_name string, passed boolean, "
            "severity string, description string, partition_key string, evaluated_at timestamp, evaluated_date date"
        ),
        "evaluated_date",
        description="Every asset check evaluation (landing, row accounting, Great Expectations, dbt tests).",
    ),
    LakeTable(
        "cases_feedback",
        CASES_FEEDBACK,
        _cols(FEEDBACK_SCHEMA),
        "",
        description="Every resolved case as training reads it: confirmed anomalies are left out of training data.",
    ),
    # The historian's readings as extracted (Parquet per extract day, not Delta): the raw history.
    LakeTable(
        "historical_readings",
        f"{HISTORIAN_PREFIX}/readings",
        _cols(
            "reading_id bigint, device_id string, metric string, recorded_at timestamp, value double, unit string, "
            "loaded_at timestamp, extract_date date"
        ),
        "extract_date",
        format="extract",
        description="The historical database's readings, one partition per daily extract (by loaded_at).",
    ),
    LakeTable(
        "registry_sites",
        "sites",
        _cols(
            "site_id string, name string, latitude double, longitude double, timezone string, updated_at timestamp, "
            "registry_date date"
        ),
        "registry_date",
        format="registry",
        description="Daily snapshots of the registry's sites.",
    ),
    LakeTable(
        "registry_devices",
        "devices",
        _cols(
            "device_id string, site_id string, model string, firmware string, installed_on date, updated_at timestamp, "
            "registry_date date"
        ),
        "registry_date",
        format="registry",
        description="Daily snapshots of the registry's devices.",
    ),
    LakeTable(
        "registry_device_metrics",
        "device_metrics",
        _cols(
            "device_id string, metric string, unit string, canonical_unit string, min_value double, max_value double, "
            "updated_at timestamp, registry_date date"
        ),
        "registry_date",
        format="registry",
        description="Daily snapshots of each device metric's unit and physical range.",
    ),
)
TABLES_BY_NAME = {t.name: t for t in TABLES}

_DAY_FILE = re.compile(r"(\d{4})/(\d{2})/(\d{2})/[^/]+\.parquet$")


def table_files(lake: Lake, table: LakeTable, storage_options: dict[str, str] | None = None) -> TableFiles:
    if table.format == "delta":
        return _delta_files(lake, table, storage_options)
    return _parquet_files(lake, table)


def _delta_files(lake: Lake, table: LakeTable, storage_options: dict[str, str] | None) -> TableFiles:
    import pyarrow as pa
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    uri = lake.uri(table.key)
    try:
        dt = DeltaTable(uri, storage_options=storage_options)
    except TableNotFoundError:
        return TableFiles(table)
    features = set(dt.protocol().reader_features or ()) & UNSUPPORTED_READER_FEATURES
    if features:
        raise CatalogError(
            f"{uri} uses {', '.join(sorted(features))}: its data files alone are not the table, "
            "so neither DuckDB nor Spectrum can read it from a file list"
        )
    partition_columns = dt.metadata().partition_columns
    expected = [table.partition] if table.partition else []
    if partition_columns != expected:
        raise CatalogError(f"{uri} is partitioned by {partition_columns}, the warehouse expects {expected}")
    schema = pa.schema(dt.schema().to_arrow())
    files = TableFiles(table, file_columns={f.name: f.type for f in schema}, version=dt.version())
    _check_columns(uri, table, files.file_columns)
    actions = pa.table(dt.get_add_actions(flatten=True)).to_pydict()
    values = actions.get(f"partition.{table.partition}") if table.partition else None
    for i, path in enumerate(actions["path"]):
        value = values[i] if values is not None else None
        if table.partition and value is None:
            raise CatalogError(f"{uri}: file {path} has no {table.partition}")
        file_uri = path if "://" in path else posixpath.join(uri, urllib.parse.unquote(path))
        files.partitions.setdefault(value.isoformat() if value is not None else "", []).append(file_uri)
    return files


def _parquet_files(lake: Lake, table: LakeTable) -> TableFiles:
    """A registry's or an extract's Parquet files by the day in their path (YYYY/MM/DD)."""
    import pyarrow.parquet as pq

    files, newest = TableFiles(table), None
    for path in sorted(lake.fs.glob(lake.path(table.parquet_glob))):
        key = lake.key_of(path)
        m = _DAY_FILE.search(key)
        day = date(int(m[1]), int(m[2]), int(m[3])).isoformat()
        files.partitions.setdefault(day, []).append(lake.uri(key))
        newest = key
        if table.format == "extract":  # a footer per part: an extract has a part or two a day
            with lake.open(key) as f:
                files.partition_columns.setdefault(day, {}).update({c.name: c.type for c in pq.read_schema(f)})
    if newest:
        with lake.open(newest) as f:
            files.file_columns = {f.name: f.type for f in pq.read_schema(f)}
        if table.format != "extract":
            # An extract is the source as it was: a drifted historian's part is registered with the
            # columns it has (the rest null; see the view) and reported by the curated history's
            # landed_schema check, not refused here, which would fail every warehouse view.
            _check_columns(lake.uri(newest), table, files.file_columns)
    return files


def _check_columns(where: str, table: LakeTable, present: dict[str, Any]) -> None:
    missing = [c.name for c in table.columns if not c.optional and c.name not in present and c.name != table.partition]
    if missing:
        raise CatalogError(
            f"{where} lacks the column(s) {', '.join(missing)} that the warehouse table "
            f"{table.name} declares (iot_lake/warehouse/tables.py)"
        )


def describe(tables: dict[str, TableFiles]) -> dict[str, Any]:
    """A summary for logs and asset metadata: partitions and files per table."""
    return {
        name: {"partitions": len(f.partitions), "files": sum(map(len, f.partitions.values())), "version": f.version}
        for name, f in tables.items()
    }
