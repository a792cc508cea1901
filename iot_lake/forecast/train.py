"""Train the forecaster: a SageMaker script-mode entry point (a local subprocess on the embedded default).

    SM_CHANNEL_TRAIN=... SM_MODEL_DIR=... SM_OUTPUT_DATA_DIR=... SM_HPS='{"freq": "5min"}' \
        python -m iot_lake.forecast.train

Channels: ``train`` (parquet files of iot_lake.forecast.training_data_job) and, optionally,
``champion`` (the current champion's model.tar.gz), which is scored on the same origins.
Hyperparameters (iot_lake.forecast.model.Hyperparameters) come from ``SM_HPS`` or
``<SM_INPUT_CONFIG_DIR>/hyperparameters.json``, as SageMaker provides them.

1. Backtest every candidate with rolling origins (iot_lake.forecast.evaluation): each of the last
   ``backtest_origins`` days (3) forecast by a fit on the days before it, intervals calibrated on
   the ``conformal_windows`` days before each origin. With too little history for a candidate it
   is left out (``skipped``); when nothing can be scored (a day or two of data), seasonal naive is
   chosen and ``method_reason`` says why.
2. Refit the best candidate by mean MASE over the origins at which every candidate was scored
   (``evaluation.chosen_candidate``) on all days; its intervals are calibrated
   on its out-of-sample errors of the last ``conformal_windows`` days of the backtest. Only a
   candidate with errors on all of those days can be chosen (``RollingBacktest.eligible``; with
   a few days of history, those with the most): a quantile of one or two days is no 95% interval.
3. Write it to ``SM_MODEL_DIR`` (model.pkl, model.json with its metrics and data range), and the
   backtest table, the hold-out forecasts and metrics.json to ``SM_OUTPUT_DATA_DIR``.
4. Report the metrics through Dagster Pipes when an orchestrator launched it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

from iot_lake.forecast.evaluation import chosen_candidate, rolling_backtest
from iot_lake.forecast.model import Hyperparameters, load, make, prepare, save
from iot_lake.forecast.registry import CHAMPION_SHA256, chosen_row

HOLDOUT_SAMPLE_SERIES = 6  # series whose hold-out forecasts are kept for the forecast-vs-actual plot


@dataclass(frozen=True)
class TrainingEnvironment:
    """What SageMaker's script mode hands a training script."""

    channels: dict[str, Path]
    model_dir: Path
    output_data_dir: Path
    hyperparameters: dict[str, str]

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> TrainingEnvironment:
        env = dict(os.environ if environ is None else environ)
        missing = [k for k in ("SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR", "SM_CHANNEL_TRAIN") if not env.get(k)]
        if missing:
            raise SystemExit(f"not a SageMaker training environment: {', '.join(missing)} unset")
        if "SM_HPS" in env:
            hps = json.loads(env["SM_HPS"])
        else:
            path = Path(env.get("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config")) / "hyperparameters.json"
            hps = json.loads(path.read_text()) if path.exists() else {}
        channels = {k[len("SM_CHANNEL_") :].lower(): Path(v) for k, v in env.items() if k.startswith("SM_CHANNEL_")}
        return cls(
            channels,
            Path(env["SM_MODEL_DIR"]),
            Path(env["SM_OUTPUT_DATA_DIR"]),
            {k: v if isinstance(v, str) else json.dumps(v) for k, v in hps.items()},
        )


def read_rows(directory: Path) -> pd.DataFrame:
    files = sorted(p for p in directory.rglob("*.parquet") if not p.name.startswith(("_", ".")))
    if not files:
        raise SystemExit(f"no parquet files in the train channel {directory}")
    return pd.concat((pd.read_parquet(f) for f in files), ignore_index=True)


