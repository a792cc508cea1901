"""Training and batch-forecast time and memory of the forecaster at fleet scale.

    .venv/bin/python -m benchmarks.forecast            # 200 devices x 4 metrics x 14 days of 1-minute data
    .venv/bin/python -m benchmarks.forecast --quick    # 20 devices: a smoke run

The simulator's 1-minute readings of every device metric, as 5-minute training rows (what
iot_lake.forecast.training_data_job hands the training channel), cached under --workdir. Then,
each in its own process with the SageMaker contract the local runner uses:

- training: ``python -m iot_lake.forecast.train`` (backtest of every candidate on the last day,
  refit of the best with conformal intervals). Target: under 5 minutes.
- forecast: ``python -m iot_lake.forecast.batch_forecast`` of the next 24 hours from three days of
  history. Target: under 1 minute.

Reference, measured in the same run: statsforecast's seasonal naive forecasting the same series,
the cheapest forecast there is; the ratios say how much the real model costs over it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import click
import pandas as pd
from rich.console import Console
from rich.table import Table

from benchmarks.curate.run import measure
from benchmarks.results import Result, json_option, workdir_option, write
from iot_lake.simulate.training_rows import training_rows

START = date(2026, 11, 2)
TRAIN_TARGET_S, FORECAST_TARGET_S = 300, 60
console = Console(stderr=True)


def cached_rows(workdir: Path, devices: int, days: int, seed: int = 42) -> Path:
    path = workdir / f"rows-{devices}x{days}-{seed}.parquet"
    if not path.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        training_rows(devices=devices, days=days, start=START, seed=seed).to_parquet(path, index=False)
    return path


def reference_seconds(rows: pd.DataFrame) -> float:
    from iot_lake.forecast.model import Hyperparameters, SeasonalNaive, prepare

    t0 = time.perf_counter()
    hp = Hyperparameters()
    SeasonalNaive(hp).predict(prepare(rows, hp.freq), hp.horizon)
    return time.perf_counter() - t0


@click.command()
@click.option("--devices", default=200, show_default=True)
@click.option("--days", default=14, show_default=True)
@click.option("--quick", is_flag=True, help="20 devices")
@click.option("--seed", default=42, show_default=True, help="Seed of the simulated fleet and its data.")
@workdir_option("forecast")
@json_option
def main(devices: int, days: int, quick: bool, seed: int, workdir: Path, json_path: Path | None) -> None:
    if quick:
        devices = 20
    with console.status(f"simulating {devices} devices x {days} days of 1-minute readings (cached)"):
        source = cached_rows(workdir, devices, days, seed)
    rows = pd.read_parquet(source)
    run = workdir / "run"
    for d in ("train", "model", "output", "history", "forecasts"):
        (run / d).mkdir(parents=True, exist_ok=True)
    (run / "train" / "rows.parquet").unlink(missing_ok=True)
    (run / "train" / "rows.parquet").symlink_to(source)
    last_day = rows["event_date"].max()
    rows[rows["event_date"] > last_day - timedelta(days=3)].to_parquet(run / "history" / "rows.parquet", index=False)
    origin = pd.Timestamp(last_day + timedelta(days=1)).tz_localize("UTC").isoformat()

    with console.status("reference: seasonal naive over the same series"):
        reference = reference_seconds(rows)
    env = {
        "SM_CHANNEL_TRAIN": str(run / "train"),
        "SM_MODEL_DIR": str(run / "model"),
        "SM_OUTPUT_DATA_DIR": str(run / "output"),
        "SM_HPS": "{}",
        "TRAINING_JOB_NAME": "benchmark",
    }
    with console.status("training (backtest + refit with intervals)"):
        train = measure(["iot_lake.forecast.train"], env)
    with console.status("batch forecast of the next 24 hours"):
        forecast = measure(
            [
                "iot_lake.forecast.batch_forecast",
                "--model",
                str(run / "model"),
                "--history",
                str(run / "history"),
                "--output",
                str(run / "forecasts"),
                "--origin",
                origin,
            ],
            {},
        )

    series = rows.groupby(["device_id", "metric"]).ngroups
    out = Console(width=None if sys.stdout.isatty() else 120)
    table = Table(
        title=f"forecast benchmark: {series} series x {days} days, {len(rows):,} 5-minute rows ({os.cpu_count()} cores)"
    )
    for column in ("run", "seconds", "peak MiB", "CPU s", "x reference", "vs target"):
        table.add_column(column, justify="left" if column in ("run", "vs target") else "right")
    table.add_row("reference: seasonal naive", f"{reference:.1f}", "", "", "1.0", "")
    for label, m, target in (("training", train, TRAIN_TARGET_S), ("batch forecast", forecast, FORECAST_TARGET_S)):
        verdict = (
            f"[green]{m.wall:.0f} s <= {target} s[/]" if m.wall <= target else f"[red]{m.wall:.0f} s > {target} s[/]"
        )
        table.add_row(
            label, f"{m.wall:.1f}", f"{m.peak_mib:,.0f}", f"{m.cpu:.0f}", f"{m.wall / reference:.1f}", verdict
        )
    out.print(table)
    backtest = {r["model"]: r for r in train.output["backtest"]}
    console.print(
        "backtest on the hold-out day "
        + train.output["holdout_start"]
        + ": "
        + "; ".join(
            f"{name} MASE {r['mase']:.3f}, 80% cover {r['coverage_80']:.2f}, 95% cover {r['coverage_95']:.2f}"
            for name, r in backtest.items()
        )
    )
    console.print(f"forecast: {json.dumps(forecast.output)}")
    reference_label = f"seasonal naive over the same {series} series"
    results = [
        Result(
            "forecast",
            f"training, {series} series x {days} days",
            train.wall,
            reference=reference_label,
            reference_value=reference,
            target=TRAIN_TARGET_S,
            target_on="value",
        ),
        Result(
            "forecast",
            "batch forecast, next 24 h",
            forecast.wall,
            reference=reference_label,
            reference_value=reference,
            target=FORECAST_TARGET_S,
            target_on="value",
        ),
    ]
    if "lightgbm" in backtest and "seasonal_naive" in backtest:
        results.append(
            Result(
                "forecast",
                "backtest MASE, LightGBM",
                backtest["lightgbm"]["mase"],
                "MASE",
                reference="seasonal naive's MASE",
                reference_value=backtest["seasonal_naive"]["mase"],
                target=1.0,
            )
        )
    write(json_path, results)
    console.print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
