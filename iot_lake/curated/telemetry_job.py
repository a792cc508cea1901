"""Curated telemetry for one landing hour, as a Spark job (Sail locally, EMR Serverless / Glue in prod).

    python -m iot_lake.curated.telemetry_job --lake ROOT --hour 2026-11-20T05:00:00+00:00

1. Take exactly the objects the landing inventory of that hour listed.
2. Read and parse them in Python inside Spark (mapInArrow, one task per object), with
   iot_lake.curated.records deciding what is valid: the same verdicts on every engine, and a
   truncated object still yields the lines before its cut.
3. Valid records: deduplicate on (device_id, metric, event_ts, message_id) within the batch and
   against the table, then MERGE the new ones into curated/telemetry, partitioned by event_date, so
   late records land in their event-time partition.
4. Everything else goes to quarantine/telemetry with its reason, raw line and source object; the
   hour's quarantine is replaced, so re-runs are idempotent.
5. Row accounting: lines landed = curated new + duplicates + quarantined, reported through
   Dagster Pipes with the rest of the metadata.
6. 1- and 5-minute aggregates of every bucket those records fall in (iot_lake.curated.aggregates),
   in the same Spark session.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

from iot_lake.curated.aggregates import AGGREGATE_TABLES, GRAINS, refresh_aggregates
from iot_lake.curated.records import Record, Registry, parse_line
from iot_lake.curated.typical import RegistryIndex, parse_typical
from iot_lake.lake import Lake, latest_registry_day, registry_key
from iot_lake.sources.telemetry import UnreadableObject, block_lines, inventoried_keys, inventory_key, iter_blocks
from iot_lake.spark.session import spark_session
from iot_lake.spark.tables import TABLE_FORMATS, open_table

CURATED_TELEMETRY = "curated/telemetry"
QUARANTINE_TELEMETRY = "quarantine/telemetry"
NATURAL_KEY = ("device_id", "metric", "event_ts", "message_id")
LATE_AFTER = timedelta(minutes=10)

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
    ]
)
_DDL_TYPES = {
    pa.string(): "string",
    pa.float64(): "double",
    pa.int64(): "bigint",
    pa.date32(): "date",
    pa.timestamp("us", tz="UTC"): "timestamp",
}
PARSED_DDL = ", ".join(f"{f.name} {_DDL_TYPES[f.type]}" for f in PARSED)
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


def load_registry(lake: Lake, day) -> Registry:
    """The newest registry snapshot landed on or before ``day``."""
    snapshot = latest_registry_day(lake, day)
    if snapshot is None:
        raise RuntimeError(f"no device registry landed on or before {day}: materialize landing/device_registry first")

    def rows(table: str) -> list[dict]:
        with lake.open(registry_key(snapshot, table)) as f:
            return pq.read_table(f).to_pylist()

    return Registry.from_rows(rows("devices"), rows("device_metrics"))


def parse_objects(lake_root: str, storage_options: dict, registry: Registry, landing_hour: datetime | None = None):
    """A mapInArrow function: batches of object keys in, parsed rows out.

    A block of lines at a time: typical lines are validated column-wise (curated.typical), the
    rest one by one with parse_line, which alone words the rejections.
    """

    def run(batches):
        lake = Lake(lake_root, storage_options)
        index = RegistryIndex.of(registry)
        for batch in batches:
            for key in batch.column("key").to_pylist():
                number = 0  # lines before this block
                try:
                    for block in iter_blocks(lake, key):
                        lines = block_lines(block)
                        typical = parse_typical(lines, index)
                        yield _typical_rows(typical.records, key, number)
                        rest = [
                            _parsed_row(raw, registry, key, number + 1 + int(i), landing_hour)
                            for i, raw in zip(typical.rest, lines.take(typical.rest).to_pylist())
                        ]
                        if rest:
                            yield pa.RecordBatch.from_pylist(rest, schema=PARSED)
                        number += len(lines)
                except UnreadableObject as exc:
                    yield pa.RecordBatch.from_pylist(
                        [
                            {
                                "status": "unreadable",
                                "reason": "unreadable_object",
                                "detail": str(exc),
                                "source_object": key,
                            }
                        ],
                        schema=PARSED,
                    )

    return run


def _parsed_row(raw: bytes, registry: Registry, key: str, number: int, landing_hour: datetime | None = None) -> dict:
    text = raw.decode("utf-8", errors="replace")
    result = parse_line(text, registry, landing_hour)
    if isinstance(result, Record):
        row = asdict(result)
        row.update(status="ok", event_date=result.event_ts.date())
    else:
        row = {
            "status": "rejected",
            "reason": result.reason,
            "detail": result.detail,
            "device_id": result.device_id,
            "metric": result.metric,
            "raw_line": text,
        }
    row.update(source_object=key, line_number=number)
    return row


def _typical_rows(records: pa.RecordBatch, key: str, number: int) -> pa.RecordBatch:
    def constant(value: str) -> pa.Array:
        return pc.fill_null(pa.nulls(records.num_rows, pa.string()), value)

    columns = {
        **dict(zip(records.schema.names, records.columns)),
        "status": constant("ok"),
        "event_date": pc.cast(records.column("event_ts"), pa.date32()),
        "source_object": constant(key),
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
    event_dates: list[str] = field(default_factory=list)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def accounted(self) -> bool:
        return (
            self.lines_landed
            == self.curated_new + self.duplicates_in_batch + self.duplicates_existing + self.quarantined
        )


def first_per_key(valid):
    """One row per natural key: its first ingestion (then by source object and line number).

    Most keys occur once, so only the rows of repeated keys are ranked; the later copies are then
    dropped by their row identity (source object, line number) in one anti-join. That reads the
    batch once more instead of splitting it in two and sorting all of it by the key.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    key = list(NATURAL_KEY)
    repeated = valid.groupBy(*key).count().where(F.col("count") > 1).select(*key)
    first = Window.partitionBy(*key).orderBy("ingested_at", "source_object", "line_number")
    later = (
        valid.join(repeated, key, "left_semi")
        .withColumn("_rank", F.row_number().over(first))
        .where(F.col("_rank") > 1)
        .select("source_object", "line_number")
    )
    return valid.join(later, ["source_object", "line_number"], "left_anti").select(*CURATED_COLUMNS)


