"""What the serving API reads from the lake per request, with delta-rs, narrowed to one device.

- Latest state: the hot-state table (curated/device_state, a row per series), read once per table
  version and looked up by device; never a scan of curated telemetry.
- The forecast band for now: every device's band of the current 5-minute bucket, read once per bucket
  and version of forecasts/telemetry_5min.
- Series: the 1- or 5-minute aggregates, only the event_date partitions of the asked range.
- Forecast bands: forecasts/telemetry_5min, only the origin_date partitions that can cover the range
  (forecasts reach a day ahead of their origin), the latest origin at or before each bucket.
- Scores: the detector's per-minute scores (ops/deviations), only the event_date partitions of the range.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from iot_lake.curated.aggregates import AGGREGATE_TABLES
from iot_lake.curated.state import DEVICE_STATE
from iot_lake.lake import Lake, dates_between

FORECASTS = "forecasts/telemetry_5min"
DEVIATIONS = "ops/deviations"
FORECAST_HORIZON = timedelta(days=1)  # HYPERPARAMETERS["horizon_hours"] of the batch forecast
FORECAST_STEP = 300
BAND = ("yhat", "lo_80", "hi_80", "lo_95", "hi_95")
DERIVED_PER_VERSION = 16  # values kept per table version: the bands of the last few 5-minute buckets


class DeltaTables:
    """The lake's Delta tables, each opened once and kept between requests.

    Opening a table replays its log from the last checkpoint, and the tables read here take a commit
    every run (the hot state one an hour), so opening them afresh was most of a request's time. Before
    each read a kept table is brought up to its newest commit when it has one after the version held
    (``update_incremental`` then reads only the newer commits), so a commit is visible to the next
    request: nothing is served stale.
    What is derived from a whole version (the fleet's hot state, every device's band of a 5-minute
    bucket) is kept with the version it came from (``derived``). Safe across the server's threads: a
    table is updated, listed and derived from under its own lock; a dataset's rows are read outside it."""

    def __init__(self, lake: Lake, delta_options: dict | None = None):
        self.lake, self.delta_options = lake, delta_options
        self._tables: dict[str, tuple[threading.Lock, object]] = {}
        self._derived: dict[str, tuple[int, dict]] = {}  # key -> (version, what -> value)
        self._logs: dict[str, str] = {}  # key -> its log's path, the key checked once (Lake.path)
        self._guard = threading.Lock()

    def _opened(self, key: str) -> tuple[threading.Lock, object] | None:
        from deltalake import DeltaTable

        with self._guard:
            if key not in self._tables:
                # A table once created is never removed, so only a missing one is looked for again.
                if not self.lake.exists(f"{key}/_delta_log"):
                    return None
                table = DeltaTable(self.lake.uri(key), storage_options=self.delta_options)
                self._tables[key] = (threading.Lock(), table)
            return self._tables[key]

    def _newest(self, key: str, read: Callable):
        """``read`` of the table brought up to its newest commit; None when the table does not exist yet."""
        opened = self._opened(key)
        if opened is None:
            return None
        lock, table = opened
        with lock:
            if self._committed_after(key, table.version()):
                table.update_incremental()
            return read(table)

    def _committed_after(self, key: str, version: int) -> bool:
        """Whether the table has a commit after ``version``: its next commit file exists. A commit
        appears whole under that name (delta-rs writes it put-if-absent) and versions are consecutive,
        so one stat (one HEAD on S3) tells; ``update_incremental`` lists the log each time it is
        called, a cost every request of the state route paid twice. On a local disk the stat is made
        directly: fsspec's path handling and the key's check took ten times the stat's own time."""
        if key not in self._logs:
            self._logs[key] = self.lake.path(f"{key}/_delta_log")
        name = f"{self._logs[key]}/{version + 1:020d}.json"
        return os.path.exists(name) if self.lake.is_local else self.lake.fs.exists(name)

    def derived(self, key: str, what: Hashable, compute: Callable):
        """``compute(table)`` at the table's newest version, computed once per version and ``what``:
        the version is part of the key, so the call after a commit computes afresh. Computed under the
        table's lock, so the many requests that arrive right after a commit wait for one computation
        instead of each scanning the table."""

        def once(table):
            version = table.version()
            held, values = self._derived.get(key, (None, {}))
            if held != version:
                values = {}
                self._derived[key] = (version, values)
            if what not in values:
                while len(values) >= DERIVED_PER_VERSION:
                    values.pop(next(iter(values)))  # the oldest: a band of a past 5-minute bucket
                values[what] = compute(table)
            return values[what]

        return self._newest(key, once)

    def version(self, key: str) -> int | None:
        """The table's newest version (its log listed afresh); None when it does not exist yet."""
        return self._newest(key, lambda table: table.version())

    def dataset(self, key: str, pruning: list | None = None) -> ds.Dataset | None:
        """The newest version as a dataset of the files the ``pruning`` predicate keeps (rows read later)."""
        return self._newest(key, lambda table: table.to_pyarrow_dataset(file_pruning_predicate=pruning))


def read_table(
    tables: DeltaTables,
    key: str,
    row_filter: pc.Expression,
    partitions: tuple[str, list[date]] | None = None,
) -> pa.Table | None:
    """The rows of a Delta table that match ``row_filter``, reading only the ``partitions`` (column,
    dates) given; None when the table does not exist yet."""
    pruning = [(partitions[0], "in", [d.isoformat() for d in partitions[1]])] if partitions else None
    dataset = tables.dataset(key, pruning)
    return None if dataset is None else dataset.to_table(filter=row_filter)


