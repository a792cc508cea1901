"""Curated telemetry for landing hours, as a Spark job (Sail locally, EMR Serverless / Glue in prod).

    python -m iot_lake.curated.telemetry_job --lake ROOT --hour 2026-11-20T05:00:00+00:00 [--hour ...]

The hours of a run are curated in batches (plan_batches): consecutive hours, up to MAX_BATCH_HOURS
hours and MAX_BATCH_LINES lines. A batch is one pass:

1. Take exactly the objects the landing inventories of its hours listed.
2. Read and parse them in Python inside Spark (mapInArrow: a task per object on Spark, per core
   on Sail), with iot_lake.curated.records deciding what is valid: the same verdicts on every
   engine, and a truncated object still yields the lines before its cut. Each object's landing
   hour comes from its key (for the clock-skew rule, the reports and the quarantine), and its day
   picks the registry snapshot it is validated against (a batch may span snapshots).
3. Valid records: deduplicate on (device_id, metric, event_ts, message_id) within the batch and
   against the table, then MERGE the new ones into curated/telemetry, partitioned by event_date, so
   late records land in their event-time partition. A later copy of a message whose payload
   differs from the first copy's is no duplicate but a conflicting_duplicate, quarantined.
4. Everything else goes to quarantine/telemetry with its reason, raw line and source object; the
   quarantine of the batch's hours is replaced, so re-runs are idempotent.
   The curated rows of each object of the batch go to curated/telemetry_object_counts, replaced
   per object (iot_lake.curated.object_counts): what the warehouse's row accounting sums.
5. Row accounting, per landing hour exactly as curating the hours one by one would count it:
   lines landed = curated new + duplicates + quarantined, reported through Dagster Pipes with the
   rest of the metadata.
6. 1- and 5-minute aggregates of every bucket the batch's records fall in
   (iot_lake.curated.aggregates), in the same Spark session.
7. The hot state: the batch's latest reading per device and metric, where newer than the stored
   one (iot_lake.curated.state), for the serving API.
"""

from __future__ import annotations

import argparse
import json
import operator
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import reduce

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

from iot_lake.curated.aggregates import AGGREGATE_TABLES, GRAINS, refresh_aggregates
from iot_lake.curated.object_counts import count_objects
from iot_lake.curated.precedence import PERIOD_KEY, displace_historian, historian_dates, with_period
from iot_lake.curated.records import Record, Registry, Rejection, parse_line
from iot_lake.curated.registries import RegistrySnapshots, one_registry
from iot_lake.curated.state import DEVICE_STATE, refresh_state
from iot_lake.curated.typical import RegistryIndex, parse_typical
from iot_lake.lake import Lake, telemetry_hour_of_key
from iot_lake.sources.telemetry import (
    LONG_LINE_MARKER,
    MAX_LINE_BYTES,
    RAW_LINE_KEEP,
    UnreadableObject,
    block_lines,
    inventoried_keys,
    inventory_key,
    iter_blocks,
    long_line_length,
)
from iot_lake.spark.session import python_partitions, spark_session
from iot_lake.spark.tables import TABLE_FORMATS, ddl, open_table
from iot_lake.spark.tables import staged as _staged

