"""Curated weather for landing days, as a Spark job (Sail locally, EMR Serverless / Glue in prod).

    python -m iot_lake.curated.weather_job --lake ROOT --day 2026-11-20 [--day 2026-11-21 ...]

Several ``--day``s (a backfilled range of days) are curated one after the other in one session.

Weather files are small, so the driver reads and types them with the same validation the landing
asset uses (iot_lake.sources.weather); Spark writes the Delta tables. A row is curated when it has
a site and a time, every value is inside its physical range, the site is in the device registry,
and it was observed on the file's day. Rows observed at the same (site, hour) by several files are
deduplicated, the later file winning. Everything else goes to quarantine/weather with a reason.
The day's slice of both tables is replaced, so re-runs are idempotent.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

from iot_lake.curated.telemetry_job import quarantine_rate
from iot_lake.lake import Lake, registry_day_for, registry_key, weather_day_prefix
from iot_lake.sources.weather import RANGES, SCHEMA, WeatherFileError, read_weather_bytes
from iot_lake.spark.session import spark_session

CURATED_WEATHER = "curated/weather"
QUARANTINE_WEATHER = "quarantine/weather"
QUARANTINE_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),
        ("row_number", pa.int64()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw_row", pa.string()),
        ("landing_date", pa.date32()),
    ]
)


@dataclass
class WeatherReport:
    day: str
    files: int = 0
    unusable_files: int = 0
    rows_read: int = 0
    curated: int = 0
    duplicates: int = 0
    quarantined: int = 0
    sites: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def accounted(self) -> bool:
        return self.rows_read == self.curated + self.duplicates + self.quarantined


def registry_sites(lake: Lake, day: date) -> set[str]:
    snapshot = registry_day_for(lake, day)  # a day before the first snapshot: the first (historian's past)
    if snapshot is None:
        raise RuntimeError(f"no device registry landed on or before {day}: materialize landing/device_registry first")
    with lake.open(registry_key(snapshot, "sites")) as f:
        return set(pq.read_table(f, columns=["site_id"]).column("site_id").to_pylist())


def row_reasons(table: pa.Table, day: date, sites: set[str]) -> list[str | None]:
    """The first reason each row cannot be curated, in a fixed order; None for a good row."""
    checks = [("missing_field", pc.and_(pc.is_valid(table["site_id"]), pc.is_valid(table["observed_at"])))]
    for name, (lo, hi) in RANGES.items():
        checks.append(
            (f"out_of_range:{name}", pc.and_(pc.greater_equal(table[name], lo), pc.less_equal(table[name], hi)))
        )
    checks.append(("unknown_site", pc.is_in(table["site_id"], pa.array(sorted(sites), pa.string()))))
    observed_day = pc.cast(table["observed_at"], pa.date32())
    checks.append(("wrong_day", pc.equal(observed_day, pa.scalar(day, pa.date32()))))
    passes = [(reason, pc.fill_null(ok, False).to_pylist()) for reason, ok in checks]
    return [next((reason for reason, ok in passes if not ok[i]), None) for i in range(table.num_rows)]


def split_day(lake: Lake, day: date, sites: set[str]) -> tuple[pa.Table, pa.Table, WeatherReport]:
    """The day's files -> (curated rows, quarantine rows, report)."""
    report = WeatherReport(day=day.isoformat())
    good: list[pa.Table] = []
    rejected: list[dict] = []
    for obj in sorted(lake.list(weather_day_prefix(day)), key=lambda o: o.key):
        report.files += 1
        try:
            table = read_weather_bytes(obj.key, lake.read_bytes(obj.key))
        except WeatherFileError as exc:
            report.unusable_files += 1
            rejected.append(
                {
                    "source_file": obj.key,
                    "row_number": None,
                    "reason": "unusable_file",
                    "detail": str(exc),
                    "raw_row": None,
                }
            )
            continue
        report.rows_read += table.num_rows
        reasons = row_reasons(table, day, sites)
        rows = table.to_pylist()
        for number, (row, reason) in enumerate(zip(rows, reasons), start=1):
            if reason:
                code, _, column = reason.partition(":")
                rejected.append(
                    {
                        "source_file": obj.key,
                        "row_number": number,
                        "reason": code,
                        "detail": column or row.get("site_id") or "",
                        "raw_row": json.dumps(row, default=str),
                    }
                )
        mask = pa.array([r is None for r in reasons])
        good.append(table.filter(mask).append_column("source_file", pa.array([obj.key] * table.num_rows).filter(mask)))
    curated = pa.concat_tables(good) if good else SCHEMA.append(pa.field("source_file", pa.string())).empty_table()
    # The later file wins a (site, time) both report: keep the last occurrence in key order.
    seen: dict[tuple, int] = {}
    for i, k in enumerate(zip(curated["site_id"].to_pylist(), curated["observed_at"].to_pylist())):
        seen[k] = i
    keep = sorted(seen.values())
    report.duplicates = curated.num_rows - len(keep)
    curated = curated.take(pa.array(keep, pa.int64()))
    curated = curated.append_column("observed_date", pc.cast(curated["observed_at"], pa.date32()))
    quarantine = pa.Table.from_pylist([{**r, "landing_date": day} for r in rejected], schema=QUARANTINE_SCHEMA)
    report.curated = curated.num_rows
    report.quarantined = sum(1 for r in rejected if r["reason"] != "unusable_file")
    report.sites = len(set(curated["site_id"].to_pylist()))
    reasons: dict[str, int] = {}
    for r in rejected:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    report.quarantine_reasons = dict(sorted(reasons.items()))
    return curated, quarantine, report


