"""Scored deviations as CloudWatch metrics, the input of the reference architecture's alarms.

Namespace ``IotLake/Deviations``, dimensions ``DeviceId``, ``Metric``, ``SiteId``; per scored minute
(its own timestamp): ``Actual``, ``Forecast`` (the point forecast), ``BandLower80``,
``BandUpper80``, ``BandLower95``, ``BandUpper95`` and ``DeviationScore``, which is ops/deviations'
``score`` (in [0, 1], the warehouse's fct_deviation.score): one name, one meaning. A minute without
a forecast sends only ``Actual`` and ``DeviationScore``; a non-finite value is not sent (CloudWatch
rejects NaN and infinities).

CloudWatch keeps every datapoint sent: re-sending an hour adds samples with the same values at the
same timestamps, so Minimum, Maximum and Average (what the alarms read) stay the same; SampleCount
and Sum grow. Datapoints older than CloudWatch's two weeks are refused, so a backfill skips them.

Locally (``IOT_LAKE_ENV=local``) the publisher only counts: the local twin of the alarm chain is
the case store and its sinks, which see the same rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is imported by the functions that use it: the case sinks import this module
    import numpy as np
    import pandas as pd

NAMESPACE = "IotLake/Deviations"
MAX_ITEMS = 1000  # PutMetricData: metric data items per call
MAX_BYTES = 1_000_000  # PutMetricData: request payload (1 MB); estimated with a margin below
MAX_AGE = timedelta(days=14)  # CloudWatch refuses older timestamps
MARGIN = timedelta(hours=1)  # ... judged by its clock, not ours
UNKNOWN_SITE = "none"  # a series without a site still needs the dimension the alarms name
# metric name -> column of the scored rows (lo_80 / hi_80 come from the joined forecast band)
METRICS = {
    "Actual": "actual",
    "Forecast": "expected",
    "BandLower80": "lo_80",
    "BandUpper80": "hi_80",
    "BandLower95": "expected_lo",
    "BandUpper95": "expected_hi",
    "DeviationScore": "score",
}


def alarm_name(site_id: str | None, device_id: str, metric: str) -> str:
    """The series' alarm (deploy/cdk defines it): ``iot-lake-deviation-{site}-{device}-{metric}``."""
    return f"iot-lake-deviation-{site_id or UNKNOWN_SITE}-{device_id}-{metric}"


def with_band_80(scored: pd.DataFrame, joined: pd.DataFrame) -> pd.DataFrame:
    """The scored rows with the 80% band of the forecast they were scored against (``with_forecasts``)."""
    band = joined[["device_id", "metric", "bucket_start", "lo_80", "hi_80"]].rename(columns={"bucket_start": "ts"})
    return scored.merge(
        band.drop_duplicates(["device_id", "metric", "ts"]), on=["device_id", "metric", "ts"], how="left"
    )


def metric_frame(rows: pd.DataFrame, now: datetime | None = None) -> pd.DataFrame:
    """One row per MetricDatum prod sends, in send order (each scored minute's metrics in
    ``METRICS`` order): device_id, metric, site_id, ts, name, value and ``size``, an upper bound of
    the datum's share of the request. Built with array operations: a week of a fleet is ~10^6 datums,
    and building and JSON-encoding each one only to count them took two minutes of the main job."""
    import numpy as np
    import pandas as pd

    if rows.empty:
        return pd.DataFrame(columns=["device_id", "metric", "site_id", "ts", "name", "value", "size"])
    oldest = pd.Timestamp((now or datetime.now(UTC)) - MAX_AGE + MARGIN)
    ts = pd.to_datetime(rows["ts"], utc=True).reset_index(drop=True)
    values = rows.reindex(columns=list(METRICS.values())).to_numpy(dtype=float, na_value=np.nan)
    row, column = np.nonzero(np.isfinite(values) & (ts >= oldest).to_numpy()[:, None])
    site = rows["site_id"] if "site_id" in rows else pd.Series(None, index=rows.index, dtype=object)
    site = site.where(site.map(lambda s: isinstance(s, str) and bool(s)), UNKNOWN_SITE).to_numpy(dtype=object)
    device, metric = rows["device_id"].to_numpy(dtype=object), rows["metric"].to_numpy(dtype=object)
    names = np.array(list(METRICS), dtype=object)
    # The strings' JSON lengths per scored row and per name, then picked for each datum: a row
    # has up to len(METRICS) datums, and mapping the datums' strings took seconds a week.
    text = (_json_lengths(device) + _json_lengths(metric) + _json_lengths(site))[row] + _json_lengths(names)[column]
    frame = pd.DataFrame(
        {
            "device_id": device[row],
            "metric": metric[row],
            "site_id": site[row],
            "ts": ts.iloc[row].reset_index(drop=True),
            "name": names[column],
            "value": values[row, column],
        }
    )
    frame["size"] = 2 * (DATUM_JSON + text) + 200  # at least ``_size`` of the datum (tested)
    return frame