CURATED_TELEMETRY = "curated/telemetry"
QUARANTINE_TELEMETRY = "quarantine/telemetry"
NATURAL_KEY = ("device_id", "metric", "event_ts", "message_id")
# A message is one publish of one metric: its copies must agree on what it says (PAYLOAD). A later
# copy that does not is quarantined as conflicting_duplicate, so a gateway or firmware bug that
# reuses message ids shows instead of one of the values silently winning.
MESSAGE_KEY = ("device_id", "metric", "message_id")
PAYLOAD = ("event_ts", "reported_value", "reported_unit")
CONFLICTING = "conflicting_duplicate"
ROW_ID = ("source_object", "line_number")  # a landed line's identity
LATE_AFTER = timedelta(minutes=10)
# The first delivery of a natural key is kept: its first ingestion, then object and line.
FIRST_BY = ("ingested_at", "source_object", "line_number")
# A batch's bounds. A batch turns its hours' fixed Spark and Delta costs (a few seconds per pass,
# whatever its size) into one: a week of a small fleet is one pass. The line budget keeps a batch's
# staging and shuffles to a few hours of a large fleet (an hour over the budget is still a batch of
# its own).
MAX_BATCH_HOURS = 24 * 7
MAX_BATCH_LINES = 2_000_000

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
        ("event_ts", pa.timestamp("us", tz="UTC")),
        ("event_date", pa.date32()),
        ("message_id", pa.string()),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw_line", pa.string()),
        ("source_object", pa.string()),
        ("line_number", pa.int64()),
        ("landing_hour", pa.timestamp("us", tz="UTC")),  # of the source object, from its key
        ("landing_date", pa.date32()),  # its UTC date, computed here: Spark's to_date follows the session time zone
    ]
)
PARSED_DDL = ddl(PARSED)
CURATED_COLUMNS = [
    "device_id",
    "site_id",
    "metric",
    "value",
    "unit",
    "reported_value",
    "reported_unit",
    "event_ts",
    "message_id",
    "ingested_at",
    "source_object",
    "event_date",
]
QUARANTINE_COLUMNS = [
    "landing_hour",
    "source_object",
    "line_number",
    "reason",
    "detail",
    "raw_line",
    "device_id",
    "metric",
    "landing_date",
]


def parse_objects(lake_root: str, storage_options: dict, registries: Registry | RegistrySnapshots):
    """A mapInArrow function: batches of object keys in, parsed rows out.

    A block of lines at a time: typical lines are validated column-wise (curated.typical), the
    rest one by one with parse_line, which alone words the rejections. Each object's landing hour
    is that of its key (a batch spans hours, days too): it judges the clock of lines without
    ingested_at, and its day picks the registry snapshot the lines are validated against
    (``registries``: the snapshots of the landing days, or one snapshot for every day), as a run
    of that hour alone would.
    """

    def run(batches):
        lake = Lake(lake_root, storage_options)
        lookup = one_registry(registries) if isinstance(registries, Registry) else registries.lookup()
        for batch in batches:
            for key in batch.column("key").to_pylist():
                landing_hour = telemetry_hour_of_key(key)
                registry, index = lookup(landing_hour.date())
                origin = {
                    "source_object": key,
                    "landing_hour": landing_hour,
                    "landing_date": landing_hour.date() if landing_hour else None,
                }
                number = 0  # lines before this block
                try:
                    for block in iter_blocks(lake, key):
                        lines = block_lines(block)
                        yield from block_rows(lines, index, registry, origin, number)
                        number += len(lines)
                except UnreadableObject as exc:
                    yield pa.RecordBatch.from_pylist(
                        [{"status": "unreadable", "reason": "unreadable_object", "detail": str(exc), **origin}],
                        schema=PARSED,
                    )

    return run


def block_rows(lines: pa.Array, index: RegistryIndex, registry: Registry, origin: dict, number: int):
    """The parsed rows of one block: typical lines column-wise, the rest (or, should the fast path
    ever fail on a block, all of it) one by one through the total parse_line."""
    try:
        typical = parse_typical(lines, index)
        records, rest = _typical_rows(typical.records, origin, number), typical.rest
    except Exception:  # noqa: BLE001 - the slow path gives every line its own verdict
        records, rest = None, np.arange(len(lines))
    if records is not None:
        yield records
    rows = [
        _parsed_row(raw, registry, origin, number + 1 + int(i)) for i, raw in zip(rest, lines.take(rest).to_pylist())
    ]
    if rows:
        yield _record_batch(rows)


def _record_batch(rows: list[dict]) -> pa.RecordBatch:
    try:
        return pa.RecordBatch.from_pylist(rows, schema=PARSED)
    except Exception:  # noqa: BLE001 - find the row no table can hold and make it a rejection
        return pa.concat_batches([_one_row(row) for row in rows])


def _one_row(row: dict) -> pa.RecordBatch:
    try:
        return pa.RecordBatch.from_pylist([row], schema=PARSED)
    except Exception as exc:  # noqa: BLE001
        keep = ("source_object", "landing_hour", "landing_date", "line_number", "raw_line")
        return pa.RecordBatch.from_pylist(
            [
                {"status": "rejected", "reason": "parse_error", "detail": f"{type(exc).__name__}: {exc}"[:200]}
                | {k: row.get(k) for k in keep}
            ],
            schema=PARSED,
        )


