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
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is imported by the functions that use it: the case sinks import this module
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


def metric_data(rows: pd.DataFrame, now: datetime | None = None) -> list[dict[str, Any]]:
    """One MetricDatum per metric and scored minute (module docstring)."""
    import pandas as pd

    oldest = (now or datetime.now(UTC)) - MAX_AGE + MARGIN
    data = []
    for row in rows.to_dict("records"):
        ts = pd.Timestamp(row["ts"]).to_pydatetime()
        if ts < oldest:
            continue
        site = row.get("site_id")
        dimensions = [
            {"Name": "DeviceId", "Value": row["device_id"]},
            {"Name": "Metric", "Value": row["metric"]},
            {"Name": "SiteId", "Value": site if isinstance(site, str) and site else UNKNOWN_SITE},
        ]
        for name, column in METRICS.items():
            value = row.get(column)
            if value is None or not math.isfinite(float(value)):
                continue
            data.append(
                {"MetricName": name, "Dimensions": dimensions, "Timestamp": ts, "Value": float(value), "Unit": "None"}
            )
    return data


def _size(datum: dict[str, Any]) -> int:
    # Query-encoded members repeat "MetricData.member.N." per field: twice the JSON is a safe bound.
    return 2 * len(json.dumps(datum, default=str)) + 200


def batches(data: list[dict[str, Any]], max_items: int = MAX_ITEMS, max_bytes: int = MAX_BYTES) -> Iterator[list]:
    """Consecutive runs of ``data`` within the per-call item count and payload size."""
    batch, size = [], 0
    for datum in data:
        n = _size(datum)
        if batch and (len(batch) == max_items or size + n > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(datum)
        size += n
    if batch:
        yield batch


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
        result = Published()
        for batch in batches(metric_data(rows, now)):
            self.client.put_metric_data(Namespace=NAMESPACE, MetricData=batch)
            result.datapoints += len(batch)
            result.calls += 1
        return result


class LocalPublisher:
    """The local twin: counts what prod would send, sends nothing."""

    def publish(self, rows: pd.DataFrame, now: datetime | None = None) -> Published:
        data = metric_data(rows, now)
        return Published(datapoints=len(data), calls=sum(1 for _ in batches(data)))


def publisher_for(env: str, region: str | None = None) -> CloudWatchPublisher | LocalPublisher:
    return CloudWatchPublisher(region) if env == "prod" else LocalPublisher()
