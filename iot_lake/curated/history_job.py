"""Curated history: the historian's extracted readings validated into curated/telemetry, as a Spark
job (Sail locally, EMR Serverless / Glue in prod).

    python -m iot_lake.curated.history_job --lake ROOT --day 2026-11-20 [--day 2026-11-21 ...]

A ``--day`` is an extract day: the Parquet parts the nightly extract (iot_lake.sources.historian)
landed under landing/historical/readings/YYYY/MM/DD/ and listed in its manifest, whose rows cover
past periods. All the days of a run are one pass:

1. Schema: each part's Parquet schema against READINGS_SCHEMA (columns added, missing, retyped,
   and the likely renames), reported as the landed_schema check. A drifted part is still read:
   a column of a compatible type (another integer or float width, a decimal, another timestamp
   unit or zone, a large or dictionary string) is cast, and the rows that an absent or
   incompatible column leaves without a usable field are rejected by the record rules with a
   reason that names the column. Drift never fails the run.
2. Validation with the telemetry record rules (iot_lake.curated.records.parse_reading: ids against
   the registry snapshot of the extract day, units to canonical, physical ranges, timestamps),
   in mapInArrow (a task per part on Spark, per core on Sail): typical rows column-wise, the
   rest one by one.
3. A valid reading becomes one curated row: event_ts = recorded_at, message_id =
   historian:<device>:<metric>:<epoch seconds>, ingested_at = loaded_at, source_object = its part.
4. Dedupe on (device, metric, recorded_at), the latest load winning, within the run and against
   the table: a reading the historian corrected (loaded again, another value) replaces the stored
   one; the same reading again is a duplicate.
5. Precedence (iot_lake.curated.precedence): a reading whose 15-minute period device telemetry
   already covers is left out (overlapped_by_telemetry); telemetry wins where both exist.
6. MERGE into curated/telemetry, then the 1- and 5-minute aggregates of every bucket the run's
   parts have rows in (iot_lake.curated.aggregates), so historical periods have a bucket every 15
   minutes.
7. Rejected rows go to quarantine/historian with reason, detail, raw row and part; the extract
   days' slice is replaced, so re-runs are idempotent.
8. Row accounting per extract day: rows read = curated new + updated + duplicates + overlapped by
   telemetry + quarantined, and rows read = the rows the manifest says the extract wrote.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

from iot_lake.curated.aggregates import GRAINS, refresh_buckets
from iot_lake.curated.precedence import (
    PERIOD_KEY,
    ROW_KEY,
    displace_historian,
    is_historian,
    mark_historian_dates,
    telemetry_periods,
    with_period,
)
from iot_lake.curated.records import CLOCK_TOLERANCE, MAX_HISTORY_AGE, Record, Registry, parse_reading
from iot_lake.curated.registries import RegistrySnapshots
from iot_lake.curated.telemetry_job import CURATED_COLUMNS, CURATED_TELEMETRY, quarantine_rate
from iot_lake.curated.typical import RegistryIndex
from iot_lake.lake import Lake
from iot_lake.sources.readings import READINGS_SCHEMA, readings_manifest_key
from iot_lake.spark.session import python_partitions, spark_session
from iot_lake.spark.tables import TABLE_FORMATS, ddl, open_table, staged

ASSET_KEY = "curated/historical_readings"
QUARANTINE_HISTORIAN = "quarantine/historian"
MESSAGE_PREFIX = "historian:"
READING_KEY = ("device_id", "metric", "event_ts")  # one historian reading; its message id follows from it
ROW_ID = ("source_object", "row_number")  # a landed row's identity
# The order copies of a reading were loaded in: by load time (unknown: oldest), then extract day, part, row.
LOAD_ORDER = ("ingested_at", "landing_date", "source_object", "row_number")
REQUIRED_COLUMNS = ("device_id", "metric", "recorded_at", "value")
RAW_ROW_KEEP = 2_000  # characters of a rejected row's JSON the quarantine keeps
BATCH_ROWS = 131_072  # rows of a part validated at a time: bounds a task's memory, not its work
# The record rules' names for a reading's fields, and back (details name the historian's columns).
FIELDS = {"ts": "recorded_at", "ingested_at": "loaded_at"}
_SEP = "\x1f"  # joins key parts, as RegistryIndex's keys do
_UTC_US = pa.timestamp("us", tz="UTC")
_TOLERANCE_US = CLOCK_TOLERANCE // timedelta(microseconds=1)
_HISTORY_US = MAX_HISTORY_AGE // timedelta(microseconds=1)

PARSED = pa.schema(
    [
        ("status", pa.string()),  # ok | rejected | unreadable
        ("device_id", pa.string()),
        ("site_id", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("unit", pa.string()),
        ("reported_value", pa.float64()),
        ("reported_unit", pa.string()),
        ("event_ts", _UTC_US),
        ("message_id", pa.string()),
        ("ingested_at", _UTC_US),
        ("source_object", pa.string()),
        ("event_date", pa.date32()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw_row", pa.string()),
        ("row_number", pa.int64()),
        ("landing_date", pa.date32()),  # the extract day
    ]
)
PARSED_DDL = ddl(PARSED)
QUARANTINE_COLUMNS = [
    "source_object",
    "row_number",
    "reason",
    "detail",
    "raw_row",
    "device_id",
    "metric",
    "landing_date",
]


# --- schema drift ---------------------------------------------------------------------------


def _compatible(expected: pa.DataType, actual: pa.DataType) -> bool:
    """Whether a column of type ``actual`` holds what ``expected`` does, so a cast keeps its meaning."""
    if actual == expected:
        return True
    if pa.types.is_dictionary(actual):
        return _compatible(expected, actual.value_type)
    if pa.types.is_floating(expected):
        return pa.types.is_integer(actual) or pa.types.is_floating(actual) or pa.types.is_decimal(actual)
    if pa.types.is_integer(expected):
        return pa.types.is_integer(actual)
    if pa.types.is_timestamp(expected):
        return pa.types.is_timestamp(actual)  # a naive one is UTC, as the historian keeps it
    if pa.types.is_string(expected):
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    return False


@dataclass
class SchemaDrift:
    """How a landed part's schema differs from READINGS_SCHEMA."""

    added: dict[str, str] = field(default_factory=dict)  # column -> type
    missing: dict[str, str] = field(default_factory=dict)  # column -> expected type
    retyped: dict[str, str] = field(default_factory=dict)  # column -> "expected -> found (cast | rows rejected)"
    renamed: dict[str, str] = field(default_factory=dict)  # missing column -> the added one it likely became

    @property
    def any(self) -> bool:
        return bool(self.added or self.missing or self.retyped)