def _parsed_row(raw: bytes, registry: Registry, origin: dict, number: int) -> dict:
    too_long = long_line_length(raw)
    if too_long is not None:
        result = Rejection("line_too_long", f"a line of {too_long:,} bytes, over the limit of {MAX_LINE_BYTES:,}")
        raw = raw[: raw.rindex(LONG_LINE_MARKER)]
    else:
        result = parse_line(raw.decode("utf-8", errors="replace"), registry, origin["landing_hour"])
    if isinstance(result, Record):
        row = asdict(result)
        row.update(status="ok", event_date=result.event_ts.date())
    else:
        # The quarantine keeps the head of a raw line and says how long it was: a rejected line
        # costs at most about RAW_LINE_KEEP bytes there, whatever a sender wrote.
        detail = result.detail
        if len(raw) > RAW_LINE_KEEP and too_long is None:
            detail += f" (a line of {len(raw):,} bytes; its first {RAW_LINE_KEEP:,} kept)"
        row = {
            "status": "rejected",
            "reason": result.reason,
            "detail": _text(detail),
            "device_id": result.device_id,
            "metric": result.metric,
            "raw_line": raw[:RAW_LINE_KEEP].decode("utf-8", errors="replace"),
        }
    row.update(origin, line_number=number)
    return row


def _text(value: str) -> str:
    """``value`` as text any table can hold (a lone surrogate from a JSON escape becomes '?')."""
    return value.encode("utf-8", errors="replace").decode("utf-8")


def _typical_rows(records: pa.RecordBatch, origin: dict, number: int) -> pa.RecordBatch:
    def constant(name: str, value) -> pa.Array:
        return pa.repeat(pa.scalar(value, PARSED.field(name).type), records.num_rows)

    columns = {
        **dict(zip(records.schema.names, records.columns)),
        "status": constant("status", "ok"),
        "event_date": pc.cast(records.column("event_ts"), pa.date32()),
        **{name: constant(name, value) for name, value in origin.items()},
        "line_number": pc.add(records.column("position"), number + 1),
    }
    return pa.RecordBatch.from_arrays(
        [columns.get(f.name, pa.nulls(records.num_rows, f.type)) for f in PARSED], schema=PARSED
    )


@dataclass
class CurateReport:
    hour: str
    objects: int = 0
    lines_landed: int = 0
    curated_new: int = 0
    duplicates_in_batch: int = 0
    duplicates_existing: int = 0
    quarantined: int = 0
    unreadable_objects: int = 0
    late_records: int = 0
    historian_displaced: int = 0  # historian rows of the periods this telemetry covers (a batch's on its first hour)
    event_dates: list[str] = field(default_factory=list)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def accounted(self) -> bool:
        return (
            self.lines_landed
            == self.curated_new + self.duplicates_in_batch + self.duplicates_existing + self.quarantined
        )


