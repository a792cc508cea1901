"""Scored deviations as CloudWatch metrics (iot_lake.detect.metrics), against moto."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from iot_lake.detect.deviations import score
from iot_lake.detect.metrics import (
    MAX_ITEMS,
    NAMESPACE,
    CloudWatchPublisher,
    LocalPublisher,
    _size,
    bounds,
    datums,
    metric_data,
    metric_frame,
    with_band_80,
)
from tests.conftest import REGION

HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
SERIES = [("site-1", "dev-001", "temperature"), ("site-1", "dev-002", "vibration"), (None, "dev-003", "pressure")]


def joined_hour() -> pd.DataFrame:
    """An hour of three series beside their forecast band: noisy, a spike, a series whose first
    20 minutes have no forecast yet, and one without a site."""
    rng = np.random.default_rng(7)
    frames = []
    for i, (site, device, metric) in enumerate(SERIES):
        ts = pd.date_range(HOUR, periods=60, freq="1min")
        yhat = 20.0 + i * 5 + np.sin(np.arange(60) / 9)
        actual = yhat + rng.normal(0, 0.4, 60)
        actual[41:45] += 6.0  # out of the 95% band for 4 minutes
        frame = pd.DataFrame(
            {
                "device_id": device,
                "metric": metric,
                "site_id": site,
                "bucket_start": ts,
                "mean": actual,
                "yhat": yhat,
                "lo_80": yhat - 0.65,
                "hi_80": yhat + 0.65,
                "lo_95": yhat - 1.0,
                "hi_95": yhat + 1.0,
                "origin": pd.Timestamp(HOUR),
                "model_version": "3",
            }
        )
        if i == 1:
            frame.loc[:19, ["yhat", "lo_80", "hi_80", "lo_95", "hi_95", "origin", "model_version"]] = None
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    joined = joined_hour()
    return with_band_80(score(joined, None), joined)


def stats(cloudwatch, site, device, metric, name, stat):
    dims = [
        {"Name": "DeviceId", "Value": device},
        {"Name": "Metric", "Value": metric},
        {"Name": "SiteId", "Value": site or "none"},
    ]
    result = cloudwatch.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "q",
                "MetricStat": {
                    "Metric": {"Namespace": NAMESPACE, "MetricName": name, "Dimensions": dims},
                    "Period": 60,
                    "Stat": stat,
                },
            }
        ],
        StartTime=HOUR - timedelta(minutes=1),
        EndTime=HOUR + timedelta(hours=1, minutes=1),
        ScanBy="TimestampAscending",
    )["MetricDataResults"][0]
    return dict(zip((t.replace(tzinfo=UTC) for t in result["Timestamps"]), result["Values"]))


def test_the_metrics_equal_the_deviation_rows_and_a_rerun_changes_no_statistic(aws, rows):
    calls = []
    cloudwatch = aws.client("cloudwatch", region_name=REGION)
    cloudwatch.meta.events.register(
        "provide-client-params.monitoring.PutMetricData", lambda params, **_: calls.append(len(params["MetricData"]))
    )
    published = CloudWatchPublisher(REGION, cloudwatch).publish(rows)
    # 3 series x 60 minutes x 7 metrics, less the 20 minutes x 5 forecast metrics without a forecast
    assert published.datapoints == 3 * 60 * 7 - 20 * 5 == sum(calls)
    assert calls == [MAX_ITEMS, published.datapoints - MAX_ITEMS]
    assert rows["score"].between(0, 1).all() and rows["score"].max() > 0.5  # the warehouse's scale
    for column, name in [
        ("score", "DeviationScore"),
        ("actual", "Actual"),
        ("expected_hi", "BandUpper95"),
        ("lo_80", "BandLower80"),
    ]:
        for site, device, metric in SERIES:
            series = rows[(rows["device_id"] == device) & (rows["metric"] == metric)].dropna(subset=[column])
            sent = stats(cloudwatch, site, device, metric, name, "Average")
            expected = {t.to_pydatetime(): v for t, v in zip(series["ts"], series[column])}
            assert sent.keys() == expected.keys()
            assert sent == pytest.approx(expected)
    CloudWatchPublisher(REGION, cloudwatch).publish(rows)  # the same hour again
    site, device, metric = SERIES[0]
    series = rows[rows["device_id"] == device]
    assert stats(cloudwatch, site, device, metric, "DeviationScore", "Maximum") == pytest.approx(
        {t.to_pydatetime(): v for t, v in zip(series["ts"], series["score"])}
    )
    assert set(stats(cloudwatch, site, device, metric, "DeviationScore", "SampleCount").values()) == {2.0}


def test_batches_respect_the_payload_size_too():
    datum = {"MetricName": "Actual", "Dimensions": [{"Name": "DeviceId", "Value": "d" * 200}], "Value": 1.0}
    each = [_size(datum)] * 2500
    sizes = [b - a for a, b in bounds(each, max_bytes=100_000)]
    assert sum(sizes) == 2500 and max(sizes) < MAX_ITEMS and len(sizes) > 3
    assert [b - a for a, b in bounds(each)] == [1000, 1000, 500]


def test_points_older_than_cloudwatch_keeps_are_skipped(rows):
    assert metric_data(rows, now=HOUR + timedelta(days=15)) == []
    assert len(metric_data(rows, now=HOUR + timedelta(hours=3))) == 3 * 60 * 7 - 100


def test_locally_nothing_is_sent(rows):
    assert LocalPublisher().publish(rows).datapoints == 3 * 60 * 7 - 100


def test_deviation_score_is_the_warehouses_score():
    """One name, one meaning: DeviationScore is ops/deviations' ``score``, which stg_deviations and
    fct_deviation carry through unchanged, documented and tested there as a score in [0, 1]."""
    from pathlib import Path

    import yaml

    from iot_lake.cases.sinks import CASE_SCORE_METRIC
    from iot_lake.detect.metrics import METRICS

    assert METRICS["DeviationScore"] == "score"
    assert CASE_SCORE_METRIC != "DeviationScore"  # the case's residual is another quantity
    models = Path(__file__).parent.parent / "dbt_project" / "models"
    for sql in ("staging/stg_deviations.sql", "marts/fct_deviation.sql"):
        lines = [line.strip() for line in (models / sql).read_text().splitlines()]
        assert "score," in lines, f"{sql} no longer passes ops/deviations' score through unchanged"
    marts = yaml.safe_load((models / "marts" / "_marts.yml").read_text())
    fct = next(m for m in marts["models"] if m["name"] == "fct_deviation")
    column = next(c for c in fct["columns"] if c["name"] == "score")
    assert {"min_value": 0, "max_value": 1} in [
        t["accepted_range"]["arguments"] for t in column["data_tests"] if isinstance(t, dict)
    ]


def test_each_datums_size_bound_holds_and_batches_match_the_generic_split(rows):
    """The publishers batch on ``metric_frame``'s array-built sizes; each must bound the datum's own
    JSON-based ``_size`` (or a call could pass 1 MB), non-ASCII ids included."""
    odd = rows.assign(device_id=rows["device_id"] + "-é€", site_id=rows["site_id"].where(rows.index % 2 == 0))
    for frame_rows in (rows, odd):
        frame = metric_frame(frame_rows)
        data = datums(frame)
        assert len(data) == len(frame) > 0
        assert all(bound >= _size(d) for bound, d in zip(frame["size"], data))
    frame = metric_frame(odd)
    sizes = frame["size"].tolist()
    assert bounds(sizes, max_bytes=50_000) == bounds(sizes, max_items=10**9, max_bytes=50_000)
    assert sum(b - a for a, b in bounds(sizes, max_bytes=50_000)) == len(frame)
    assert LocalPublisher().publish(odd).calls == len(bounds(sizes)) == -(-len(frame) // MAX_ITEMS)
