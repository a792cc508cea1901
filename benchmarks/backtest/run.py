"""Rolling-origin backtest of every forecasting candidate on simulated and on real series.

    .venv/bin/python -m benchmarks.backtest                  # 12 devices x 15 days, 7 origins; real series
    .venv/bin/python -m benchmarks.backtest --quick          # 4 devices, 3 origins, simulated only
    .venv/bin/python -m benchmarks.backtest --skip-real

iot_lake.forecast.evaluation.rolling_backtest at the last ``--origins`` day boundaries: each origin
refits every candidate on the data before it, interpolates after the split and calibrates the
80/95% intervals on the 3 days before it. MASE is scaled per series by the in-sample MAE of the
daily seasonal naive on the training part; the table shows its mean over series and origins, the
spread of the per-origin means, and the pooled coverage.

Beside LightGBM alone, ``deployed`` is what the nightly training would have put in production at
each origin (iot_lake.forecast.evaluation.with_deployed): the candidate with the lowest mean MASE
over the ``backtest_origins`` (3) days before that origin among those whose intervals are calibrated
on all ``conformal_windows`` (3) days before it, its forecast and intervals there.

Datasets (benchmarks/backtest/data.py):
- simulated: the simulator's fleet (seed ``--seed``; the fixes to LightGBM were developed on seed 7,
  so the default seed 42 is out of sample for them);
- real: NAB's realAWSCloudwatch development series, each CSV one series, grouped by the days they
  were recorded (one global model and common origins per group). Series shorter than 13 days
  are left out: a week of weekly-naive lag and 7 origins do not fit. LightGBM's smoothed features
  were added after a first look at these figures, and the L1 objective was chosen on them (over
squared error, Huber and two target transforms), so they are not a clean hold-out; the
leave-one-group-out figure in docs/forecasting.md is.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import click
import pandas as pd
from rich.console import Console
from rich.table import Table

from benchmarks.backtest.data import real_rows, simulated_rows
from benchmarks.results import Result, workdir_option, write
from iot_lake.forecast.evaluation import rolling_backtest, with_deployed
from iot_lake.forecast.model import CANDIDATES, Hyperparameters, prepare

console = Console(stderr=True)
COVERAGE_TOLERANCE = 0.05


def run(frames: list[pd.DataFrame], hp: Hyperparameters, origins: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per model over every group and origin, per model and origin) of the backtests of ``frames``."""
    per_origin, forecasts = [], []
    for i, rows in enumerate(frames):
        series = prepare(rows, hp.freq, interpolate=False)
        result = with_deployed(rolling_backtest(series, hp, origins=origins), series, hp)
        if result.skipped:
            console.print(f"group {i}: {result.skipped}")
        per_origin.append(result.per_origin.assign(group=i))
        forecasts.append(result.forecasts.assign(group=i))
    per_origin = pd.concat(per_origin, ignore_index=True)
    forecasts = pd.concat(forecasts, ignore_index=True)
    summary = []
    for model, rows in per_origin.groupby("model", sort=False):
        fc = forecasts[forecasts["model"] == model]
        weights = rows["series"]
        row = {
            "model": model,
            # The mean over series and origins: each origin's mean weighted by its series.
            "mase": float((rows["mase"] * weights).sum() / weights[rows["mase"].notna()].sum()),
            "origins": int(rows.groupby("group").size().max()),
            "series": int(rows.groupby("group")["series"].max().sum()),
            "mase_origin_min": float(rows["mase"].min()),
            "mase_origin_max": float(rows["mase"].max()),
        }
        for level in hp.levels:
            known = fc[f"lo_{level}"].notna() & fc["y"].notna()
            inside = (fc["y"] >= fc[f"lo_{level}"]) & (fc["y"] <= fc[f"hi_{level}"])
            row[f"coverage_{level}"] = float(inside[known].mean()) if known.any() else float("nan")
        summary.append(row)
    return pd.DataFrame(summary), per_origin