def later_copies(valid, order: tuple[str, ...] = FIRST_BY):
    """Every copy of a message after its first by ``order``, with the first copy's payload and
    object (``_first_*``) and whether it says something else (``_conflicting``).

    Most messages occur once, so only the rows of repeated ones are ranked; later copies are then
    dropped by their row identity (ROW_ID) in one anti-join. That reads the batch once more instead
    of splitting it in two and sorting all of it by the key. A copy with the first's payload is a
    duplicate; one with another payload a conflicting duplicate.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    key = list(MESSAGE_KEY)
    repeated = valid.groupBy(*key).count().where(F.col("count") > 1).select(*key)
    ranked = valid.join(repeated, key, "left_semi").withColumn(
        "_rank", F.row_number().over(Window.partitionBy(*key).orderBy(*order))
    )
    firsts = ranked.where(F.col("_rank") == 1).select(*key, *_firsts(*PAYLOAD, "source_object"))
    later = ranked.where(F.col("_rank") > 1).join(firsts, key)
    return later.withColumn("_conflicting", ~_same_payload())


def conflicting_with_table(unique, existing):
    """The rows of ``unique`` whose message the table holds only with another payload, as
    quarantine rows (a row the table holds with the same payload is a duplicate, not a conflict)."""
    key = list(MESSAGE_KEY)
    matched = unique.join(existing.select(*key, *_firsts(*PAYLOAD, "source_object")), key)
    same = matched.where(_same_payload()).select(*ROW_ID)
    differing = matched.where(~_same_payload()).join(same, list(ROW_ID), "left_anti").dropDuplicates(list(ROW_ID))
    return _conflict_rows(differing)


def _firsts(*columns: str):
    from pyspark.sql import functions as F

    return [F.col(c).alias(f"_first_{c}") for c in columns]


def _same_payload():
    from pyspark.sql import functions as F

    return reduce(operator.and_, (F.col(c).eqNullSafe(F.col(f"_first_{c}")) for c in PAYLOAD))


def _conflict_rows(df):
    """Quarantine rows for conflicting copies: the copy's own fields as its raw line (a curated
    record keeps no raw text; the object and line number lead to it), and both payloads in the detail."""
    from pyspark.sql import functions as F

    def payload(prefix: str):
        return [
            F.col(f"{prefix}reported_value").cast("string"),
            F.lit(" "),
            F.col(f"{prefix}reported_unit"),
            F.lit(" at "),
            F.col(f"{prefix}event_ts").cast("string"),
        ]

    detail = F.concat(
        F.lit("message "),
        F.col("message_id"),
        F.lit(": "),
        *payload(""),
        F.lit("; its first copy: "),
        *payload("_first_"),
        F.lit(" in "),
        F.col("_first_source_object"),  # its object (the table keeps no line number), as in hour-by-hour runs
    )
    raw = F.to_json(
        F.struct(
            "device_id",
            "metric",
            F.col("reported_value").alias("value"),
            F.col("reported_unit").alias("unit"),
            F.col("event_ts").alias("ts"),
            "message_id",
            "ingested_at",
        )
    )
    return df.select(
        "landing_hour",
        "source_object",
        "line_number",
        F.lit(CONFLICTING).alias("reason"),
        detail.alias("detail"),
        raw.alias("raw_line"),
        "device_id",
        "metric",
        "landing_date",
        "event_ts",  # for the reports' late count; not a quarantine column
    )


def _hour_counts(df) -> Counter:
    """Rows per landing hour (epoch seconds), as the reports count them."""
    return Counter({r["hour"]: r["count"] for r in df.groupBy(_hour_id("landing_hour")).count().collect()})


def read_inventory(lake: Lake, hour: datetime) -> dict:
    inv_key = inventory_key(hour)
    if not lake.exists(inv_key):
        raise RuntimeError(
            f"no landing inventory for {hour:%Y-%m-%d %H:00}: materialize landing/telemetry for it first"
        )
    return json.loads(lake.read_bytes(inv_key))


def _lines(inventory: dict) -> int:
    return sum(o["records"] + o["malformed_lines"] for o in inventory["objects"])


def plan_batches(
    lake: Lake, hours: list[datetime], max_hours: int = MAX_BATCH_HOURS, max_lines: int = MAX_BATCH_LINES
) -> list[list[datetime]]:
    """The hours in order, cut into batches that curate_batch takes: runs of consecutive hours, at
    most ``max_hours`` hours and, unless one hour alone exceeds it, ``max_lines`` landed lines each.
    A batch may span registry snapshots: each object is validated against its own day's."""
    batches: list[list[datetime]] = []
    batch_lines = 0
    for hour in sorted(hours):
        lines = _lines(read_inventory(lake, hour))
        if not batches or len(batches[-1]) >= max_hours or batch_lines + lines > max_lines:
            batches.append([])
            batch_lines = 0
        batches[-1].append(hour)
        batch_lines += lines
    return batches


def curate_hour(
    spark, lake: Lake, hour: datetime, storage_options: dict | None = None, table_format: str = "delta"
) -> CurateReport:
    """One landing hour: a batch of one."""
    [report] = curate_batch(spark, lake, [hour], storage_options, table_format)
    return report


def _hour_id(column: str):
    """A landing hour as epoch seconds: collected, it is one instant whatever the session time zone."""
    from pyspark.sql import functions as F

    return F.unix_timestamp(column).alias("hour")