def schema_drift(schema: pa.Schema) -> SchemaDrift:
    drift = SchemaDrift()
    expected = {f.name: f.type for f in READINGS_SCHEMA}
    found = {f.name: f.type for f in schema}
    drift.added = {name: str(t) for name, t in found.items() if name not in expected}
    drift.missing = {name: str(t) for name, t in expected.items() if name not in found}
    for name, t in expected.items():
        if name in found and found[name] != t:
            verdict = "cast" if _compatible(t, found[name]) else "rows rejected"
            drift.retyped[name] = f"{t} -> {found[name]} ({verdict})"
    for name in drift.missing:
        # A rename shows as a column missing and one added: name the added ones of a type it could be.
        if candidates := [a for a in drift.added if _compatible(expected[name], found[a])]:
            drift.renamed[name] = " or ".join(candidates)
    return drift


def _typed(table: pa.Table) -> dict[str, pa.Array | None]:
    """READINGS_SCHEMA's columns of a landed batch, cast where compatible; None where absent or not."""
    out: dict[str, pa.Array | None] = {}
    for f in READINGS_SCHEMA:
        column = table.column(f.name) if f.name in table.column_names else None
        if column is not None and _compatible(f.type, column.type):
            try:
                out[f.name] = pc.cast(column, f.type).combine_chunks()
                continue
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # e.g. an overflowing value
                pass
        out[f.name] = None
    return out


