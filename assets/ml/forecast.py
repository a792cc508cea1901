"""Forecasting as assets: training data -> model (daily, champion/challenger) -> batch forecasts (hourly).

Training and batch forecasting are SageMaker jobs in production and local subprocesses with the
same contract on the embedded default (resources/sagemaker.py); the training data is a Spark job.
"""

import io
import json
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    Config,
    LastPartitionMapping,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.curated.daily import CURATED_FEATURES_KEY
from assets.curated.telemetry import AGGREGATE_KEYS
from assets.partitions import daily_partitions, hourly_partitions
from assets.plots import batch_forecast_plot, chart_metadata, png_markdown
from iot_lake.forecast import registry
from iot_lake.forecast.model import NAIVE_DAYS
from lib.pools import LAKE_WRITES
from lib.sagemaker_jobs import job_name
from resources.lake import LakeResource
from resources.sagemaker import SageMakerRunner
from resources.spark import SparkRunner

ML_OWNERS = ["team:ml-platform"]
TRAINING_DATA_KEY = AssetKey(["ml", "forecast_training_data"])
MODEL_KEY = AssetKey(["ml", "forecast_model"])
BATCH_FORECAST_KEY = AssetKey(["ml", "batch_forecast"])
FORECASTS_TABLE = "forecasts/telemetry_5min"
TRAINING_DAYS = 14
HISTORY_DAYS = 3  # the model's longest lag is two days (iot_lake.forecast.model.LightGBM.fit)
HYPERPARAMETERS = {"horizon_hours": 24, "levels": [80, 95]}


class ForecastGrain(Config):
    """The series' resolution: 5-minute buckets, or 1-minute where asked (from curated/telemetry_1min)."""

    grain: str = "5min"


def history_days(method: str | None, first_origin_day, last_day, since) -> int:
    """Days of history the batch forecast exports: what the champion's method looks back (a weekly
    seasonal naive a week, and a day more for the week's first steps), before the first origin, and
    back to the champion's last training day so the model can catch up from its own tail."""
    back = max(HISTORY_DAYS, NAIVE_DAYS.get(method, 0) + 1)
    return max(back + (last_day - first_origin_day).days, (last_day - since).days + back)


@asset(
    key=TRAINING_DATA_KEY,
    deps=[CURATED_FEATURES_KEY],
    partitions_def=daily_partitions,
    group_name="ml",
    owners=ML_OWNERS,
    kinds={"spark", "parquet", "s3"},
    description=(
        f"The {TRAINING_DAYS} days of 5-minute features up to the partition's day, as a Parquet snapshot "
        "under models/forecast/training_data/<day>/ (a SageMaker channel). Periods of cases confirmed as "
        "anomalies are left out; periods of false positives are kept."
    ),
)
def forecast_training_data(
    context: AssetExecutionContext, config: ForecastGrain, lake: LakeResource, spark: SparkRunner
) -> MaterializeResult:
    day = context.partition_time_window.start.date()
    return spark.run(
        context,
        "iot_lake.forecast.training_data_job",
        [
            "--lake",
            lake.root,
            "--day",
            day.isoformat(),
            "--days",
            str(TRAINING_DAYS),
            "--grain",
            config.grain,
            "--output",
            registry.training_data_key(day),
        ],
    ).get_materialize_result()