def curate_batch(
    spark, lake: Lake, hours: list[datetime], storage_options: dict | None = None, table_format: str = "delta"
) -> list[CurateReport]:
    """Curate landing hours in one pass; one report per hour, the same as curating them one by one
    in order would give (tests/test_curated_batches.py), each hour validated against its own day's
    registry snapshot.

    A key first seen in an earlier hour of the batch is, for a later hour, a duplicate of an
    existing row, as it would be once that earlier hour had been curated: the kept copy of a key is
    the first by landing hour, then by FIRST_BY.
    """
    from pyspark.sql import functions as F

    hours = sorted(set(hours))
    inventories = {hour: read_inventory(lake, hour) for hour in hours}
    reports = {
        hour: CurateReport(
            hour=hour.isoformat(), objects=len(inventories[hour]["objects"]), lines_landed=_lines(inventories[hour])
        )
        for hour in hours
    }
    landed = [hour for hour in hours if inventories[hour]["objects"]]
    if not landed:
        return list(reports.values())
    registries = RegistrySnapshots.load(lake, [hour.date() for hour in landed])
    # Rows are assigned to their hour by their object's key; an inventory lists its hour's keys.
    if strays := [
        k for hour in landed for k in inventories[hour]["objects"] if telemetry_hour_of_key(k["key"]) != hour
    ]:
        raise RuntimeError(
            f"inventoried objects outside their hour's key layout: {', '.join(k['key'] for k in strays[:5])}"
        )
    keys = [o["key"] for hour in landed for o in inventories[hour]["objects"]]

    # Parse once into a staging table; every later step reads it instead of re-parsing.
    staging = f"curated/_staging/telemetry/{landed[0]:%Y%m%dT%H}-{landed[-1]:%Y%m%dT%H}"
    keys_df = spark.createDataFrame([(k,) for k in keys], "key string").repartition(python_partitions(len(keys)))
    parsed = keys_df.mapInArrow(parse_objects(lake.url, storage_options or {}, registries), PARSED_DDL)
    parsed = _staged(spark, parsed, lake.uri(f"{staging}/parsed"))
    by_id = {int(hour.timestamp()): reports[hour] for hour in landed}

    valid_counts = Counter()
    reasons: dict[int, Counter] = {h: Counter() for h in by_id}
    for r in parsed.groupBy(_hour_id("landing_hour"), "status", "reason").count().collect():
        report = by_id[r["hour"]]
        if r["status"] == "ok":
            valid_counts[r["hour"]] += r["count"]
        else:
            reasons[r["hour"]][r["reason"]] += r["count"]
            if r["status"] == "rejected":
                report.quarantined += r["count"]
            else:
                report.unreadable_objects += r["count"]
    for hour_id, report in by_id.items():
        report.quarantine_reasons = dict(sorted(reasons[hour_id].items()))

    valid = parsed.where(F.col("status") == "ok").select(
        *CURATED_COLUMNS, "line_number", "landing_hour", "landing_date"
    )
    # Earliest landing hour first, here and for duplicates: what hour-by-hour runs keep.
    first_by = ("landing_hour", *FIRST_BY)
    # Later copies of messages: a few percent of the rows, staged for the conflicts and the dedupe.
    later = _staged(spark, later_copies(valid, first_by), lake.uri(f"{staging}/later"))
    in_batch = _conflict_rows(later.where(F.col("_conflicting")))
    conflicts, conflicts_in_batch, conflicts_existing = [in_batch], _hour_counts(in_batch), Counter()
    if conflicts_in_batch:
        valid = valid.join(in_batch.select(*ROW_ID), list(ROW_ID), "left_anti")
    # The reports need each hour's deduplicated rows' count, dates and time range: one row per hour
    # and natural key gives them all (event time is part of the key) without writing those rows out.
    late_before = F.unix_timestamp("landing_hour") - int(LATE_AFTER.total_seconds())
    stats = (
        valid.groupBy("landing_hour", *NATURAL_KEY, "event_date")
        .agg(F.count(F.lit(1)).alias("n"))
        .groupBy(_hour_id("landing_hour"))
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.collect_set("event_date").alias("dates"),
            # Whole seconds on both sides: the bound is a whole second, so this is event_ts < bound.
            F.sum(F.when(F.unix_timestamp("event_ts") < late_before, 1).otherwise(0)).alias("late"),
            F.min("event_ts").alias("first_ts"),
            F.max("event_ts").alias("last_ts"),
        )
        .collect()
    )
    unique_counts = Counter()
    for s in stats:
        report = by_id[s["hour"]]
        unique_counts[s["hour"]] = s["rows"]
        report.event_dates = sorted(d.isoformat() for d in s["dates"])
        report.late_records = int(s["late"] or 0)
    for hour_id, report in by_id.items():
        report.duplicates_in_batch = valid_counts[hour_id] - conflicts_in_batch[hour_id] - unique_counts[hour_id]

    unique = valid.join(later.select(*ROW_ID), list(ROW_ID), "left_anti").select(
        *CURATED_COLUMNS, "line_number", "landing_hour", "landing_date"
    )
    curated = open_table(spark, lake, CURATED_TELEMETRY, "event_date", table_format)
    exists = curated.exists()
    dates = sorted({d for s in stats for d in s["dates"]})  # the event dates of the batch's valid rows
    if exists and stats:
        # Only rows in the batch's event-time range can match: file statistics skip the rest of the dates.
        existing = (
            curated.read()
            .where(F.col("event_date").isin(dates))
            .where(F.col("event_ts").between(min(s["first_ts"] for s in stats), max(s["last_ts"] for s in stats)))
            .select(*NATURAL_KEY, "reported_value", "reported_unit", "source_object")
        )
        # Copies of a curated message that say something else: found within the batch's event-time
        # range only (a copy moved to another day is not looked for: that would read the whole table).
        against = _staged(spark, conflicting_with_table(unique, existing), lake.uri(f"{staging}/conflicts_existing"))
        conflicts_existing = _hour_counts(against)
        if conflicts_existing:
            # Hour by hour, such a copy was counted in its hour's stats (as late, if it was) before
            # it proved conflicting; in a batch it may be an in-batch conflict, never counted. Uncount it.
            late_conflicts = _hour_counts(against.where(F.unix_timestamp("event_ts") < late_before))
            for hour_id, report in by_id.items():
                report.late_records -= late_conflicts[hour_id]
            conflicts.append(against)
            unique = unique.join(against.select(*ROW_ID), list(ROW_ID), "left_anti")
        unique = unique.join(existing.select(*NATURAL_KEY), list(NATURAL_KEY), "left_anti")
    # Staged: counting the new rows per hour and writing them would otherwise deduplicate twice.
    new = _staged(spark, unique, lake.uri(f"{staging}/new"))
    new_counts = {r["hour"]: r["count"] for r in new.groupBy(_hour_id("landing_hour")).count().collect()}
    for hour_id, report in by_id.items():
        report.curated_new = new_counts.get(hour_id, 0)
        report.duplicates_existing = unique_counts[hour_id] - report.curated_new - conflicts_existing[hour_id]
        if conflicted := conflicts_in_batch[hour_id] + conflicts_existing[hour_id]:
            report.quarantined += conflicted
            report.quarantine_reasons = dict(sorted({**report.quarantine_reasons, CONFLICTING: conflicted}.items()))
    if not exists:
        curated.create(new.select(*CURATED_COLUMNS))
    elif new_counts:
        curated.insert_new(new.select(*CURATED_COLUMNS), on=("event_date", *NATURAL_KEY), partitions=dates)
    if new_counts:
        by_id[min(by_id)].historian_displaced = _displace_history(spark, lake, new, stats, table_format)
    # After the MERGE, so the counts are the table's (a re-run stores the same): the warehouse's row
    # accounting reads these instead of counting curated/telemetry every hour.
    count_objects(spark, lake, curated, keys, dates, table_format)

    rejected = parsed.where(F.col("status") != "ok").select(*QUARANTINE_COLUMNS)
    for conflicting in conflicts:
        rejected = rejected.unionByName(conflicting.select(*QUARANTINE_COLUMNS))
    quarantine = (
        rejected
        # In a session whose time zone is not UTC, Sail's replaceWhere refuses to union the staged
        # column with the table's UTC one (tests/test_curated_telemetry.py, any session time zone);
        # rebuilt from its (whole) epoch seconds, the hour is the same instant in a type that fits.
        .withColumn("landing_hour", F.timestamp_seconds(F.unix_timestamp("landing_hour"))).select(*QUARANTINE_COLUMNS)
    )
    quarantined = open_table(spark, lake, QUARANTINE_TELEMETRY, "landing_date", table_format)
    if quarantined.exists():
        # Explicit offsets make the literals instants whatever the session's time zone; the dates
        # let the engine skip other partitions. Hours without objects keep what they have, as a
        # run of that hour alone would.
        landing_dates = ", ".join(f"date'{d:%Y-%m-%d}'" for d in sorted({hour.date() for hour in landed}))
        instants = ", ".join(f"timestamp'{hour:%Y-%m-%d %H:%M:%S}+00:00'" for hour in landed)
        quarantined.replace(quarantine, where=f"landing_date IN ({landing_dates}) AND landing_hour IN ({instants})")
    else:
        quarantined.create(quarantine)
    lake.delete(staging, recursive=True)
    return list(reports.values())