# --- validation -----------------------------------------------------------------------------


def message_ids(device: pa.Array, metric: pa.Array, event_ts: pa.Array) -> pa.Array:
    seconds = pc.cast(pc.divide(pc.cast(event_ts, pa.int64()), 1_000_000), pa.string())
    return pc.binary_join_element_wise(MESSAGE_PREFIX.rstrip(":"), device, metric, seconds, ":")


def message_id(record: Record) -> str:
    seconds = (record.event_ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=1)
    return f"{MESSAGE_PREFIX}{record.device_id}:{record.metric}:{seconds}"


def _fast_accepted(typed: dict, index: RegistryIndex, extracted_us: int) -> tuple[pa.Array, dict]:
    """The rows parse_reading would curate, decided column-wise with the same arithmetic, and their
    curated columns. Anything else (rejected or unusual, e.g. a null unit) goes to parse_reading."""
    device, metric, unit = typed["device_id"], typed["metric"], typed["unit"]
    value, recorded, loaded = typed["value"], typed["recorded_at"], typed["loaded_at"]
    site_at = pc.index_in(device, value_set=index.device_ids)
    rule_at = pc.index_in(pc.binary_join_element_wise(device, metric, _SEP), value_set=index.rule_keys)
    canonical_unit = pc.take(index.rule_canonical, rule_at)
    unit_at = pc.index_in(pc.binary_join_element_wise(unit, canonical_unit, _SEP), value_set=index.unit_keys)
    # units.to_canonical: value * scale + offset, the same two roundings.
    canonical = pc.add(pc.multiply(value, pc.take(index.unit_scale, unit_at)), pc.take(index.unit_offset, unit_at))
    event_us = pc.cast(recorded, pa.int64())
    latest = pc.min_element_wise(pc.cast(loaded, pa.int64()), pa.scalar(extracted_us, pa.int64()))
    checks = [
        site_at.is_valid(),
        pc.greater_equal(canonical, pc.take(index.rule_min, rule_at)),
        pc.less_equal(canonical, pc.take(index.rule_max, rule_at)),
        pc.less_equal(event_us, pc.add(latest, _TOLERANCE_US)),  # records._history_skew
        pc.greater_equal(event_us, pc.subtract(latest, _HISTORY_US)),
    ]
    accepted = checks[0]
    for check in checks[1:]:
        accepted = pc.and_kleene(accepted, check)
    columns = {
        "device_id": device,
        "site_id": pc.take(index.site_ids, site_at),
        "metric": metric,
        "value": canonical,
        "unit": canonical_unit,
        "reported_value": value,
        "reported_unit": unit,
        "event_ts": recorded,
        "ingested_at": loaded,
    }
    return pc.fill_null(accepted, False), columns


def _fast_rows(typed: dict, index: RegistryIndex, extracted_us: int, n: int) -> tuple[np.ndarray, dict | None]:
    if any(typed[name] is None for name in (*REQUIRED_COLUMNS, "unit", "loaded_at")):
        return np.zeros(n, bool), None
    accepted, columns = _fast_accepted(typed, index, extracted_us)
    kept = {name: array.filter(accepted) for name, array in columns.items()}
    kept["message_id"] = message_ids(kept["device_id"], kept["metric"], kept["event_ts"])
    kept["event_date"] = pc.cast(kept["event_ts"], pa.date32())
    return accepted.to_numpy(zero_copy_only=False), kept


def _detail(reason: str, detail: str, absent: set[str]) -> str:
    """A rejection's detail in the historian's column names, saying which columns the part lacks."""
    if reason == "missing_field":
        names = [FIELDS.get(n.strip(), n.strip()) for n in detail.split(",")]
        gone = [n for n in names if n in absent]
        detail = ", ".join(names) + (f" (the part has no column {', '.join(gone)}: schema drift)" if gone else "")
    elif reason in ("mistyped_field", "bad_timestamp"):
        for ours, theirs in FIELDS.items():
            if detail.startswith(f"{ours} "):
                detail = theirs + detail[len(ours) :]
    return detail