def _staged(spark, df, uri: str):
    """Write an intermediate result once and read it back, so later steps do not recompute it."""
    # Snappy: staging lives for one run, so writing fast beats the lake's denser default codec.
    df.write.mode("overwrite").option("compression", "snappy").parquet(uri)
    return spark.read.parquet(uri)


def curate_hour(
    spark, lake: Lake, hour: datetime, storage_options: dict | None = None, table_format: str = "delta"
) -> CurateReport:
    from pyspark.sql import functions as F

    inv_key = inventory_key(hour)
    if not lake.exists(inv_key):
        raise RuntimeError(
            f"no landing inventory for {hour:%Y-%m-%d %H:00}: materialize landing/telemetry for it first"
        )
    inventory = json.loads(lake.read_bytes(inv_key))
    keys = [o["key"] for o in inventory["objects"]]
    report = CurateReport(
        hour=hour.isoformat(),
        objects=len(keys),
        lines_landed=sum(o["records"] + o["malformed_lines"] for o in inventory["objects"]),
    )
    if not keys:
        return report
    registry = load_registry(lake, hour.date())

    # Parse once into a staging table; every later step reads it instead of re-parsing.
    staging = f"curated/_staging/telemetry/{hour:%Y%m%dT%H}"
    keys_df = spark.createDataFrame([(k,) for k in keys], "key string").repartition(max(1, min(len(keys), 64)))
    parsed = keys_df.mapInArrow(parse_objects(lake.url, storage_options or {}, registry, hour), PARSED_DDL)
    parsed = _staged(spark, parsed, lake.uri(f"{staging}/parsed"))

    counts = {(r["status"], r["reason"]): r["count"] for r in parsed.groupBy("status", "reason").count().collect()}
    report.quarantined = sum(n for (status, _), n in counts.items() if status == "rejected")
    report.unreadable_objects = sum(n for (status, _), n in counts.items() if status == "unreadable")
    report.quarantine_reasons = dict(sorted(Counter({r: n for (s, r), n in counts.items() if s != "ok"}).items()))
    valid_count = counts.get(("ok", None), 0)

    valid = parsed.where(F.col("status") == "ok").select(*CURATED_COLUMNS, "line_number")
    # The report needs the deduplicated rows' count, dates and time range: one row per natural key
    # gives them all (event time is part of the key) without writing the deduplicated rows out.
    stats = (
        valid.groupBy(*NATURAL_KEY, "event_date")
        .agg(F.count(F.lit(1)).alias("n"))
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.collect_set("event_date").alias("dates"),
            F.sum(F.when(F.col("event_ts") < F.lit(hour - LATE_AFTER), 1).otherwise(0)).alias("late"),
            F.min("event_ts").alias("first_ts"),
            F.max("event_ts").alias("last_ts"),
        )
        .first()
    )
    unique_count, dates = stats["rows"], sorted(stats["dates"])
    report.duplicates_in_batch = valid_count - unique_count
    report.event_dates = [d.isoformat() for d in dates]
    report.late_records = int(stats["late"] or 0)

    unique = first_per_key(valid)
    curated = open_table(spark, lake, CURATED_TELEMETRY, "event_date", table_format)
    if curated.exists():
        # Only rows in the batch's event-time range can match: file statistics skip the rest of the dates.
        existing = (
            curated.read()
            .where(F.col("event_date").isin(dates))
            .where(F.col("event_ts").between(stats["first_ts"], stats["last_ts"]))
            .select(*NATURAL_KEY)
        )
        # Staged: counting the new rows and inserting them would otherwise deduplicate twice.
        new = _staged(spark, unique.join(existing, list(NATURAL_KEY), "left_anti"), lake.uri(f"{staging}/new"))
        report.curated_new = new.count()
        if report.curated_new:
            curated.insert_new(new, on=("event_date", *NATURAL_KEY))
    else:
        curated.create(unique)
        report.curated_new = unique_count
    report.duplicates_existing = unique_count - report.curated_new

    quarantine = (
        parsed.where(F.col("status") != "ok")
        .withColumn("landing_hour", F.lit(hour))
        .withColumn("landing_date", F.lit(hour.date()))
        .select(*QUARANTINE_COLUMNS)
    )
    quarantined = open_table(spark, lake, QUARANTINE_TELEMETRY, "landing_date", table_format)
    if quarantined.exists():
        # An explicit offset makes the literal one instant whatever the session's time zone.
        quarantined.replace(quarantine, where=f"landing_hour = timestamp'{hour:%Y-%m-%d %H:%M:%S}+00:00'")
    else:
        quarantined.create(quarantine)
    lake.delete(staging, recursive=True)
    return report


