"""Real sensor data through the real pipeline, scored like NAB: does a case mean something?

    .venv/bin/python -m benchmarks.realdata [--json out.json]

For every series of ``../shared/datasets/nab-dev/data/realAWSCloudwatch`` (17 real AWS CloudWatch
metrics, 5-minute cadence, two weeks each, with NAB's labelled anomaly windows), on a fresh lake:

1. ``iot-lake import FILE --device <file> --metric <metric> --unit <unit> --start MONDAY``: lands it
   as Firehose would and registers it (shifted by whole weeks, weekday and time of day kept);
2. ``python -m jobs.main --no-simulate --start <day after the first> --days N --history-days 1``:
   curated -> nightly training -> hourly batch forecasts -> deviations -> cases, exactly the
   product's path, with no knowledge of the labels;
3. ``iot-lake cases list --format json``: each case's start, shifted back, is a detection at the
   first row of the file at or after it (an anomaly score of 1 there, 0 elsewhere);
4. the shared NAB tool scores those openings on the realAWSCloudwatch files;
5. diagnosis: the deviations the pipeline stored are re-scored without each of the production
   detector's additions to NAB's (``ABLATIONS``), so the points they cost or earn here are printed
   beside the unit tests they exist for (in-sample figures, never a basis for choosing).

Reference, in the same run: the stand-alone detector (iot_lake.detect.nab:nab_detector, what
``python -m benchmarks.nab`` scores) over the same files, scored by the same tool on the same
subset. The pipeline should lose at most 5 points to it: it sees the series only after a day of
history, through 1-minute aggregates of 5-minute points, against a forecast trained nightly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from datetime import date, datetime, timedelta
from pathlib import Path

import click
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from benchmarks.dagster_dev import REPO, clean_env
from benchmarks.nab.tool import tool_dir
from benchmarks.results import Result, load_average, write

CATEGORY = "realAWSCloudwatch"
IMPORT_START = date(2026, 10, 5)  # a Monday: the weeks the series are shifted into
SITE = "aws-cloudwatch"
# metric name and unit by the file name's stem (the NAB files say what they measure)
METRICS = (
    ("cpu_utilization", "cpu_utilization", "%"),
    ("grok_asg", "cpu_utilization", "%"),
    ("disk_write_bytes", "disk_write_bytes", "bytes"),
    ("network_in", "network_in", "bytes"),
    ("NetworkIn", "network_in", "bytes"),
    ("request_count", "request_count", "count"),
)
LOSS_TARGET = 5.0
console = Console(stderr=True)


def data_dir() -> Path:
    return Path(os.environ.get("NAB_DATA", REPO.parent / "shared" / "datasets" / "nab-dev")).resolve()


def metric_of(stem: str) -> tuple[str, str]:
    for needle, metric, unit in METRICS:
        if needle in stem:
            return metric, unit
    raise click.ClickException(f"no metric known for {stem}")


def device_of(stem: str) -> str:
    return stem.replace("_", "-").replace(".", "-").lower()[:60]


def import_series(
    path: Path, device: str, metric: str, unit: str, start: date, env: dict[str, str], site: str = SITE
) -> dict:
    """``iot-lake import`` of one CSV file, its JSON report."""
    args = ["import", str(path), "--device", device, "--metric", metric, "--unit", unit, "--site", site]
    done = subprocess.run(
        [sys.executable, "-m", "iot_lake.cli", *args, "--start", start.isoformat(), "--format", "json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise click.ClickException(f"import of {path.name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def import_all(files: list[Path], env: dict[str, str]) -> dict[str, dict]:
    """iot-lake import of each file; {relpath: the import's JSON report}."""
    reports = {}
    for path in files:
        metric, unit = metric_of(path.stem)
        reports[f"{CATEGORY}/{path.name}"] = import_series(path, device_of(path.stem), metric, unit, IMPORT_START, env)
    return reports


def run_pipeline(reports: dict[str, dict], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    """``jobs.main --no-simulate`` over every day the imports landed, the first one as history."""
    first = min(datetime.fromisoformat(r["first"]) for r in reports.values()).date()
    last = max(datetime.fromisoformat(r["last"]) for r in reports.values()).date()
    start = first + timedelta(days=1)
    days = (last - start).days + 1
    command = [sys.executable, "-m", "jobs.main", "--no-simulate", "--start", start.isoformat()]
    command += ["--days", str(days), "--history-days", "1"]
    console.print(" ".join(command[1:]))
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    return done, time.perf_counter() - t0


def _failed_runs(output: str) -> list[str]:
    """The main job's "FAILED <job> <partitions> run <id>" lines (rich may wrap them)."""
    return [line.strip() for line in output.splitlines() if line.startswith("FAILED ")]


def cases(env: dict[str, str]) -> pd.DataFrame:
    done = subprocess.run(
        [sys.executable, "-m", "iot_lake.cli", "cases", "list", "--format", "json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    frame = pd.DataFrame(json.loads(done.stdout), columns=["key", "device_id", "metric", "start", "severity"])
    frame["start"] = pd.to_datetime(frame["start"], utc=True)
    return frame


def openings(reports: dict[str, dict], found: pd.DataFrame, data: Path) -> dict[str, np.ndarray]:
    """Per file, 1.0 at the first row at or after each case's start (shifted back), else 0."""
    out = {}
    for relpath, report in reports.items():
        rows = pd.read_csv(data / "data" / relpath, usecols=["timestamp"])
        ts = pd.to_datetime(rows["timestamp"]).to_numpy()
        score = np.zeros(len(ts))
        starts = found.loc[found["device_id"] == report["device_id"], "start"]
        for start in starts:
            original = (start - pd.Timedelta(seconds=report["shift_seconds"])).tz_convert(None).to_datetime64()
            i = int(np.searchsorted(ts, original, side="left"))
            if i < len(ts):
                score[i] = 1.0
        out[relpath] = score
    return out


# What the production detector's additions to NAB's (iot_lake.detect.deviations.PRODUCTION) cost or
# earn on these series: the deviations the pipeline stored, re-scored without each (seconds on the
# kept minutes and bands). Openings are incident starts here, not cases, so each is compared with
# production re-scored the same way. Diagnosis only: choosing among them on this data is in-sample.
ABLATIONS = {
    "production": {},
    "without the hour's calibration lag": {"lag": 0.0},
    "without the band's 10-minute mean channel": {"channels": "level,season,shift,band"},
    "without both band channels": {"channels": "level,season,shift"},
    "with a 35 h quiet after an incident (NAB's before season_forget)": {"suppress": 127500.0},
    "without the daily season yielding to a better forecast": {"season_yield": 0.0},
    "without yesterday's echo rule": {"echo_ordinary": 0.0},
    "without the stuck-sensor rule": {"stuck_after": 0.0},
    "without the silent-sensor rule": {"silent_after": 0.0},
}
MINUTE = pd.Timedelta(minutes=1)


def incident_starts(scored: pd.DataFrame) -> pd.DataFrame:
    """(device_id, start) of each incident of scored deviation rows: where is_anomalous turns on."""
    scored = scored.sort_values(["device_id", "metric", "ts"])
    on = scored["is_anomalous"].to_numpy(bool)
    before = scored.groupby(["device_id", "metric"])["is_anomalous"].shift(fill_value=False).to_numpy(bool)
    starts = scored.loc[on & ~before, ["device_id", "ts"]].rename(columns={"ts": "start"})
    starts["start"] = pd.to_datetime(starts["start"], utc=True)
    return starts


def ablations(lake: Path, reports: dict[str, dict], data: Path) -> dict[str, dict[str, float]]:
    """NAB scores of the stored deviations re-scored by each ABLATIONS variant."""
    from deltalake import DeltaTable

    from iot_lake.detect import deviations

    stored = DeltaTable(str(lake / "ops" / "deviations")).to_pandas()
    joined = stored.rename(
        columns={"ts": "bucket_start", "actual": "mean", "expected": "yhat", "forecast_origin": "origin"}
    ).assign(lo_95=stored["expected_lo"], hi_95=stored["expected_hi"], lo_80=np.nan, hi_80=np.nan)
    out = {}
    own = {f.name for f in fields(deviations.DeviationParams)}  # the rest are the detector's (NabParams)
    for name, change in ABLATIONS.items():
        detector = deviations.PRODUCTION.with_(**{k: v for k, v in change.items() if k not in own})
        params = deviations.DeviationParams(detector=detector, **{k: v for k, v in change.items() if k in own})
        # The range the pipeline scored, so silences are marked as its hourly runs marked them.
        scored = deviations.score(joined, None, params, window=(stored["ts"].min(), stored["ts"].max() + MINUTE))
        out[name] = nab_scores(openings(reports, incident_starts(scored), data), data)
    return out


def nab_scores(scores: dict[str, np.ndarray], data: Path) -> dict[str, float]:
    sys.path.insert(0, str(tool_dir()))
    import nab_score  # the shared tool

    corpus = nab_score.load_corpus(str(data / "data"), str(data / "labels" / "combined_windows.json"), only=set(scores))
    result = nab_score.score_detector(nab_score.build_rows(corpus, scores))
    return {name: r["score"] for name, r in result.items()}


def standalone(files: list[Path]) -> dict[str, np.ndarray]:
    from iot_lake.detect.nab import nab_detector

    out = {}
    for path in files:
        frame = pd.read_csv(path)
        series = pd.Series(frame["value"].to_numpy(float), index=pd.DatetimeIndex(pd.to_datetime(frame["timestamp"])))
        out[f"{CATEGORY}/{path.name}"] = nab_detector(series)
    return out


@click.command()
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None)
@click.option("--keep", type=click.Path(path_type=Path), default=None, help="Keep the lake and Dagster home here.")
def main(json_path: Path | None, keep: Path | None) -> None:
    data = data_dir()
    files = sorted((data / "data" / CATEGORY).glob("*.csv"))
    if not files:
        raise click.ClickException(f"no {CATEGORY} series under {data} (set NAB_DATA)")
    with tempfile.TemporaryDirectory(prefix="iot-lake-realdata-") as tmp:
        work = keep or Path(tmp)
        (work / "home").mkdir(parents=True, exist_ok=True)
        env = clean_env(IOT_LAKE_ROOT=str(work / "lake"), DAGSTER_HOME=str(work / "home"))
        with console.status(f"iot-lake import of {len(files)} series"):
            reports = import_all(files, env)
        with console.status("python -m jobs.main --no-simulate over the imported weeks"):
            done, pipeline_s = run_pipeline(reports, env)
        console.print(done.stdout[-4000:])
        failed = _failed_runs(done.stdout + done.stderr)
        if done.returncode and not failed:
            raise click.ClickException(f"the main job failed ({done.returncode}):\n{done.stderr[-4000:]}")
        # Failed runs are reported, not fatal: the days before the first model cannot be forecast
        # (no champion yet), and the cases of the rest still say what the loop found.
        for line in failed:
            console.print(f"[yellow]{line}[/yellow]")
        found = cases(env)
        variants = ablations(work / "lake", reports, data)
    pipeline = nab_scores(openings(reports, found, data), data)
    with console.status("stand-alone detector on the same files"):
        reference = nab_scores(standalone(files), data)

    table = Table(title=f"NAB on {CATEGORY} ({len(files)} series): cases of the pipeline vs the stand-alone detector")
    for column in ("profile", "pipeline (case openings)", "stand-alone detector", "points lost"):
        table.add_column(column, justify="left" if column == "profile" else "right")
    for name in pipeline:
        table.add_row(
            name, f"{pipeline[name]:.2f}", f"{reference[name]:.2f}", f"{reference[name] - pipeline[name]:.2f}"
        )
    Console(width=None if sys.stdout.isatty() else 120).print(table)
    console.print(
        f"{len(found)} cases; the pipeline took {pipeline_s:.0f} s; load average {load_average():.1f} "
        f"on {os.cpu_count()} cores"
    )
    results = [
        Result(
            "realdata",
            f"NAB {name}, {CATEGORY} through the pipeline (case openings)",
            pipeline[name],
            "score",
            reference="stand-alone detector, same files",
            reference_value=reference[name],
            higher_is_better=True,
        )
        for name in pipeline
    ]
    loss = reference["standard"] - pipeline["standard"]
    results.append(
        Result(
            "realdata",
            f"NAB standard points the pipeline loses to the stand-alone detector on {CATEGORY}",
            loss,
            "points",
            target=LOSS_TARGET,
            target_on="value",
            note=f"{len(found)} cases; pipeline {pipeline_s:.0f} s; {len(failed)} failed runs",
        )
    )
    results.append(Result("realdata", f"main job --no-simulate over the imported {CATEGORY} weeks", pipeline_s))
    results += [
        Result(
            "realdata",
            f"NAB standard, stored deviations re-scored {name} (incident starts)",
            scores["standard"],
            "score",
            reference="production, re-scored the same way",
            reference_value=variants["production"]["standard"],
            higher_is_better=True,
            note="diagnosis, in-sample",
        )
        for name, scores in variants.items()
        if name != "production"
    ]
    console.print(
        "Stored deviations re-scored (incident starts, NAB standard): "
        + "; ".join(f"{name} {scores['standard']:.2f}" for name, scores in variants.items())
    )
    write(json_path, results)


if __name__ == "__main__":
    main()