# JSON characters of a datum besides its four strings (178 with them empty), with the longest
# timestamp (34, quoted, with microseconds) and value (24) texts json.dumps writes.
DATUM_JSON = 178 + 34 + 24


def _json_lengths(values) -> np.ndarray:
    """The length of each value's JSON string (quotes and escapes), computed once per distinct value."""
    import numpy as np
    import pandas as pd

    codes, distinct = pd.factorize(values, use_na_sentinel=False)
    return np.array([len(json.dumps(v)) - 2 for v in distinct], dtype=np.int64)[codes]


def datums(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The PutMetricData items of ``metric_frame`` rows."""
    return [
        {
            "MetricName": name,
            "Dimensions": [
                {"Name": "DeviceId", "Value": device},
                {"Name": "Metric", "Value": metric},
                {"Name": "SiteId", "Value": site},
            ],
            "Timestamp": ts.to_pydatetime(),
            "Value": float(value),
            "Unit": "None",
        }
        for device, metric, site, ts, name, value in zip(
            frame["device_id"], frame["metric"], frame["site_id"], frame["ts"], frame["name"], frame["value"]
        )
    ]


def metric_data(rows: pd.DataFrame, now: datetime | None = None) -> list[dict[str, Any]]:
    """One MetricDatum per metric and scored minute (module docstring)."""
    return datums(metric_frame(rows, now))


def _size(datum: dict[str, Any]) -> int:
    # Query-encoded members repeat "MetricData.member.N." per field: twice the JSON is a safe bound.
    return 2 * len(json.dumps(datum, default=str)) + 200


def bounds(sizes, max_items: int = MAX_ITEMS, max_bytes: int = MAX_BYTES) -> list[tuple[int, int]]:
    """(start, stop) of consecutive runs within the per-call item count and payload size."""
    out, first, size = [], 0, 0
    for i, n in enumerate(sizes):
        if i > first and (i - first == max_items or size + n > max_bytes):
            out.append((first, i))
            first, size = i, 0
        size += n
    if len(sizes) > first:
        out.append((first, len(sizes)))
    return out


@dataclass
class Published:
    datapoints: int = 0
    calls: int = 0


class CloudWatchPublisher:
    """Sends the rows with batched ``put_metric_data``; throttling and 5xx are retried inside the
    client (iot_lake.aws), and anything else raises, failing the step (its retry policy re-runs it)."""

    def __init__(self, region: str | None = None, client: Any = None):
        self.region, self._client = region, client

    @property
    def client(self) -> Any:
        if self._client is None:
            from iot_lake.aws import client

            self._client = client("cloudwatch", self.region)
        return self._client

    def publish(self, rows: pd.DataFrame, now: datetime | None = None) -> Published:
        result, frame = Published(), metric_frame(rows, now)
        for a, b in bounds(frame["size"].tolist()):
            batch = datums(frame.iloc[a:b])
            self.client.put_metric_data(Namespace=NAMESPACE, MetricData=batch)
            result.datapoints += len(batch)
            result.calls += 1
        return result


class LocalPublisher:
    """The local twin: the same datums and batches prod would send, counted, not sent."""

    def publish(self, rows: pd.DataFrame, now: datetime | None = None) -> Published:
        frame = metric_frame(rows, now)
        return Published(datapoints=len(frame), calls=len(bounds(frame["size"].tolist())))


def publisher_for(env: str, region: str | None = None) -> CloudWatchPublisher | LocalPublisher:
    return CloudWatchPublisher(region) if env == "prod" else LocalPublisher()