def _displace_history(spark, lake: Lake, new, stats, table_format: str) -> int:
    """Telemetry wins where the historian has the same period (iot_lake.curated.precedence): only
    in event dates the history job marked, so a batch without history costs an existence check
    per event date."""
    from pyspark.sql import functions as F

    dates = historian_dates(lake, {d for s in stats for d in s["dates"]})
    if not dates:
        return 0
    periods = with_period(new.where(F.col("event_date").isin(dates)).select("device_id", "metric", "event_ts"))
    return displace_historian(
        spark, lake, CURATED_TELEMETRY, periods.select(*PERIOD_KEY).distinct(), dates, table_format
    )


STATE = "state"
STEPS = ("curate", *GRAINS, STATE)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", required=True)
    parser.add_argument(
        "--hour",
        required=True,
        action="append",
        dest="hours",
        help="landing hour, ISO 8601 (UTC); repeat it to run a range of hours in one session",
    )
    parser.add_argument(
        "--steps",
        default=",".join(STEPS),
        help="comma-separated subset of curate,1min,5min,state (aggregates and state alone rebuild from curated rows)",
    )
    parser.add_argument(
        "--table-format",
        choices=TABLE_FORMATS,
        default="delta",
        help="parquet only for a Spark without Delta (the JVM parity test), never for the lake",
    )
    parser.add_argument(
        "--batch-hours",
        type=int,
        default=MAX_BATCH_HOURS,
        help="at most this many landing hours in one pass (1: hour by hour)",
    )
    parser.add_argument(
        "--batch-lines", type=int, default=MAX_BATCH_LINES, help="at most this many landed lines in one pass"
    )
    args = parser.parse_args(argv)
    hours = sorted({datetime.fromisoformat(h).astimezone(UTC) for h in args.hours})
    steps = set(args.steps.split(","))
    if not steps or not steps <= set(STEPS):
        parser.error(f"--steps must be a subset of {','.join(STEPS)}")
    if args.batch_hours < 1 or args.batch_lines < 1:
        parser.error("--batch-hours and --batch-lines must be positive")
    grains = [g for g in GRAINS if g in steps]
    reports: list[CurateReport] = []
    buckets = dict.fromkeys(grains, 0)
    series = 0
    with open_dagster_pipes() as pipes:
        lake = Lake(args.lake)
        with spark_session("curate-telemetry") as spark:
            for batch in plan_batches(lake, hours, args.batch_hours, args.batch_lines):
                span = f"{batch[0]:%Y-%m-%d %H:00}" + (f"..{batch[-1]:%Y-%m-%d %H:00}" if len(batch) > 1 else "")
                if "curate" in steps:
                    curated = curate_batch(spark, lake, batch, table_format=args.table_format)
                    for hour, report in zip(batch, curated):
                        pipes.log.info(f"curated {hour:%Y-%m-%d %H:00}: {json.dumps(asdict(report))}")
                    reports += curated
                    event_dates = sorted({d for r in curated for d in r.event_dates})
                else:
                    event_dates = landed_event_dates(spark, lake, batch, args.table_format)
                if grains:
                    aggregated = refresh_aggregates(
                        spark, lake, batch, event_dates, CURATED_TELEMETRY, grains, table_format=args.table_format
                    )
                    pipes.log.info(f"aggregated {span}: {json.dumps(aggregated.buckets)}")
                    for grain in grains:
                        buckets[grain] += aggregated.buckets.get(grain, 0)
                if STATE in steps:
                    refreshed = refresh_state(spark, lake, batch, event_dates, CURATED_TELEMETRY, args.table_format)
                    pipes.log.info(f"state {span}: {refreshed} series")
                    series += refreshed
        if reports:
            report_curated(pipes, reports)
        for grain in grains:
            pipes.report_asset_materialization(
                asset_key=AGGREGATE_TABLES[grain],
                metadata={"buckets_written": buckets[grain], "dagster/row_count": buckets[grain], "hours": len(hours)},
            )
        if STATE in steps:
            pipes.report_asset_materialization(
                asset_key=DEVICE_STATE, metadata={"series_refreshed": series, "hours": len(hours)}
            )