def _slow_rows(table: pa.Table, typed: dict, positions: np.ndarray, registry: Registry, extracted_at: datetime):
    """parse_reading's verdict on each row at ``positions``, as PARSED rows (origin columns apart)."""
    take = pa.array(positions, pa.int64())
    # The typed column where there is one (a cast part reads as the fast path read it), else as landed.
    fields = {
        f.name: (typed[f.name] if typed[f.name] is not None else table.column(f.name)).take(take).to_pylist()
        if typed[f.name] is not None or f.name in table.column_names
        else [None] * len(positions)
        for f in READINGS_SCHEMA
    }
    raw_rows = table.take(take).to_pylist()
    absent = {f.name for f in READINGS_SCHEMA if f.name not in table.column_names}
    for i, raw in enumerate(raw_rows):
        reading = {
            "device_id": fields["device_id"][i],
            "metric": fields["metric"][i],
            "value": fields["value"][i],
            "unit": fields["unit"][i],
            "ts": fields["recorded_at"][i],
            "ingested_at": fields["loaded_at"][i],
            "message_id": MESSAGE_PREFIX,  # its own follows from the parsed reading
        }
        result = parse_reading(reading, registry, extracted_at)
        if isinstance(result, Record):
            row = asdict(result)
            row.update(status="ok", message_id=message_id(result), event_date=result.event_ts.date())
        else:
            row = {
                "status": "rejected",
                "reason": result.reason,
                "detail": _detail(result.reason, result.detail, absent),
                "device_id": result.device_id,
                "metric": result.metric,
                "raw_row": json.dumps(raw, default=str)[:RAW_ROW_KEEP],
            }
        yield row


def validate_part(table: pa.Table, registry: Registry, index: RegistryIndex, extracted_at: datetime, origin: dict):
    """A batch of one landed part -> PARSED record batches. ``origin``: source_object, landing_date
    and first_row (the batch's first row number in its part)."""
    n = table.num_rows
    typed = _typed(table)
    extracted_us = int(extracted_at.timestamp() * 1_000_000)
    accepted, kept = _fast_rows(typed, index, extracted_us, n)
    numbers = np.arange(origin["first_row"], origin["first_row"] + n, dtype=np.int64)
    constant = {"source_object": origin["source_object"], "landing_date": origin["landing_date"]}
    if kept is not None and accepted.any():
        count = int(accepted.sum())
        columns = {**kept, "status": pa.repeat(pa.scalar("ok"), count), "row_number": pa.array(numbers[accepted])}
        columns.update({k: pa.repeat(pa.scalar(v, PARSED.field(k).type), count) for k, v in constant.items()})
        yield pa.RecordBatch.from_arrays(
            [columns[f.name].cast(f.type) if f.name in columns else pa.nulls(count, f.type) for f in PARSED],
            schema=PARSED,
        )
    rest = np.flatnonzero(~accepted)
    if len(rest):
        rows = list(_slow_rows(table, typed, rest, registry, extracted_at))
        for row, number in zip(rows, numbers[rest].tolist()):
            row.update(constant, row_number=number)
        yield pa.RecordBatch.from_pylist(rows, schema=PARSED)


def validate_parts(lake_root: str, storage_options: dict, parts: dict[str, dict], registries: RegistrySnapshots):
    """A mapInArrow function: batches of part keys in, PARSED rows out. ``parts``: key ->
    {landing_date, extracted_at}; ``registries``: the snapshots of the landing days."""

    def run(batches):
        lake = Lake(lake_root, storage_options)
        lookup = registries.lookup()
        for batch in batches:
            for key in batch.column("key").to_pylist():
                part = parts[key]
                origin = {"source_object": key, "landing_date": part["landing_date"], "first_row": 1}
                extracted_at = datetime.fromisoformat(part["extracted_at"])
                registry, index = lookup(part["landing_date"])
                try:
                    with lake.open(key) as f:
                        for chunk in pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS):
                            table = pa.Table.from_batches([chunk])
                            yield from validate_part(table, registry, index, extracted_at, origin)
                            origin["first_row"] += table.num_rows
                except Exception as exc:  # noqa: BLE001 - an unreadable part is a verdict, not a failed run
                    yield pa.RecordBatch.from_pylist(
                        [
                            {
                                "status": "unreadable",
                                "reason": "unreadable_object",
                                "detail": f"{type(exc).__name__}: {exc}"[:500],
                                "source_object": key,
                                "landing_date": part["landing_date"],
                            }
                        ],
                        schema=PARSED,
                    )

    return run