@asset(
    key=MODEL_KEY,
    deps=[TRAINING_DATA_KEY],
    partitions_def=daily_partitions,
    group_name="ml",
    owners=ML_OWNERS,
    kinds={"sagemaker", "lightgbm"},
    description=(
        "A forecaster trained on the day's training data (iot_lake.forecast.train, a SageMaker training "
        "job): candidates backtested at the last 3 daily origins, the best refitted with conformal intervals. "
        "Promoted to champion only if its MASE is at least as good as the champion's on the same origins."
    ),
)
def forecast_model(
    context: AssetExecutionContext, config: ForecastGrain, lake: LakeResource, sagemaker: SageMakerRunner
) -> MaterializeResult:
    day = context.partition_time_window.start.date()
    the_lake = lake.lake()
    channels = {"train": registry.training_data_key(day)}
    current = registry.champion(the_lake)
    checks = {}
    if current:
        channels["champion"] = current["model_key"]
        checks = _archive_check(context, current, registry.CHAMPION_SHA256)
    run = sagemaker.train(
        context,
        lake=the_lake,
        job_name=job_name("forecast", day.isoformat()),
        module="iot_lake.forecast.train",
        channels=channels,
        hyperparameters={**HYPERPARAMETERS, "freq": config.grain, **checks},
        output_key=registry.jobs_key(),
    )
    metrics, sample = _training_outputs(the_lake, run.outputs["output"])
    if metrics["method"] is None:
        # Less than a day of history (a fleet that started today): the night's training concluded
        # there is no model yet, which is not a failure. Nothing enters the registry; the batch
        # forecasts wait for the first night with a day of data.
        context.log.warning(f"{run.job_name}: {metrics['method_reason']}")
        return MaterializeResult(
            metadata={"method": "none", "method_reason": metrics["method_reason"], "promoted": False}
        )
    recorded = registry.version(the_lake, current["version"])["mase"] if current else None
    promote, reason = registry.should_promote(metrics["backtest"], metrics["method"], recorded)
    chosen = registry.chosen_row(metrics["backtest"], metrics["method"])
    registry.record(
        the_lake,
        registry.ModelVersion(
            version=run.job_name,
            model_key=run.outputs["model"],
            method=metrics["method"],
            mase=chosen.get("mase"),
            data_first=metrics["data_range"]["first"],
            data_last=metrics["data_range"]["last"],
            trained_for=day.isoformat(),
            backtest=metrics["backtest"],
            promoted=promote,
            reason=reason,
            freq=config.grain,
            method_reason=metrics.get("method_reason", ""),
            skipped=metrics.get("skipped", {}),
            # hashed by the control plane as it registers the version: what later loads must match
            sha256=registry.archive_sha256(the_lake, run.outputs["model"]),
        ),
        storage_options=lake.delta_storage_options(),
    )
    context.log.info(f"{run.job_name}: {'promoted' if promote else 'kept as challenger'} ({reason})")
    return MaterializeResult(
        metadata={
            "method": metrics["method"],
            # None for the fallback of a fleet too young to score anything (method_reason says so)
            "mase": MetadataValue.float(chosen["mase"]) if chosen else MetadataValue.null(),
            "method_reason": metrics.get("method_reason", ""),
            **{
                f"coverage_{k.split('_')[1]}": MetadataValue.float(v)
                for k, v in chosen.items()
                if k.startswith("coverage_")
            },
            "training_data_first": metrics["data_range"]["first"],
            "training_data_last": metrics["data_range"]["last"],
            "series": metrics["data_range"]["series"],
            "holdout_start": metrics["holdout_start"],
            "backtest": MetadataValue.md(pd.DataFrame(metrics["backtest"]).to_markdown(index=False)),
            "forecast_vs_actual": MetadataValue.md(_plot(sample)),
            "model_uri": MetadataValue.path(the_lake.uri(run.outputs["model"])),
            "job_name": run.job_name,
            "logs": run.logs,
            "promoted": promote,
            "promotion_reason": reason,
            "champion_before": current["version"] if current else "none",
            # A candidate that could not train (too little history) says why: the fallback is visible.
            "skipped": MetadataValue.json(metrics.get("skipped", {})),
        }
    )