STEPS = ("curate", *GRAINS)


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
        help="comma-separated subset of curate,1min,5min (aggregates alone rebuild from curated rows)",
    )
    parser.add_argument(
        "--table-format",
        choices=TABLE_FORMATS,
        default="delta",
        help="parquet only for a Spark without Delta (the JVM parity test), never for the lake",
    )
    args = parser.parse_args(argv)
    hours = sorted({datetime.fromisoformat(h).astimezone(UTC) for h in args.hours})
    steps = set(args.steps.split(","))
    if not steps or not steps <= set(STEPS):
        parser.error(f"--steps must be a subset of {','.join(STEPS)}")
    grains = [g for g in GRAINS if g in steps]
    reports: list[CurateReport] = []
    buckets = dict.fromkeys(grains, 0)
    with open_dagster_pipes() as pipes:
        lake = Lake(args.lake)
        with spark_session("curate-telemetry") as spark:
            for hour in hours:
                if "curate" in steps:
                    reports.append(curate_hour(spark, lake, hour, table_format=args.table_format))
                    event_dates = reports[-1].event_dates
                    pipes.log.info(f"curated {hour:%Y-%m-%d %H:00}: {json.dumps(asdict(reports[-1]))}")
                else:
                    event_dates = landed_event_dates(spark, lake, hour, args.table_format)
                if grains:
                    aggregated = refresh_aggregates(
                        spark, lake, hour, event_dates, CURATED_TELEMETRY, grains, table_format=args.table_format
                    )
                    pipes.log.info(f"aggregated {hour:%Y-%m-%d %H:00}: {json.dumps(aggregated.buckets)}")
                    for grain in grains:
                        buckets[grain] += aggregated.buckets.get(grain, 0)
        if reports:
            report_curated(pipes, reports)
        for grain in grains:
            pipes.report_asset_materialization(
                asset_key=AGGREGATE_TABLES[grain],
                metadata={"buckets_written": buckets[grain], "dagster/row_count": buckets[grain], "hours": len(hours)},
            )


def landed_event_dates(spark, lake: Lake, hour: datetime, table_format: str = "delta") -> list[str]:
    """Event dates of the curated rows that came from this landing hour's objects."""
    from pyspark.sql import functions as F

    keys = inventoried_keys(lake, hour)
    curated = open_table(spark, lake, CURATED_TELEMETRY, "event_date", table_format)
    if not keys or not curated.exists():
        return []
    rows = curated.read().where(F.col("source_object").isin(keys)).select("event_date").distinct().collect()
    return sorted(r["event_date"].isoformat() for r in rows)


def quarantine_rate(quarantined: int, read: int) -> float:
    """The share of what was read that went to quarantine (0 when nothing was read)."""
    return round(quarantined / read, 6) if read else 0.0


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
            "per_hour": {
                "raw_value": [{"hour": r.hour, **{k: getattr(r, k) for k in counts}} for r in reports],
                "type": "json",
            },
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