def landed_event_dates(spark, lake: Lake, hours: list[datetime], table_format: str = "delta") -> list[str]:
    """Event dates of the curated rows that came from these landing hours' objects."""
    from pyspark.sql import functions as F

    keys = [key for hour in hours for key in inventoried_keys(lake, hour)]
    curated = open_table(spark, lake, CURATED_TELEMETRY, "event_date", table_format)
    if not keys or not curated.exists():
        return []
    rows = curated.read().where(F.col("source_object").isin(keys)).select("event_date").distinct().collect()
    return sorted(r["event_date"].isoformat() for r in rows)


def quarantine_rate(quarantined: int, read: int) -> float:
    """The share of what was read that went to quarantine (0 when nothing was read)."""
    return round(quarantined / read, 6) if read else 0.0


def per_hour_metadata(reports: list[CurateReport], counts: dict) -> dict:
    """Each hour's counts as a table for one hour's run. Dagster copies a range run's metadata into
    each of its hours' materializations (a week: 168 copies of a 168-row table, 6.8 MB of event
    log), so a range run points to where each hour's counts are kept instead."""
    if len(reports) == 1:
        return {"raw_value": [{"hour": r.hour, **{k: getattr(r, k) for k in counts}} for r in reports], "type": "json"}
    where = "a range run: each hour's counts are in curated/telemetry_object_counts (warehouse: mart_row_accounting)"
    return {"raw_value": where, "type": "text"}