@asset(
    pool=LAKE_WRITES,  # commits to lake Delta tables (lib/pools.py)
    key=BATCH_FORECAST_KEY,
    deps=[AGGREGATE_KEYS["5min"], AssetDep(MODEL_KEY, partition_mapping=LastPartitionMapping())],
    partitions_def=hourly_partitions,
    # A backfill of many hours is one run: one history export and one processing job that forecasts
    # from each hour's end in turn (each from the history before it), not a run per hour.
    backfill_policy=BackfillPolicy.single_run(),
    group_name="ml",
    owners=ML_OWNERS,
    kinds={"sagemaker", "delta"},
    output_required=False,  # no forecast before the first champion
    description=(
        "The champion's forecast of the next 24 hours per device and metric, made at the end of the "
        f"partition's hour (iot_lake.forecast.batch_forecast, a SageMaker Processing job), with 80% and 95% "
        f"intervals. Delta Lake at {FORECASTS_TABLE}, partitioned by origin_date; a re-run replaces its origin."
    ),
)
def batch_forecast(
    context: AssetExecutionContext, lake: LakeResource, spark: SparkRunner, sagemaker: SageMakerRunner
) -> Iterator[MaterializeResult]:
    window = context.partition_time_window
    start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
    origins = [start + timedelta(hours=h + 1) for h in range(int((end - start) / timedelta(hours=1)))]
    the_lake = lake.lake()
    current = registry.champion(the_lake)
    if current is None:
        # A fleet younger than its first nightly model: nothing to forecast with yet, which is not a
        # fault; the hours stay unmaterialized and the deviations score with the series' own channels.
        context.log.warning("no champion model yet: forecasts begin after the first ml/forecast_model")
        return
    # History back to the champion's last training day, so the model can catch up from its own tail.
    since = datetime.fromisoformat(current["data_last"].replace("Z", "+00:00")).date()
    last_day = (origins[-1] - timedelta(minutes=5)).date()
    method = registry.version(the_lake, current["version"]).get("method")
    days = history_days(method, origins[0].date(), last_day, since)
    history = registry.history_key(origins[-1])
    spark.run(
        context,
        "iot_lake.forecast.training_data_job",
        [
            "--lake",
            lake.root,
            "--day",
            last_day.isoformat(),
            "--days",
            str(days),
            "--grain",
            current.get("freq", "5min"),
            "--source",
            "aggregates",
            "--output",
            f"{history}/rows",
        ],
    )
    output = f"{history}/forecasts"
    label = origins[0].strftime("%Y%m%dT%H") + ("" if len(origins) == 1 else origins[-1].strftime("-%Y%m%dT%H"))
    run = sagemaker.process(
        context,
        lake=the_lake,
        job_name=job_name("forecast", label),
        module="iot_lake.forecast.batch_forecast",
        inputs={"model": current["model_key"], "history": f"{history}/rows"},
        outputs={"forecasts": output},
        arguments=[
            "--model",
            "{input:model}",
            "--history",
            "{input:history}",
            "--output",
            "{output:forecasts}",
            *[a for o in origins for a in ("--origin", o.isoformat())],
            *[a for k, v in _archive_check(context, current, "--model-sha256").items() for a in (k, v)],
        ],
    )
    with the_lake.open(f"{output}/forecasts.parquet") as f:
        forecasts = pd.read_parquet(f)
    written = _replace_origins(lake, forecasts, origins)
    last = forecasts[forecasts["origin"] == forecasts["origin"].max()] if len(forecasts) else forecasts
    plot = batch_forecast_plot(
        _recent_history(the_lake, f"{history}/rows", origins[-1]), last, pd.Timestamp(origins[-1])
    )
    the_lake.delete(history, recursive=True)
    yield MaterializeResult(
        metadata={
            "dagster/row_count": written,
            "origin": origins[-1].isoformat(),
            "origins": len(origins),
            "first_origin": origins[0].isoformat(),
            "model_version": current["version"],
            "method": str(forecasts["method"].iloc[0]) if len(forecasts) else "none",
            "series": int(forecasts.groupby(["device_id", "metric"]).ngroups),
            "job_name": run.job_name,
            "horizon_end": forecasts["bucket_start"].max().isoformat() if len(forecasts) else "none",
            "table": MetadataValue.path(the_lake.uri(FORECASTS_TABLE)),
            **chart_metadata(context, BATCH_FORECAST_KEY, "forecast_vs_actual", plot),
        }
    )