@click.command()
@click.option("--devices", default=12, show_default=True)
@click.option("--days", default=15, show_default=True)
@click.option("--origins", default=7, show_default=True)
@click.option("--quick", is_flag=True, help="4 devices, 3 origins, simulated only.")
@click.option("--skip-real", is_flag=True, help="Simulated series only.")
@click.option("--seed", default=42, show_default=True, help="Seed of the simulated fleet and its data.")
@workdir_option("backtest")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None)
def main(
    devices: int, days: int, origins: int, quick: bool, skip_real: bool, seed: int, workdir: Path, json_path
) -> None:
    warnings.filterwarnings("ignore", message="Found null values")  # LightGBM takes missing lags and weather
    if quick:
        devices, origins, skip_real = 4, 3, True
    hp = Hyperparameters()
    datasets: dict[str, list[pd.DataFrame]] = {}
    with console.status(f"simulating {devices} devices x {days} days (cached)"):
        datasets["simulated"] = [simulated_rows(workdir, devices, days, seed)]
    if not skip_real:
        groups, left_out = real_rows(min_days=13)
        datasets["real"] = groups
        console.print(f"real series left out: {left_out}")
    tables, seconds, chosen = {}, {}, {}
    for name, frames in datasets.items():
        t0 = time.perf_counter()
        with console.status(f"rolling-origin backtest on {name} series ({origins} origins)"):
            tables[name], per_origin = run(frames, hp, origins)
        seconds[name] = time.perf_counter() - t0
        picks = per_origin.loc[per_origin["model"] == "deployed", "chosen"].value_counts()
        chosen[name] = "chosen at the origins: " + ", ".join(f"{m} {n}" for m, n in picks.items())
        spread = per_origin.pivot_table(index=["group", "origin"], columns="model", values="mase")
        console.print(f"{name}: MASE per origin\n{spread.round(3).to_string()}")

    out = Console(width=None if sys.stdout.isatty() else 140)
    table = Table(title=f"rolling-origin backtest, {hp.conformal_windows}-day calibration ({os.cpu_count()} cores)")
    for column in ("dataset", "model", "series", "origins", "MASE", "per-origin MASE", "cover 80", "cover 95"):
        table.add_column(column, justify="left" if column in ("dataset", "model") else "right")
    results = []
    for name, summary in tables.items():
        for r in summary.itertuples():
            table.add_row(
                name,
                r.model,
                str(r.series),
                str(r.origins),
                f"{r.mase:.3f}",
                f"{r.mase_origin_min:.2f}-{r.mase_origin_max:.2f}",
                f"{r.coverage_80:.3f}",
                f"{r.coverage_95:.3f}",
            )
        by_model = summary.set_index("model")
        naive = by_model.loc[[m for m in CANDIDATES if m.startswith("seasonal_naive") and m in by_model.index], "mase"]
        for model, label in (("lightgbm", "LightGBM"), ("deployed", "deployed")):
            if model not in by_model.index or not len(naive):
                continue
            best = naive.idxmin()
            lgbm = by_model.loc[model]
            results.append(
                Result(
                    "backtest",
                    f"{label} MASE, {name} ({int(lgbm['origins'])} origins)",
                    float(lgbm["mase"]),
                    "MASE",
                    reference=f"the better naive ({best})",
                    reference_value=float(naive.min()),
                    target=1.0,
                    note=f"{seconds[name]:.0f} s" if model == "lightgbm" else chosen.get(name, ""),
                )
            )
            for level in hp.levels:
                covered = float(lgbm[f"coverage_{level}"])
                results.append(
                    Result(
                        "backtest",
                        f"{label} {level}% coverage gap, {name}",
                        abs(covered - level / 100),
                        "share",
                        target=COVERAGE_TOLERANCE,
                        target_on="value",
                        note=f"coverage {covered:.3f} of nominal {level / 100:g}",
                    )
                )
    out.print(table)
    console.print("; ".join(f"{name} {s:.0f} s" for name, s in seconds.items()))
    write(json_path, results)


if __name__ == "__main__":
    main()