# --- the run --------------------------------------------------------------------------------


@dataclass
class HistoryReport:
    day: str
    files: int = 0
    rows_in_manifest: int = 0
    rows_read: int = 0
    curated_new: int = 0
    curated_updated: int = 0
    duplicates_in_batch: int = 0
    duplicates_existing: int = 0
    overlapped_by_telemetry: int = 0
    quarantined: int = 0
    unreadable_files: int = 0
    drifted_files: int = 0
    event_dates: list[str] = field(default_factory=list)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def accounted(self) -> bool:
        """Every row read has one fate, and every row the extract wrote was read."""
        fates = (
            self.curated_new
            + self.curated_updated
            + self.duplicates_in_batch
            + self.duplicates_existing
            + self.overlapped_by_telemetry
            + self.quarantined
        )
        return self.rows_read == fates and self.rows_read == self.rows_in_manifest


@dataclass
class HistoryRun:
    reports: list[HistoryReport]
    drift: dict[str, SchemaDrift]  # part key -> how its schema differs (drifted parts only)
    displaced: int = 0  # historian rows already curated that telemetry now covers, deleted
    buckets: dict[str, int] = field(default_factory=dict)


def read_manifest(lake: Lake, day: date) -> dict:
    key = readings_manifest_key(day)
    if not lake.exists(key):
        raise RuntimeError(f"no readings extract for {day}: materialize landing/historical_readings for it first")
    return json.loads(lake.read_bytes(key))


def landed_drift(lake: Lake, keys: list[str]) -> dict[str, SchemaDrift]:
    """Each part's schema drift, from its Parquet footer (an unreadable part is left to validation)."""
    out = {}
    for key in keys:
        try:
            with lake.open(key) as f:
                drift = schema_drift(pq.read_schema(f))
        except Exception:  # noqa: BLE001 - validation quarantines it as unreadable_object
            continue
        if drift.any:
            out[key] = drift
    return out


def curate_days(
    spark, lake: Lake, days: list[date], storage_options: dict | None = None, table_format: str = "delta"
) -> HistoryRun:
    """Curate the readings of these extract days in one pass (see the module docstring)."""
    days = sorted(set(days))
    manifests = {day: read_manifest(lake, day) for day in days}
    reports = {
        day: HistoryReport(day=day.isoformat(), files=len(m["files"]), rows_in_manifest=m["rows"])
        for day, m in manifests.items()
    }
    parts = {
        key: {"landing_date": day, "extracted_at": m["extracted_at"]}
        for day, m in manifests.items()
        for key in m["files"]
    }
    # Raises for a day with readings but no registry landed on or before it.
    registries = RegistrySnapshots.load(lake, {part["landing_date"] for part in parts.values()})
    drift = landed_drift(lake, list(parts))
    for key in drift:
        reports[parts[key]["landing_date"]].drifted_files += 1
    run = HistoryRun(list(reports.values()), drift)
    staging = f"curated/_staging/history/{days[0]:%Y%m%d}-{days[-1]:%Y%m%d}"
    parsed = None
    if parts:
        keys = sorted(parts)
        keys_df = spark.createDataFrame([(k,) for k in keys], "key string").repartition(python_partitions(len(keys)))
        parsed = keys_df.mapInArrow(validate_parts(lake.url, storage_options or {}, parts, registries), PARSED_DDL)
        parsed = staged(spark, parsed, lake.uri(f"{staging}/parsed"))
        _curate_parsed(spark, lake, parsed, parts, reports, run, staging, table_format)
    _replace_quarantine(spark, lake, days, parsed, table_format)
    lake.delete(staging, recursive=True)
    return run