def latest_state(tables: DeltaTables, device_id: str) -> list[dict]:
    """The device's hot-state rows, one per metric, by metric (rows shared between requests: not to be
    changed). The table holds a row per series of the fleet, so it is read whole once per version."""
    return (tables.derived(DEVICE_STATE, "by device", _state_by_device) or {}).get(device_id, [])


def _state_by_device(table) -> dict[str, list[dict]]:
    by_device: dict[str, list[dict]] = {}
    for row in sorted(table.to_pyarrow_dataset().to_table().to_pylist(), key=lambda r: r["metric"]):
        by_device.setdefault(row["device_id"], []).append(row)
    return by_device


def floor_5min(ts: datetime) -> datetime:
    return datetime.fromtimestamp(int(ts.timestamp()) // FORECAST_STEP * FORECAST_STEP, tz=UTC)


def forecast_bands(
    tables: DeltaTables,
    device_id: str,
    start: datetime,
    end: datetime,
    metric: str | None = None,
) -> dict[tuple[str, datetime], dict]:
    """(metric, 5-minute bucket) -> the band of the latest origin at or before the bucket, for the
    buckets in [floor(start), end]: what the detector scores each minute against."""
    first = floor_5min(start)
    where = (ds.field("device_id") == device_id) & (ds.field("bucket_start") >= pa.scalar(first))
    where &= (ds.field("bucket_start") <= pa.scalar(end)) & (ds.field("origin") <= ds.field("bucket_start"))
    if metric is not None:
        where &= ds.field("metric") == metric
    origins = ("origin_date", dates_between(first - FORECAST_HORIZON, end))
    rows = read_table(tables, FORECASTS, where, origins)
    bands: dict[tuple[str, datetime], dict] = {}
    for row in sorted(rows.to_pylist() if rows is not None else [], key=lambda r: r["origin"]):
        bands[(row["metric"], row["bucket_start"])] = _band(row)  # a later origin replaces an earlier one
    return bands


def _band(row: dict) -> dict:
    return {
        "bucket_start": row["bucket_start"],
        "origin": row["origin"],
        "model_version": row.get("model_version"),
        **{k: row[k] for k in BAND},
    }


def band_now(tables: DeltaTables, device_id: str, now: datetime) -> dict[str, dict]:
    """metric -> the band covering ``now``, from the latest origin at or before its 5-minute bucket
    (so at or before now). Every device's bands of the bucket are read in one scan, once per bucket
    and table version: one device's alone cost as much, the origin_date partitions holding the fleet."""
    bucket = floor_5min(now)
    every = tables.derived(FORECASTS, ("bands", bucket), lambda table: _bands_of_bucket(table, bucket))
    return (every or {}).get(device_id, {})


def _bands_of_bucket(table, bucket: datetime) -> dict[str, dict[str, dict]]:
    """device -> metric -> the band of ``bucket`` from its latest origin at or before the bucket."""
    where = (ds.field("bucket_start") == pa.scalar(bucket)) & (ds.field("origin") <= ds.field("bucket_start"))
    pruning = [("origin_date", "in", [d.isoformat() for d in dates_between(bucket - FORECAST_HORIZON, bucket)])]
    rows = table.to_pyarrow_dataset(file_pruning_predicate=pruning).to_table(filter=where)
    bands: dict[str, dict[str, dict]] = {}
    for row in sorted(rows.to_pylist(), key=lambda r: r["origin"]):
        bands.setdefault(row["device_id"], {})[row["metric"]] = _band(row)  # a later origin replaces an earlier one
    return bands


def aggregates(
    tables: DeltaTables,
    device_id: str,
    metric: str,
    grain: str,
    start: datetime,
    end: datetime,
    after: datetime | None,
    limit: int,
) -> tuple[list[dict], bool]:
    """The series' buckets in [start, end) (after ``after`` if given), at most ``limit`` of them in
    time order, and whether more follow."""
    where = (ds.field("device_id") == device_id) & (ds.field("metric") == metric)
    first = ds.field("bucket_start") > pa.scalar(after) if after else ds.field("bucket_start") >= pa.scalar(start)
    where &= first & (ds.field("bucket_start") < pa.scalar(end))
    rows = read_table(tables, AGGREGATE_TABLES[grain], where, ("event_date", dates_between(after or start, end)))
    if rows is None:
        return [], False
    rows = rows.sort_by("bucket_start").slice(0, limit + 1).to_pylist()
    return rows[:limit], len(rows) > limit


def scores(
    tables: DeltaTables,
    device_id: str,
    metric: str,
    start: datetime,
    end: datetime,
    seconds: int,
) -> dict[datetime, dict]:
    """Bucket start (``seconds`` wide) -> the highest detector score of its minutes in [start, end],
    and whether any of them was anomalous."""
    where = (ds.field("device_id") == device_id) & (ds.field("metric") == metric)
    where &= (ds.field("ts") >= pa.scalar(start)) & (ds.field("ts") <= pa.scalar(end))
    rows = read_table(tables, DEVIATIONS, where, ("event_date", dates_between(start, end)))
    out: dict[datetime, dict] = {}
    for row in rows.select(["ts", "score", "is_anomalous"]).to_pylist() if rows is not None else []:
        bucket = datetime.fromtimestamp(int(row["ts"].timestamp()) // seconds * seconds, tz=UTC)
        seen = out.setdefault(bucket, {"score": row["score"], "anomalous": bool(row["is_anomalous"])})
        seen["score"] = max(seen["score"], row["score"])
        seen["anomalous"] = seen["anomalous"] or bool(row["is_anomalous"])
    return out