def report_curated(pipes, reports: list[CurateReport]) -> None:
    """One materialization for the run: counts summed over its hours, each hour's own in a table."""
    counts = {k: sum(getattr(r, k) for r in reports) for k, v in asdict(reports[0]).items() if isinstance(v, int)}
    reasons = Counter()
    for r in reports:
        reasons.update(r.quarantine_reasons)
    dates = sorted({d for r in reports for d in r.event_dates})
    pipes.report_asset_materialization(
        asset_key=CURATED_TELEMETRY,
        metadata={
            **counts,
            "dagster/row_count": counts["curated_new"],
            "hours": len(reports),
            "quarantine_rate": quarantine_rate(counts["quarantined"], counts["lines_landed"]),
            "event_dates": ", ".join(dates),
            "quarantine_reasons": {"raw_value": dict(sorted(reasons.items())), "type": "json"},
            "per_hour": per_hour_metadata(reports, counts),
        },
    )
    unaccounted = [r.hour for r in reports if not r.accounted]
    pipes.report_asset_check(
        asset_key=CURATED_TELEMETRY,
        check_name="row_accounting",
        passed=not unaccounted,
        metadata={
            "lines_landed": counts["lines_landed"],
            "curated_new + duplicates + quarantined": counts["curated_new"]
            + counts["duplicates_in_batch"]
            + counts["duplicates_existing"]
            + counts["quarantined"],
            "hours_not_accounted": ", ".join(unaccounted) or "none",
        },
    )
    if not PipesEnvVarParamsLoader().is_dagster_pipes_process():  # run by hand: show the reports
        for r in reports:
            print(json.dumps(asdict(r)))


if __name__ == "__main__":
    main()
