"""Child process: the DuckDB reference implementation of the curated transform, timed.

    python -m benchmarks.curate.duck --lake DIR --hour 2026-11-21T00:00:00+00:00 [--hour ...]

Same input (the hour's gzip NDJSON objects and the registry snapshot), the same valid-record
definition where SQL makes it cheap (required fields, known device and metric, convertible unit,
finite and in range after conversion, no clock skew), dedupe on the natural key keeping the first
ingestion, the 1-minute aggregate (count, mean, min, max, sample stddev, last) and both written to
Delta with deltalake. It does not quarantine or account rows: a reference for the data path.
Prints one JSON object with its wall seconds and row counts.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime

from iot_lake.lake import Lake, latest_registry_day, registry_key, telemetry_hour_prefix
from iot_lake.units import UNITS

COLUMNS = {
    "device_id": "VARCHAR",
    "metric": "VARCHAR",
    "value": "DOUBLE",
    "unit": "VARCHAR",
    "ts": "VARCHAR",
    "message_id": "VARCHAR",
    "ingested_at": "VARCHAR",
}


def _ts(column: str) -> str:
    # Devices stamp ISO 8601 with Z or an offset, or epoch milliseconds (a JSON number, read as text).
    return (
        f"CASE WHEN regexp_full_match({column}, '-?[0-9]+') THEN make_timestamptz({column}::BIGINT * 1000) "
        f"ELSE TRY_CAST({column} AS TIMESTAMPTZ) END"
    )


def transform(con, lake: Lake, *hours: datetime) -> dict[str, int]:
    """The hours' objects in one pass (the registry of the first hour's day)."""
    from deltalake import write_deltalake

    files = [lake.path(o.key) for hour in hours for o in lake.list(telemetry_hour_prefix(hour))]
    day = latest_registry_day(lake, hours[0].date())
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        f"CREATE TEMP TABLE devices AS SELECT device_id, site_id FROM "
        f"read_parquet('{lake.path(registry_key(day, 'devices'))}')"
    )
    con.execute(
        f"CREATE TEMP TABLE rules AS SELECT * FROM read_parquet('{lake.path(registry_key(day, 'device_metrics'))}')"
    )
    con.execute('CREATE TEMP TABLE units (unit VARCHAR, canonical_unit VARCHAR, scale DOUBLE, "offset" DOUBLE)')
    con.executemany("INSERT INTO units VALUES (?, ?, ?, ?)", [(u, c, s, o) for u, (c, s, o) in UNITS.items()])
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in COLUMNS.items()) + "}"
    file_list = "[" + ", ".join(f"'{f}'" for f in files) + "]"
    con.execute(f"""
        CREATE TEMP TABLE curated AS
        WITH raw AS (
            SELECT *, {_ts("ts")} AS event_ts, {_ts("ingested_at")} AS ingested
            FROM read_json({file_list}, format = 'newline_delimited', compression = 'gzip', columns = {columns},
                           ignore_errors = true, filename = 'source_object')
        ), valid AS (
            SELECT r.device_id, d.site_id, r.metric, r.value * u.scale + u."offset" AS value, m.canonical_unit AS unit,
                   r.value AS reported_value, coalesce(r.unit, m.unit) AS reported_unit, r.event_ts, r.message_id,
                   r.ingested AS ingested_at, r.source_object
            FROM raw r
            JOIN devices d USING (device_id)
            JOIN rules m ON m.device_id = r.device_id AND m.metric = r.metric
            JOIN units u ON u.unit = coalesce(r.unit, m.unit) AND u.canonical_unit = m.canonical_unit
            WHERE r.message_id <> '' AND r.event_ts IS NOT NULL AND isfinite(r.value)
              AND (r.ingested_at IS NULL OR r.ingested IS NOT NULL)
              AND r.value * u.scale + u."offset" BETWEEN m.min_value AND m.max_value
              AND (r.ingested IS NULL OR r.event_ts <= r.ingested + INTERVAL 5 MINUTE)
        )
        SELECT *, CAST(event_ts AS DATE) AS event_date FROM valid
        QUALIFY row_number() OVER (PARTITION BY device_id, metric, event_ts, message_id
                                   ORDER BY ingested_at, source_object) = 1
    """)
    curated = con.sql("SELECT * FROM curated").to_arrow_reader()
    write_deltalake(lake.path("curated/telemetry"), curated, partition_by=["event_date"])
    minute = con.sql("""
        SELECT device_id, metric, time_bucket(INTERVAL 1 MINUTE, event_ts) AS bucket_start,
               arg_max(site_id, event_ts) AS site_id, arg_max(unit, event_ts) AS unit, count(*) AS readings,
               avg(value) AS mean, min(value) AS min, max(value) AS max, stddev_samp(value) AS stddev,
               arg_max(value, event_ts) AS last, max(event_ts) AS last_ts,
               CAST(time_bucket(INTERVAL 1 MINUTE, event_ts) AS DATE) AS event_date
        FROM curated GROUP BY ALL
    """).to_arrow_reader()
    write_deltalake(lake.path("curated/telemetry_1min"), minute, partition_by=["event_date"])
    curated_rows = con.execute("SELECT count(*) FROM curated").fetchone()[0]
    buckets = con.execute(
        "SELECT count(*) FROM (SELECT DISTINCT device_id, metric, "
        "time_bucket(INTERVAL 1 MINUTE, event_ts) FROM curated)"
    ).fetchone()[0]
    return {"curated": curated_rows, "buckets_1min": buckets}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lake", required=True)
    parser.add_argument("--hour", required=True, action="append")
    args = parser.parse_args()
    import duckdb

    t0 = time.perf_counter()
    with duckdb.connect() as con:
        counts = transform(con, Lake(args.lake), *map(datetime.fromisoformat, args.hour))
    print(json.dumps({"seconds": time.perf_counter() - t0, **counts}))


if __name__ == "__main__":
    main()