def train(env: TrainingEnvironment) -> dict:
    # The champion archive's registered sha256 travels with the hyperparameters (SageMaker's only
    # way in besides channels); it is checked before the champion is unpickled.
    champion_sha256 = env.hyperparameters.get(CHAMPION_SHA256)
    hp = Hyperparameters.from_strings({k: v for k, v in env.hyperparameters.items() if k != CHAMPION_SHA256})
    series = prepare(read_rows(env.channels["train"]), hp.freq, interpolate=False)
    champion, champion_meta = None, {}
    if "champion" in env.channels:
        champion, champion_meta = load(env.channels["champion"], champion_sha256)
    result = rolling_backtest(series, hp, champion=champion)
    try:
        chosen, origins = chosen_candidate(result)
        reason = (
            f"lowest mean MASE over the {origins} rolling origin(s) of the last {len(result.origins)} days "
            "at which every candidate was scored"
        )
        # Say which candidates sat out for want of calibration days, and how many they had.
        eligible = result.eligible(result.end)
        short = {m: result.calibrated_days(m, result.end) for m in result.errors if m not in eligible}
        if short:
            days = result.calibrated_days(chosen, result.end)
            reason += (
                f", among those with intervals calibrated on {days} of {hp.conformal_windows} days "
                f"(not {', '.join(f'{m}: {n}' for m, n in sorted(short.items()))})"
            )
    except ValueError:
        chosen = "seasonal_naive"
        reason = (
            "fallback: no candidate could be scored with this little history "
            f"({series.values.groupby('unique_id').size().max() / hp.steps_per_day:.1f} days; MASE needs a day "
            "before each scored day for its scale, lightgbm 3 days, weekly naive 7)"
        )
    try:
        model = make(chosen, hp).fit(series.interpolated())
    except ValueError as exc:
        # Less than a day of any series: not even the fallback has a value to repeat. Not a fault
        # of the data: the job succeeds without a model and says why (no version enters the registry).
        return _no_model(env, f"no model yet: {exc}")
    end = series.last_ds + pd.Timedelta(hp.freq)
    if chosen in result.errors and hasattr(model, "calibration"):
        model.calibration = result.calibration(chosen, end, hp.levels)
    data_range = {
        "first": series.values["ds"].min().isoformat() + "Z",
        "last": series.last_ds.isoformat() + "Z",
        "series": int(series.values["unique_id"].nunique()),
        "rows": len(series.values),
    }
    table = result.table.round(4)
    if "champion" in set(table.get("model", [])):
        # The promotion compares on the same origins: the challenger's MASE where the champion was scored.
        per_origin = result.per_origin
        champion_origins = per_origin.loc[per_origin["model"] == "champion", "origin"]
        same = per_origin[(per_origin["model"] == chosen) & per_origin["origin"].isin(champion_origins)]
        table.loc[table["model"] == "champion", "challenger_mase"] = round(float(same["mase"].mean()), 4)
    per_origin = result.per_origin.round(dict.fromkeys(result.per_origin.select_dtypes("number").columns, 4))
    if len(per_origin):
        per_origin["origin"] = per_origin["origin"].map(lambda t: t.isoformat() + "Z")
    metrics = {
        "method": chosen,
        "method_reason": reason,
        "data_range": data_range,
        "holdout_start": result.holdout_start.isoformat() + "Z",
        "origins": [o.isoformat() + "Z" for o in result.origins],
        "calibration_days": hp.conformal_windows,
        "backtest": table.to_dict(orient="records"),
        "backtest_origins": per_origin.to_dict(orient="records"),
        "skipped": result.skipped,
        "champion_version": champion_meta.get("version"),
    }
    # SageMaker names the job in the container's environment: the job name is the model's version.
    save(
        model,
        env.model_dir,
        {"version": os.environ.get("TRAINING_JOB_NAME"), "data_range": data_range, "backtest": metrics["backtest"]},
    )
    env.output_data_dir.mkdir(parents=True, exist_ok=True)
    (env.output_data_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    table.to_csv(env.output_data_dir / "backtest.csv", index=False)
    sample = sorted(result.forecasts["unique_id"].unique())[:HOLDOUT_SAMPLE_SERIES] if len(result.forecasts) else []
    holdout = (
        result.forecasts[result.forecasts["unique_id"].isin(sample)] if len(result.forecasts) else result.forecasts
    )
    holdout.to_parquet(env.output_data_dir / "holdout_sample.parquet")
    return metrics


def _no_model(env: TrainingEnvironment, reason: str) -> dict:
    metrics = {"method": None, "method_reason": reason, "backtest": []}
    env.model_dir.mkdir(parents=True, exist_ok=True)
    env.output_data_dir.mkdir(parents=True, exist_ok=True)
    (env.output_data_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    pd.DataFrame(columns=["unique_id", "ds", "y", "yhat"]).to_parquet(env.output_data_dir / "holdout_sample.parquet")
    return metrics


def main() -> None:
    env = TrainingEnvironment.from_environ()
    with open_dagster_pipes() as pipes:
        metrics = train(env)
        if metrics["method"] is None:
            pipes.log.warning(metrics["method_reason"])
            return
        chosen = chosen_row(metrics["backtest"], metrics["method"])
        scored = f"MASE {chosen['mase']} on the hold-out from {metrics['holdout_start']}" if chosen else "not scored"
        pipes.log.info(f"trained {metrics['method']}: {scored} ({metrics['method_reason']})")
        pipes.report_asset_materialization(
            metadata={
                "method": metrics["method"],
                "mase": chosen.get("mase"),
                "holdout_start": metrics["holdout_start"],
                "data_range": {"raw_value": metrics["data_range"], "type": "json"},
                "backtest": {"raw_value": metrics["backtest"], "type": "json"},
            }
        )
        if not PipesEnvVarParamsLoader().is_dagster_pipes_process():  # run by hand: show the metrics
            print(json.dumps(metrics))


if __name__ == "__main__":
    main()