def replace_day(lake: Lake, key: str, df, column: str, day: date) -> None:
    """Replace one date's slice of a Delta table (create the table on first write)."""
    from pyspark.sql import functions as F

    # Sail deletes the slice and appends whatever it is given, so only that date's rows may be written.
    df = df.where(F.col(column) == F.lit(day))
    if not lake.exists(f"{key}/_delta_log"):
        df.write.format("delta").partitionBy(column).save(lake.uri(key))
        return
    (
        df.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", f"{column} = date'{day.isoformat()}'")
        .save(lake.uri(key))
    )


def arrow_frame(spark, table: pa.Table):
    """A DataFrame from an Arrow table, empty ones included (Spark cannot infer an empty schema)."""
    if table.num_rows:
        return spark.createDataFrame(table)
    from pyspark.sql.pandas.types import from_arrow_schema

    return spark.createDataFrame([], schema=from_arrow_schema(table.schema))


def curate_weather_day(spark, lake: Lake, day: date) -> WeatherReport:
    curated, quarantine, report = split_day(lake, day, registry_sites(lake, day))
    replace_day(lake, CURATED_WEATHER, arrow_frame(spark, curated), "observed_date", day)
    replace_day(lake, QUARANTINE_WEATHER, arrow_frame(spark, quarantine), "landing_date", day)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", required=True)
    parser.add_argument("--day", required=True, action="append", dest="days", type=date.fromisoformat)
    args = parser.parse_args(argv)
    with open_dagster_pipes() as pipes:
        lake = Lake(args.lake)
        reports = []
        with spark_session("curate-weather") as spark:
            for day in sorted(set(args.days)):
                reports.append(curate_weather_day(spark, lake, day))
                pipes.log.info(f"curated weather {day}: {json.dumps(asdict(reports[-1]))}")
        total = combined(reports)
        pipes.report_asset_materialization(
            metadata={
                **{k: v for k, v in asdict(total).items() if isinstance(v, int)},
                "days": len(reports),
                "dagster/row_count": total.curated,
                "quarantine_rate": quarantine_rate(total.quarantined, total.rows_read),
                "quarantine_reasons": {"raw_value": total.quarantine_reasons, "type": "json"},
            },
        )
        pipes.report_asset_check(
            check_name="row_accounting",
            passed=all(r.accounted for r in reports),
            metadata={
                "rows_read": total.rows_read,
                "curated + duplicates + quarantined": total.curated + total.duplicates + total.quarantined,
                "days_not_accounted": [r.day for r in reports if not r.accounted],
            },
        )
        if not PipesEnvVarParamsLoader().is_dagster_pipes_process():  # run by hand: show the report
            print(json.dumps(asdict(total)))


def combined(reports: list[WeatherReport]) -> WeatherReport:
    """The days' reports added up (sites: the most of any day), named by their first..last day."""
    days = [r.day for r in reports]
    total = WeatherReport(day=days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}")
    for r in reports:
        for name in ("files", "unusable_files", "rows_read", "curated", "duplicates", "quarantined"):
            setattr(total, name, getattr(total, name) + getattr(r, name))
        total.sites = max(total.sites, r.sites)
        for reason, n in r.quarantine_reasons.items():
            total.quarantine_reasons[reason] = total.quarantine_reasons.get(reason, 0) + n
    return total


if __name__ == "__main__":
    main()
