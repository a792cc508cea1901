"""Charts for materialization metadata: Markdown with an inline PNG, which the Dagster UI renders.

matplotlib is imported inside each chart (Agg backend, no display in a run worker), never when the
definitions load.
"""

from __future__ import annotations

import base64
import io

import pandas as pd
from dagster import AssetExecutionContext, AssetKey, AssetObservation, MetadataValue

MAX_SERIES = 3  # a chart per series; more make the metadata heavy and the panel unreadable


def chart_metadata(context: AssetExecutionContext, key: AssetKey, name: str, markdown: str) -> dict:
    """The chart as the materialization's metadata ``name``, or, for a run of several partitions,
    as an observation of its last partition (logged here) with a pointer left in its place.

    Dagster copies a range run's metadata into the materialization of each of its partitions: the
    deviations chart (~170 KB) of a week's run was 168 copies, 28 MB of event log written during the
    main job, each copy of a day that was not its partition's."""
    keys = context.partition_keys if context.has_partition_key_range else []
    if len(keys) <= 1:
        return {name: MetadataValue.md(markdown)}
    context.log_event(AssetObservation(asset_key=key, partition=keys[-1], metadata={name: MetadataValue.md(markdown)}))
    return {name: MetadataValue.text(f"a range run: the chart is on the observation of partition {keys[-1]}")}


def png_markdown(fig, alt: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=70)
    plt.close(fig)
    return f"![{alt}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _axes(plt, n: int):
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.2 * n), sharex=True, squeeze=False)
    return fig, axes[:, 0]


def batch_forecast_plot(history: pd.DataFrame, forecasts: pd.DataFrame, origin: pd.Timestamp) -> str:
    """The last hours of actuals of a few series and the forecast from the origin with its bands.

    ``history``: device_id, metric, bucket_start, y; ``forecasts``: device_id, metric, bucket_start,
    yhat, lo_80, hi_80, lo_95, hi_95.
    """
    if forecasts.empty:
        return "no forecasts"
    plt = _pyplot()
    series = sorted(forecasts.groupby(["device_id", "metric"]).groups)[:MAX_SERIES]
    fig, axes = _axes(plt, len(series))
    since = origin - pd.Timedelta(hours=12)
    for ax, (device, metric) in zip(axes, series):
        past = history[(history["device_id"] == device) & (history["metric"] == metric)]
        past = past[pd.to_datetime(past["bucket_start"], utc=True) >= since].sort_values("bucket_start")
        ahead = forecasts[(forecasts["device_id"] == device) & (forecasts["metric"] == metric)].sort_values(
            "bucket_start"
        )
        ax.plot(pd.to_datetime(past["bucket_start"], utc=True), past["y"], color="black", linewidth=1, label="actual")
        ax.plot(ahead["bucket_start"], ahead["yhat"], linewidth=1, label="forecast")
        ax.fill_between(ahead["bucket_start"], ahead["lo_95"], ahead["hi_95"], alpha=0.15, label="95%")
        ax.fill_between(ahead["bucket_start"], ahead["lo_80"], ahead["hi_80"], alpha=0.25, label="80%")
        ax.axvline(origin, color="grey", linewidth=0.8, linestyle="--")
        ax.set_title(f"{device} {metric}", fontsize=9)
    axes[0].legend(fontsize=7, loc="upper left")
    return png_markdown(fig, "actuals and forecast")


def deviations_plot(scored: pd.DataFrame) -> str:
    """Actuals against the forecast band for the series with the most anomalous minutes, flagged
    minutes marked. ``scored``: the rows of ops/deviations (iot_lake.detect.deviations.COLUMNS)."""
    if scored.empty:
        return "nothing scored"
    plt = _pyplot()
    flagged = scored.groupby(["device_id", "metric"])["is_anomalous"].sum().sort_values(ascending=False, kind="stable")
    series = list(flagged.index[:MAX_SERIES])
    fig, axes = _axes(plt, len(series))
    for ax, (device, metric) in zip(axes, series):
        rows = scored[(scored["device_id"] == device) & (scored["metric"] == metric)].sort_values("ts")
        ax.fill_between(rows["ts"], rows["expected_lo"], rows["expected_hi"], alpha=0.25, label="forecast band")
        ax.plot(rows["ts"], rows["expected"], linewidth=0.8, label="forecast")
        ax.plot(rows["ts"], rows["actual"], color="black", linewidth=1, label="actual")
        anomalous = rows[rows["is_anomalous"]]
        ax.scatter(anomalous["ts"], anomalous["actual"], color="red", s=12, zorder=3, label="anomalous")
        ax.set_title(f"{device} {metric}: {int(flagged[(device, metric)])} anomalous minutes", fontsize=9)
    axes[0].legend(fontsize=7, loc="upper left")
    return png_markdown(fig, "deviations")