def _curate_parsed(spark, lake: Lake, parsed, parts: dict, reports: dict, run: HistoryRun, staging: str, table_format):
    """Count, deduplicate, apply precedence, MERGE and aggregate the validated rows of the run."""
    from pyspark.sql import functions as F

    by_day = {day.isoformat(): report for day, report in reports.items()}
    keys = sorted(parts)

    valid_counts: Counter = Counter()
    reasons: dict[str, Counter] = {day: Counter() for day in by_day}
    for r in parsed.groupBy("landing_date", "status", "reason").count().collect():
        day = r["landing_date"].isoformat()
        report = by_day[day]
        if r["status"] == "ok":
            valid_counts[day] += r["count"]
            report.rows_read += r["count"]
        else:
            reasons[day][r["reason"]] += r["count"]
            if r["status"] == "rejected":
                report.quarantined += r["count"]
                report.rows_read += r["count"]
            else:
                report.unreadable_files += r["count"]
    for day, report in by_day.items():
        report.quarantine_reasons = dict(sorted(reasons[day].items()))

    valid = parsed.where(F.col("status") == "ok").select(*CURATED_COLUMNS, "row_number", "landing_date")
    later = staged(spark, superseded_copies(valid), lake.uri(f"{staging}/later"))
    for r in later.groupBy("landing_date").count().collect():
        by_day[r["landing_date"].isoformat()].duplicates_in_batch = r["count"]
    kept = valid.join(later.select(*ROW_ID), list(ROW_ID), "left_anti")

    spans = kept.groupBy("event_date").agg(F.min("event_ts").alias("lo"), F.max("event_ts").alias("hi")).collect()
    dates = sorted(s["event_date"].isoformat() for s in spans)
    curated = open_table(spark, lake, CURATED_TELEMETRY, "event_date", table_format)
    existing = None
    if dates and curated.exists():
        lo, hi = min(s["lo"] for s in spans), max(s["hi"] for s in spans)
        in_range = curated.read().where(F.col("event_date").isin(dates))
        # Whole periods: telemetry in the first and last readings' periods counts.
        in_range = in_range.where(F.col("event_ts").between(lo - timedelta(minutes=15), hi + timedelta(minutes=15)))
        periods = staged(spark, telemetry_periods(in_range, dates), lake.uri(f"{staging}/periods"))
        if periods.limit(1).count():
            kept_periods = with_period(kept)
            overlapped = kept_periods.join(periods, list(PERIOD_KEY), "left_semi")
            for r in overlapped.groupBy("landing_date").count().collect():
                by_day[r["landing_date"].isoformat()].overlapped_by_telemetry = r["count"]
            kept = kept_periods.join(periods, list(PERIOD_KEY), "left_anti").drop("period")
            # Historian rows curated before telemetry covered their period (the telemetry job
            # displaces them as it lands; this finds any it could not have known about).
            run.displaced = displace_historian(spark, lake, CURATED_TELEMETRY, periods, dates, table_format)
        existing = (
            in_range.where(is_historian())
            .select(*ROW_KEY, *(F.col(c).alias(f"_t_{c}") for c in ("ingested_at", "reported_value", "reported_unit")))
            .withColumn("_stored", F.lit(True))
        )

    if existing is not None:
        joined = kept.join(existing, list(ROW_KEY), "left")
        same = F.col("reported_value").eqNullSafe(F.col("_t_reported_value")) & F.col("reported_unit").eqNullSafe(
            F.col("_t_reported_unit")
        )
        fate = (
            F.when(F.col("_stored").isNull(), "new")
            .when((F.col("ingested_at") > F.col("_t_ingested_at")) & ~same, "updated")
            .otherwise("duplicate")
        )
        classified = joined.withColumn("_fate", fate)
    else:
        classified = kept.withColumn("_fate", F.lit("new"))
    written = staged(
        spark,
        classified.where(F.col("_fate") != "duplicate").select(*CURATED_COLUMNS, "landing_date", "_fate"),
        lake.uri(f"{staging}/written"),
    )
    fates = {
        (r["landing_date"].isoformat(), r["_fate"]): r["count"]
        for r in written.groupBy("landing_date", "_fate").count().collect()
    }
    for day, report in by_day.items():
        report.curated_new = fates.get((day, "new"), 0)
        report.curated_updated = fates.get((day, "updated"), 0)
        report.duplicates_existing = (
            valid_counts[day]
            - report.duplicates_in_batch
            - report.overlapped_by_telemetry
            - report.curated_new
            - report.curated_updated
        )

    if any(fates.values()):
        # Marked before the rows exist: a run dying in between leaves a mark, never unmarked rows.
        written_dates = [r["event_date"].isoformat() for r in written.select("event_date").distinct().collect()]
        mark_historian_dates(lake, written_dates)
        rows = written.select(*CURATED_COLUMNS)
        if curated.exists():
            curated.merge_newer(rows, on=ROW_KEY, newer="s.ingested_at > t.ingested_at")
        else:
            curated.create(rows)
    for report in by_day.values():
        report.event_dates = []
    if dates and curated.exists():
        # Every bucket the run's parts have rows in, from the table: a re-run after a crash between
        # the MERGE and here still refreshes them.
        rows = curated.read().where(F.col("event_date").isin(dates))
        ours = rows.where(F.col("source_object").isin(keys))
        run.buckets = refresh_buckets(spark, lake, ours, rows, list(GRAINS), table_format)
        for r in ours.groupBy("source_object", "event_date").count().select("source_object", "event_date").collect():
            report = by_day[parts[r["source_object"]]["landing_date"].isoformat()]
            report.event_dates.append(r["event_date"].isoformat())
        for report in by_day.values():
            report.event_dates = sorted(set(report.event_dates))