def _archive_check(context: AssetExecutionContext, champion: dict, name: str) -> dict[str, str]:
    """{name: the champion archive's registered sha256}, for the job to check before unpickling it. A
    champion registered before archives were hashed has none: it is loaded unchecked, with a warning,
    until the next promotion replaces it."""
    if champion.get("sha256"):
        return {name: champion["sha256"]}
    context.log.warning(f"champion {champion['version']} has no registered sha256: its archive is loaded unchecked")
    return {}


def _recent_history(lake, key: str, origin: datetime) -> pd.DataFrame:
    """The exported history's last 12 hours before the origin: the actuals the chart leads in with."""
    import pyarrow.dataset as ds

    files = [p for p in lake.fs.find(lake.path(key)) if p.endswith(".parquet")]
    if not files:
        return pd.DataFrame(columns=["device_id", "metric", "bucket_start", "y"])
    rows = (
        ds.dataset(files, format="parquet", filesystem=lake.fs)
        .to_table(columns=["device_id", "metric", "bucket_start", "y"])
        .to_pandas()
    )
    times = pd.to_datetime(rows["bucket_start"], utc=True)
    return rows[times >= pd.Timestamp(origin) - pd.Timedelta(hours=12)].assign(bucket_start=times)


def _replace_origins(lake: LakeResource, forecasts: pd.DataFrame, origins: list[datetime]) -> int:
    """Write the origins' forecasts in one commit, replacing any from an earlier run of the same origins."""
    import pyarrow as pa
    from deltalake import write_deltalake

    forecasts = forecasts.assign(origin_date=pd.to_datetime(forecasts["origin"], utc=True).dt.date)
    table = pa.Table.from_pandas(forecasts, preserve_index=False)
    dates = ", ".join(sorted({f"'{o.date().isoformat()}'" for o in origins}))
    write_deltalake(
        lake.lake().uri(FORECASTS_TABLE),
        table,
        mode="overwrite",
        partition_by=["origin_date"],
        predicate=(
            f"origin_date IN ({dates}) "
            f"AND origin >= '{origins[0].isoformat()}' AND origin <= '{origins[-1].isoformat()}'"
        ),
        storage_options=lake.delta_storage_options(),
    )
    return len(forecasts)


def _training_outputs(lake, key: str) -> tuple[dict, pd.DataFrame]:
    """metrics.json and the hold-out sample from the job's output.tar.gz."""
    with lake.open(key) as f, tarfile.open(fileobj=io.BytesIO(f.read()), mode="r:gz") as tar:
        metrics = json.load(tar.extractfile("metrics.json"))
        sample = pd.read_parquet(io.BytesIO(tar.extractfile("holdout_sample.parquet").read()))
    return metrics, sample


def _plot(sample: pd.DataFrame) -> str:
    """A forecast-vs-actual chart of the hold-out day for a few series, as Markdown with an inline PNG."""
    if sample.empty:
        return "no hold-out forecasts"
    import matplotlib

    matplotlib.use("Agg")  # no display in a run worker
    import matplotlib.pyplot as plt

    ids = sorted(sample["unique_id"].unique())
    fig, axes = plt.subplots(len(ids), 1, figsize=(9, 2.2 * len(ids)), sharex=True, squeeze=False)
    for ax, uid in zip(axes[:, 0], ids):
        for model, rows in sample[sample["unique_id"] == uid].groupby("model"):
            rows = rows.sort_values("ds")
            if model == sample["model"].iloc[0]:
                ax.plot(rows["ds"], rows["y"], color="black", linewidth=1, label="actual")
            ax.plot(rows["ds"], rows["yhat"], linewidth=1, label=model)
            if "hi_80" in rows and model != "seasonal_naive":
                ax.fill_between(rows["ds"], rows["lo_80"], rows["hi_80"], alpha=0.2)
        ax.set_title(uid, fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    return png_markdown(fig, "forecast vs actual")
