"""What the serving API reads from the lake per request, with delta-rs, always narrowed to one device.

- Latest state: the hot-state table (curated/device_state, a row per series), filtered to the device;
  never a scan of curated telemetry.
- Series: the 1- or 5-minute aggregates, only the event_date partitions of the asked range.
- Forecast bands: forecasts/telemetry_5min, only the origin_date partitions that can cover the range
  (forecasts reach a day ahead of their origin), the latest origin at or before each bucket.
- Scores: the detector's per-minute scores (ops/deviations), only the event_date partitions of the range.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from iot_lake.curated.aggregates import AGGREGATE_TABLES
from iot_lake.curated.state import DEVICE_STATE
from iot_lake.lake import Lake

FORECASTS = "forecasts/telemetry_5min"
DEVIATIONS = "ops/deviations"
FORECAST_HORIZON = timedelta(days=1)  # HYPERPARAMETERS["horizon_hours"] of the batch forecast
FORECAST_STEP = 300
BAND = ("yhat", "lo_80", "hi_80", "lo_95", "hi_95")


def read_table(
    lake: Lake,
    key: str,
    row_filter: pc.Expression,
    partitions: tuple[str, list[date]] | None = None,
    delta_options: dict | None = None,
) -> pa.Table | None:
    """The rows of a Delta table that match ``row_filter``, reading only the ``partitions`` (column,
    dates) given; None when the table does not exist yet."""
    from deltalake import DeltaTable

    if not lake.exists(f"{key}/_delta_log"):
        return None
    table = DeltaTable(lake.uri(key), storage_options=delta_options)
    pruning = [(partitions[0], "in", [d.isoformat() for d in partitions[1]])] if partitions else None
    return table.to_pyarrow_dataset(file_pruning_predicate=pruning).to_table(filter=row_filter)


def latest_state(lake: Lake, device_id: str, delta_options: dict | None = None) -> list[dict]:
    """The device's hot-state rows, one per metric, by metric."""
    rows = read_table(lake, DEVICE_STATE, ds.field("device_id") == device_id, delta_options=delta_options)
    return sorted(rows.to_pylist(), key=lambda r: r["metric"]) if rows is not None else []


def _dates(start: datetime, end: datetime) -> list[date]:
    return [start.date() + timedelta(days=d) for d in range((end.date() - start.date()).days + 1)]


def floor_5min(ts: datetime) -> datetime:
    return datetime.fromtimestamp(int(ts.timestamp()) // FORECAST_STEP * FORECAST_STEP, tz=UTC)


def forecast_bands(
    lake: Lake,
    device_id: str,
    start: datetime,
    end: datetime,
    metric: str | None = None,
    delta_options: dict | None = None,
) -> dict[tuple[str, datetime], dict]:
    """(metric, 5-minute bucket) -> the band of the latest origin at or before the bucket, for the
    buckets in [floor(start), end]: what the detector scores each minute against."""
    first = floor_5min(start)
    where = (ds.field("device_id") == device_id) & (ds.field("bucket_start") >= pa.scalar(first))
    where &= (ds.field("bucket_start") <= pa.scalar(end)) & (ds.field("origin") <= ds.field("bucket_start"))
    if metric is not None:
        where &= ds.field("metric") == metric
    origins = ("origin_date", _dates(first - FORECAST_HORIZON, end))
    rows = read_table(lake, FORECASTS, where, origins, delta_options)
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


def band_now(lake: Lake, device_id: str, now: datetime, delta_options: dict | None = None) -> dict[str, dict]:
    """metric -> the band covering ``now``, from the latest origin at or before now."""
    bucket = floor_5min(now)
    bands = forecast_bands(lake, device_id, bucket, bucket, delta_options=delta_options)
    return {metric: band for (metric, _), band in bands.items() if band["origin"] <= now}


def aggregates(
    lake: Lake,
    device_id: str,
    metric: str,
    grain: str,
    start: datetime,
    end: datetime,
    after: datetime | None,
    limit: int,
    delta_options: dict | None = None,
) -> tuple[list[dict], bool]:
    """The series' buckets in [start, end) (after ``after`` if given), at most ``limit`` of them in
    time order, and whether more follow."""
    where = (ds.field("device_id") == device_id) & (ds.field("metric") == metric)
    first = ds.field("bucket_start") > pa.scalar(after) if after else ds.field("bucket_start") >= pa.scalar(start)
    where &= first & (ds.field("bucket_start") < pa.scalar(end))
    rows = read_table(lake, AGGREGATE_TABLES[grain], where, ("event_date", _dates(after or start, end)), delta_options)
    if rows is None:
        return [], False
    rows = rows.sort_by("bucket_start").slice(0, limit + 1).to_pylist()
    return rows[:limit], len(rows) > limit


def scores(
    lake: Lake,
    device_id: str,
    metric: str,
    start: datetime,
    end: datetime,
    seconds: int,
    delta_options: dict | None = None,
) -> dict[datetime, dict]:
    """Bucket start (``seconds`` wide) -> the highest detector score of its minutes in [start, end],
    and whether any of them was anomalous."""
    where = (ds.field("device_id") == device_id) & (ds.field("metric") == metric)
    where &= (ds.field("ts") >= pa.scalar(start)) & (ds.field("ts") <= pa.scalar(end))
    rows = read_table(lake, DEVIATIONS, where, ("event_date", _dates(start, end)), delta_options)
    out: dict[datetime, dict] = {}
    for row in rows.select(["ts", "score", "is_anomalous"]).to_pylist() if rows is not None else []:
        bucket = datetime.fromtimestamp(int(row["ts"].timestamp()) // seconds * seconds, tz=UTC)
        seen = out.setdefault(bucket, {"score": row["score"], "anomalous": bool(row["is_anomalous"])})
        seen["score"] = max(seen["score"], row["score"])
        seen["anomalous"] = seen["anomalous"] or bool(row["is_anomalous"])
    return out