def superseded_copies(valid):
    """The row ids (and extract day) of every copy of a reading but the one a run keeps.

    The kept copy is what curating the copies one load after the other leaves in the table: a copy
    replaces the stored one only when it is a later load with another value (a correction), so the
    kept one is the first load of the latest value. Only the keys that repeat are ranked; the others
    are dropped by their row identity in one anti-join (as the telemetry job's later_copies does).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    key = list(READING_KEY)
    repeated = valid.groupBy(*key).count().where(F.col("count") > 1).select(*key)
    copies = valid.join(repeated, key, "left_semi")
    loads = Window.partitionBy(*key).orderBy(*(F.col(c).asc_nulls_first() for c in LOAD_ORDER))
    same_as_before = F.col("reported_value").eqNullSafe(F.lag("reported_value").over(loads)) & F.col(
        "reported_unit"
    ).eqNullSafe(F.lag("reported_unit").over(loads))
    changes = copies.withColumn("_first", F.row_number().over(loads) == 1).withColumn("_same", same_as_before)
    latest = Window.partitionBy(*key).orderBy(*(F.col(c).desc_nulls_last() for c in LOAD_ORDER))
    kept = (
        changes.where(F.col("_first") | ~F.col("_same"))
        .withColumn("_rank", F.row_number().over(latest))
        .where(F.col("_rank") == 1)
    )
    return copies.select(*ROW_ID, "landing_date").join(kept.select(*ROW_ID), list(ROW_ID), "left_anti")


def _replace_quarantine(spark, lake: Lake, days: list[date], parsed, table_format: str) -> None:
    """The extract days' slice of quarantine/historian becomes this run's rejected rows."""
    from pyspark.sql import functions as F

    table = open_table(spark, lake, QUARANTINE_HISTORIAN, "landing_date", table_format)
    if parsed is None:
        if not table.exists():
            return
        rejected = spark.createDataFrame([], PARSED_DDL).select(*QUARANTINE_COLUMNS)
    else:
        rejected = parsed.where(F.col("status") != "ok").select(*QUARANTINE_COLUMNS)
    if table.exists():
        listed = ", ".join(f"date'{day.isoformat()}'" for day in days)
        table.replace(rejected, where=f"landing_date IN ({listed})")
    else:
        table.create(rejected)


# --- the script -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", required=True)
    parser.add_argument("--day", required=True, action="append", dest="days", type=date.fromisoformat)
    parser.add_argument(
        "--table-format",
        choices=TABLE_FORMATS,
        default="delta",
        help="parquet only for a Spark without Delta (the JVM parity test), never for the lake",
    )
    args = parser.parse_args(argv)
    with open_dagster_pipes() as pipes:
        lake = Lake(args.lake)
        with spark_session("curate-history") as spark:
            run = curate_days(spark, lake, args.days, table_format=args.table_format)
        for report in run.reports:
            pipes.log.info(f"curated history of the extract of {report.day}: {json.dumps(asdict(report))}")
        report_history(pipes, run)


def report_history(pipes, run: HistoryRun) -> None:
    """One materialization for the run (counts summed over its days, each day's own in a table), the
    row accounting and the landed schema checks."""
    reports = run.reports
    counts = {k: sum(getattr(r, k) for r in reports) for k, v in asdict(reports[0]).items() if isinstance(v, int)}
    reasons: Counter = Counter()
    for r in reports:
        reasons.update(r.quarantine_reasons)
    fates = ("curated_new", "curated_updated", "duplicates_in_batch", "duplicates_existing", "overlapped_by_telemetry")
    pipes.report_asset_materialization(
        asset_key=ASSET_KEY,
        metadata={
            **counts,
            "dagster/row_count": counts["curated_new"] + counts["curated_updated"],
            "days": len(reports),
            "quarantine_rate": quarantine_rate(counts["quarantined"], counts["rows_read"]),
            "historian_rows_displaced": run.displaced,
            "buckets_written": {"raw_value": run.buckets, "type": "json"},
            "event_dates": ", ".join(sorted({d for r in reports for d in r.event_dates})),
            "quarantine_reasons": {"raw_value": dict(sorted(reasons.items())), "type": "json"},
            "per_day": {
                "raw_value": [{"day": r.day, **{k: getattr(r, k) for k in counts}} for r in reports],
                "type": "json",
            },
        },
    )
    unaccounted = [r.day for r in reports if not r.accounted]
    pipes.report_asset_check(
        asset_key=ASSET_KEY,
        check_name="row_accounting",
        passed=not unaccounted,
        metadata={
            "rows_in_manifests": counts["rows_in_manifest"],
            "rows_read": counts["rows_read"],
            "new + updated + duplicates + overlapped + quarantined": sum(counts[k] for k in (*fates, "quarantined")),
            "unreadable_files": counts["unreadable_files"],
            "days_not_accounted": ", ".join(unaccounted) or "none",
        },
    )
    pipes.report_asset_check(
        asset_key=ASSET_KEY,
        check_name="landed_schema",
        passed=not run.drift,
        severity="WARN",
        metadata={
            "expected": {"raw_value": {f.name: str(f.type) for f in READINGS_SCHEMA}, "type": "json"},
            "drifted_files": len(run.drift),
            "differences": {"raw_value": drift_summary(run.drift), "type": "json"},
        },
    )
    if not PipesEnvVarParamsLoader().is_dagster_pipes_process():  # run by hand: show the reports
        for r in reports:
            print(json.dumps(asdict(r)))


def drift_summary(drift: dict[str, SchemaDrift]) -> dict:
    """The differences of every drifted part, the parts that share them listed together."""
    groups: dict[str, dict] = {}
    for key, d in sorted(drift.items()):
        differences = {k: v for k, v in asdict(d).items() if v}
        group = groups.setdefault(json.dumps(differences, sort_keys=True), {**differences, "files": []})
        group["files"].append(key)
    return {"kinds": list(groups.values())} if groups else {}


if __name__ == "__main__":
    main()
