"""Child process: the DuckDB reference of the curated history, timed.

    python -m benchmarks.history.duck --lake DIR --day 2026-11-20 [--day ...]

Same input (the extract days' Parquet parts and the registry snapshot) and the same work where SQL
makes it cheap: valid = known device and metric, a unit that converts, a value in range after
conversion, a recorded time not after its load (+5 min) nor 20 years before it; one row per
(device, metric, recorded time), the latest load winning; curated rows, rejected rows and the 1-
and 5-minute aggregates written to Delta with deltalake. Prints one JSON object with its wall
seconds and row counts.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date

from iot_lake.lake import Lake, latest_registry_day, registry_key
from iot_lake.sources.readings import readings_manifest_key
from iot_lake.units import UNITS

VALID = """
    d.device_id IS NOT NULL AND m.metric IS NOT NULL AND u.unit IS NOT NULL AND r.value IS NOT NULL
    AND r.recorded_at IS NOT NULL AND isfinite(r.value)
    AND r.value * u.scale + u."offset" BETWEEN m.min_value AND m.max_value
    AND r.recorded_at <= least(r.loaded_at, r.extracted_at) + INTERVAL 5 MINUTE
    AND r.recorded_at >= least(r.loaded_at, r.extracted_at) - INTERVAL 7300 DAY
"""


def transform(con, lake: Lake, days: list[date]) -> dict[str, int]:
    from deltalake import write_deltalake

    manifests = [json.loads(lake.read_bytes(readings_manifest_key(day))) for day in days]
    snapshot = latest_registry_day(lake, days[-1])
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        f"CREATE TEMP TABLE devices AS SELECT device_id, site_id FROM "
        f"read_parquet('{lake.path(registry_key(snapshot, 'devices'))}')"
    )
    con.execute(
        "CREATE TEMP TABLE rules AS SELECT * FROM "
        f"read_parquet('{lake.path(registry_key(snapshot, 'device_metrics'))}')"
    )
    con.execute('CREATE TEMP TABLE units (unit VARCHAR, canonical_unit VARCHAR, scale DOUBLE, "offset" DOUBLE)')
    pairs = [(u, c, s, o) for u, (c, s, o) in UNITS.items()] + [
        (c, c, 1.0, 0.0) for c in {c for c, _, _ in UNITS.values()}
    ]
    con.executemany("INSERT INTO units VALUES (?, ?, ?, ?)", sorted(set(pairs)))
    parts = ", ".join(
        f"SELECT *, DATE '{m['day']}' AS landing_date, TIMESTAMPTZ '{m['extracted_at']}' AS extracted_at "
        f"FROM read_parquet({[lake.path(f) for f in m['files']]}, filename = 'source_object')"
        for m in manifests
        if m["files"]
    ).replace(", SELECT", " UNION ALL BY NAME SELECT")
    con.execute(f"""
        CREATE TEMP TABLE judged AS
        SELECT r.*, d.site_id, m.canonical_unit, r.value * u.scale + u."offset" AS canonical,
               coalesce({VALID}, false) AS ok
        FROM ({parts}) r
        LEFT JOIN devices d USING (device_id)
        LEFT JOIN rules m ON m.device_id = r.device_id AND m.metric = r.metric
        LEFT JOIN units u ON u.unit = coalesce(r.unit, m.unit) AND u.canonical_unit = m.canonical_unit
    """)
    con.execute("""
        CREATE TEMP TABLE curated AS
        SELECT device_id, site_id, metric, canonical AS value, canonical_unit AS unit, value AS reported_value,
               unit AS reported_unit, recorded_at AS event_ts,
               'historian:' || device_id || ':' || metric || ':' || epoch(recorded_at)::BIGINT AS message_id,
               loaded_at AS ingested_at, source_object, CAST(recorded_at AS DATE) AS event_date
        FROM judged WHERE ok
        QUALIFY row_number() OVER (PARTITION BY device_id, metric, recorded_at
                                   ORDER BY loaded_at DESC, landing_date DESC, source_object DESC) = 1
    """)
    write_deltalake(
        lake.path("curated/telemetry"), con.sql("SELECT * FROM curated").to_arrow_reader(), partition_by=["event_date"]
    )
    rejected = con.sql(
        "SELECT source_object, reading_id, device_id, metric, landing_date FROM judged WHERE NOT ok"
    ).to_arrow_reader()
    write_deltalake(lake.path("quarantine/historian"), rejected, partition_by=["landing_date"])
    for grain, seconds in (("1min", 60), ("5min", 300)):
        buckets = con.sql(f"""
            SELECT device_id, metric, time_bucket(INTERVAL {seconds} SECOND, event_ts) AS bucket_start,
                   arg_max(site_id, event_ts) AS site_id, arg_max(unit, event_ts) AS unit, count(*) AS readings,
                   avg(value) AS mean, min(value) AS min, max(value) AS max, stddev_samp(value) AS stddev,
                   arg_max(value, event_ts) AS last, max(event_ts) AS last_ts,
                   CAST(time_bucket(INTERVAL {seconds} SECOND, event_ts) AS DATE) AS event_date
            FROM curated GROUP BY ALL
        """).to_arrow_reader()
        write_deltalake(lake.path(f"curated/telemetry_{grain}"), buckets, partition_by=["event_date"])
    counts = con.execute("SELECT count(*), count(*) FILTER (WHERE NOT ok) FROM judged").fetchone()
    return {
        "rows_read": counts[0],
        "quarantined": counts[1],
        "curated": con.execute("SELECT count(*) FROM curated").fetchone()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lake", required=True)
    parser.add_argument("--day", required=True, action="append", type=date.fromisoformat)
    args = parser.parse_args()
    import duckdb

    t0 = time.perf_counter()
    with duckdb.connect() as con:
        counts = transform(con, Lake(args.lake), sorted(args.day))
    print(json.dumps({"seconds": time.perf_counter() - t0, **counts}))


if __name__ == "__main__":
    main()
