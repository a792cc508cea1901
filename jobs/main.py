"""The main job, end to end on whatever IOT_LAKE_ENV selects (the embedded default out of the box):
the whole loop from sources to cases.

    python -m jobs.main [--days 1] [--history-days 6] [--devices 20] [--seed 42] [--start YYYY-MM-DD]
                        [--warm-days 0]
    python -m jobs.main --no-simulate --start YYYY-MM-DD --days N [--history-days H]

``--start`` is the first scored day (default: ``--days`` before today). The simulator fills
``--history-days`` before it and the scored days with the three sources, and seeds the historian
with 15-minute readings of the days before those, so that the first training reads two weeks
(``historian_days``; skipped with ``--no-simulate``: then whatever already landed there, e.g.
``iot-lake import``, is used). Then,
through Dagster, in order: landing and curated for the whole window, weather and features; for
each scored day the nightly training on the days before it and the hourly batch forecasts of the
day (one run per range; ``--warm-days`` days before ``--start`` are forecast too); the deviations
of the scored hours, which open cases; the warehouse. The closing table answers what an operator
would ask: cases by severity, how many of them were real (the simulator's injected anomalies), how
fast, and how good the forecast was.

Runs are recorded in the same Dagster instance `dagster dev` uses (.dagster/ in the repo, or
$DAGSTER_HOME), so they show up in the UI afterwards.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import click
from dagster import DagsterInstance
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from assets.ml.forecast import TRAINING_DAYS
from iot_lake.lake import TELEMETRY_PREFIX, WEATHER_PREFIX, Lake, telemetry_hour_of_key, weather_day_of_key
from iot_lake.simulate.deliveries import SimConfig
from lib.loop_report import closing_table, loop_summary
from lib.sqlite_keepalive import kept_open

REPO = Path(__file__).resolve().parent.parent
console = Console(stderr=True)
# The UI keeps every event; the terminal only needs warnings and the progress bar.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# The run tags a backfill of a partition range carries (what the UI's "single run" backfill sets).
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
HOUR = "%Y-%m-%d-%H:%M"
# A range run plans one ASSET_MATERIALIZATION_PLANNED event per asset (its partitions as a subset)
# instead of one per partition and asset: the telemetry window's 840 planned events took ~40 s of
# storage writes, a third of the run. Dagster's trade-off: a failed range run's partitions show as
# missing, not failed, in the UI (the run itself shows failed and the main job exits non-zero).
PLANNED_AS_SUBSET = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


@contextmanager
def repo_instance():
    """$DAGSTER_HOME if set, else the repo's .dagster/ configured by the repo's dagster.yaml; its SQLite
    files kept open meanwhile (lib/sqlite_keepalive.py: the runs store thousands of events)."""
    if os.environ.get("DAGSTER_HOME"):
        with DagsterInstance.get() as instance, kept_open(os.environ["DAGSTER_HOME"]):
            yield instance
        return
    cwd = os.getcwd()
    os.chdir(REPO)  # dagster.yaml's storage paths are relative to the repo root
    try:
        (REPO / ".dagster").mkdir(exist_ok=True)
        with DagsterInstance.from_config(str(REPO)) as instance, kept_open(REPO / ".dagster"):
            yield instance
    finally:
        os.chdir(cwd)


def _hours(start: datetime, end: datetime) -> list[str]:
    return [(start + timedelta(hours=h)).strftime(HOUR) for h in range(int((end - start) / timedelta(hours=1)))]


def partitions_to_run(
    lake: Lake,
    first: datetime,
    start: datetime,
    end: datetime,
    history: datetime | None = None,
    forecast_from: datetime | None = None,
) -> list[tuple[str, list[str | None]]]:
    """(job, partition keys) in run order for the window: ``first``..``start`` is history (sources
    and curated only), ``start``..``end`` is scored (also forecasts, deviations and cases). The
    features also cover the ``TRAINING_DAYS`` before ``start`` the first night's training reads: days
    before ``first`` are the historian's history (15-minute readings once curated), so a fleet
    connected today trains on its past. ``history``: where the historian's readings begin (before
    ``first``), for the warehouse's facts. ``forecast_from`` (``first``..``start``, default ``start``):
    where the nightly trainings and hourly forecasts begin, so the scored days can follow days of
    forecasts (``warm_start``)."""
    forecast_from = start if forecast_from is None else forecast_from
    if not first <= forecast_from <= start:
        raise ValueError(f"forecasts must begin within {first:%Y-%m-%d}..{start:%Y-%m-%d}, not {forecast_from}")
    landed = sorted(
        {h for o in lake.list(TELEMETRY_PREFIX) if (h := telemetry_hour_of_key(o.key)) and first <= h < end}
    )
    hours = [h.strftime(HOUR) for h in landed]
    days = [(first + timedelta(days=i)).date().isoformat() for i in range((end - first).days or 1)]
    trained_from = min(first, forecast_from - timedelta(days=TRAINING_DAYS))
    feature_days = [(trained_from + timedelta(days=i)).date().isoformat() for i in range((end - trained_from).days)]
    # The weather of every featured day: a provider has its past too (the simulator lands it).
    weather_days = sorted(
        {
            d
            for o in lake.list(WEATHER_PREFIX)
            if (d := weather_day_of_key(o.key)) and trained_from.date() <= d < end.date()
        }
    )
    plan: list[tuple[str, list[str | None]]] = [
        ("historian_extract_job", days),
        # The extracts' readings (the historian's past, before ``first``) curated before the
        # telemetry, so features and training see the past; one run for the range.
        ("historian_curated_job", days),
        ("telemetry_hourly_job", hours),
        ("weather_daily_job", [d.isoformat() for d in weather_days]),
        ("features_daily_job", feature_days or days),
    ]
    day = forecast_from
    while day < end:
        # The model trained on the days before ``day`` forecasts from each of its hours' starts: the
        # forecast made at the end of hour h-1 (batch_forecast's partition h-1) serves hour h.
        plan.append(("forecast_training_job", [(day - timedelta(days=1)).date().isoformat()]))
        plan.append(
            ("forecast_refresh_job", _hours(day - timedelta(hours=1), day + timedelta(days=1) - timedelta(hours=1)))
        )
        day += timedelta(days=1)
    past = _hours(history, first) if history and history < first else []
    plan += [
        # Every hour that landed, history included: a series' own channels are calibrated on days of
        # it by the time its forecasts begin, as for a series that has been streaming for days (from
        # only the day before, the seed-42 default opened 93 cases at 9% precision instead of 37 at 24%).
        ("deviations_job", sorted(set(hours) | set(_hours(start, end)))),
        # The warehouse last: its unpartitioned models (staging, dimensions, cases) before the hourly
        # facts that test against them (the historian's periods too), and the daily mart over both.
        ("warehouse_job", [None]),
        # The hourly facts' partitions are days (dbt rebuilds a day per microbatch): the days of those hours.
        ("warehouse_hourly_job", sorted({h[:10] for h in set(past) | set(hours) | set(_hours(start, end))})),
        ("warehouse_daily_job", days),
    ]
    return plan


def runs(defs, plan: list[tuple[str, list[str | None]]]) -> list[tuple[str, str | None, dict[str, str]]]:
    """(job, partition key, run tags): one run per partition, or one run per range where the job's assets
    backfill a range in a single run (the hourly telemetry: one Spark session for the whole window)."""
    out = []
    for job_name, keys in plan:
        if not keys:
            continue
        job = defs.resolve_job_def(job_name)
        single_run = all(
            (node := defs.resolve_assets_def(key)).backfill_policy is not None
            and node.backfill_policy.max_partitions_per_run is None
            for key in job.asset_layer.executable_asset_keys
        )
        if single_run and len(keys) > 1:
            out.append((job_name, None, {RANGE_START: keys[0], RANGE_END: keys[-1]}))
        else:
            out.extend((job_name, key, {}) for key in keys)
    return out


def run_jobs(defs, instance, plan) -> tuple[list[tuple[str, str, str]], dict[str, float]]:
    """Run the plan in order; (failures, seconds per job)."""
    failures, seconds = [], {}
    todo = runs(defs, plan)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("materializing", total=len(todo))
        for job_name, key, tags in todo:
            label = key or (f"{tags[RANGE_START]}...{tags[RANGE_END]}" if tags else "(unpartitioned)")
            progress.update(task, description=f"{job_name} {label}")
            t0 = time.perf_counter()
            # dagster-dbt echoes dbt's log lines to stdout (compute logs, under dagster dev); the
            # run's events have them, the terminal keeps the progress bar.
            with contextlib.redirect_stdout(io.StringIO()):
                result = defs.resolve_job_def(job_name).execute_in_process(
                    partition_key=key, tags=tags, instance=instance, raise_on_error=False, run_config=QUIET
                )
            seconds[job_name] = seconds.get(job_name, 0.0) + time.perf_counter() - t0
            if not result.success:
                failures.append((job_name, label, result.run_id))
            progress.advance(task)
    return failures, seconds


@click.command()
@click.option("--days", default=1, show_default=True, help="Days scored: forecast, compared with actuals, cased.")
@click.option(
    "--history-days",
    default=6,
    show_default=True,
    help="Days before --start that only feed curated history and training.",
)
@click.option("--devices", default=20, show_default=True, help="Simulated devices (4 metrics each).")
@click.option("--seed", default=42, show_default=True)
@click.option(
    "--anomaly-rate",
    default=0.2,
    show_default=True,
    help="Injected anomalies per device metric and day (the ground truth the closing table scores cases on).",
)
@click.option(
    "--warm-days",
    default=0,
    show_default=True,
    help="Days before --start that are forecast too (at most --history-days - 1), so the scored days follow "
    "days of forecasts as in a running deployment; 0: the first scored day is the first day of forecasts.",
)
@click.option("--start", "start_day", default=None, help="First scored UTC day; default: --days before today.")
@click.option(
    "--simulate/--no-simulate",
    default=True,
    show_default=True,
    help="--no-simulate runs the pipeline over what already landed in the window (imported or real data).",
)
def main(
    days: int,
    history_days: int,
    devices: int,
    seed: int,
    anomaly_rate: float,
    warm_days: int,
    start_day: str | None,
    simulate: bool,
) -> None:
    from definitions import defs
    from iot_lake.settings import load_settings

    if days < 1 or history_days < 1:
        raise click.BadParameter("--days and --history-days must be at least 1 (training needs a day before --start)")
    if warm_days < 0:
        raise click.BadParameter("--warm-days cannot be negative")
    if not simulate and not start_day:
        raise click.BadParameter("--no-simulate needs --start: the first day of the window to score")
    settings = load_settings()
    t0 = time.perf_counter()
    scored = date.fromisoformat(start_day) if start_day else datetime.now(UTC).date() - timedelta(days=days)
    start = datetime.combine(scored, datetime.min.time(), tzinfo=UTC)
    first, end = start - timedelta(days=history_days), start + timedelta(days=days)
    forecast_from = warm_start(first, start, warm_days)
    warm_days = (start - forecast_from).days
    lake = Lake(settings.lake_root)
    lake.ensure_layout()
    console.print(
        f"[bold]iot-lake main job[/] env={settings.env} lake={settings.lake_root} "
        f"history={first:%Y-%m-%d}..{start:%Y-%m-%d} forecasts from {forecast_from:%Y-%m-%d} "
        f"scored={start:%Y-%m-%d}..{end:%Y-%m-%d}"
    )
    simulated = history = None
    if simulate:
        cfg = SimConfig(
            devices=devices, seed=seed, anomaly_rate=anomaly_rate, history_days=historian_days(history_days, warm_days)
        )
        simulated = _simulate(settings, lake, cfg, first, end)
        history = first - timedelta(days=cfg.history_days)  # the past the historian is seeded with
    t_sim = time.perf_counter() - t0

    plan = partitions_to_run(lake, first, start, end, history, forecast_from)
    if not dict(plan)["telemetry_hourly_job"]:
        console.print(f"[red]no telemetry landed in {first:%Y-%m-%d}..{end:%Y-%m-%d}[/]: nothing to run")
        sys.exit(1)
    os.environ.setdefault(PLANNED_AS_SUBSET, "true")  # this process's runs only; set it to false to opt out
    with repo_instance() as instance:
        failures, seconds = run_jobs(defs(), instance, plan)
    summary = loop_summary(settings, lake, start, end)
    elapsed = time.perf_counter() - t0
    Console().print(closing_table(summary, simulated, plan, failures, seconds, t_sim, elapsed))
    for job_name, key, run_id in failures:
        console.print(f"[red]FAILED[/] {job_name} {key} run {run_id}")
    console.print(
        "next: [bold]iot-lake cases list[/] (the cases), [bold]dagster dev[/] then http://127.0.0.1:3000 "
        "(runs, lineage, checks), the warehouse in "
        f"{Path(settings.lake_root) / 'warehouse'} (fct_forecast, fct_case)"
    )
    if failures:
        sys.exit(1)


def warm_start(first: datetime, start: datetime, warm_days: int) -> datetime:
    """Where the forecasts begin: ``warm_days`` before the scored ``start``, but after the first day of
    telemetry (a training needs curated days before the day it forecasts). A deployment scores days
    that follow days of forecasts, and the deviation scorer's band channels speak once calibrated
    on a day of a series' bands (``NabParams.band_after``): the first day of forecasts is judged by
    the scorer's own channels alone. Not the default: one warm day found more anomalies on three
    simulated days but opened twice the cases, at half the precision (docs/forecasting.md, "The
    first day of forecasts")."""
    return max(start - timedelta(days=warm_days), min(first + timedelta(days=1), start))


def historian_days(history_days: int, warm_days: int = 0) -> int:
    """Days of 15-minute readings seeded into the historian before the ``history_days`` of telemetry:
    enough that the first night's training window (``TRAINING_DAYS``, two weeks before the first
    forecast day, ``warm_days`` before the scored one) is full, so the model has seen every weekday
    twice, the forecast one included. With six days of telemetry alone a Saturday, Sunday or Monday
    was forecast by a model that never saw one (issue 15)."""
    return max(SimConfig.history_days, TRAINING_DAYS - history_days + warm_days)


def _simulate(settings, lake: Lake, cfg: SimConfig, first: datetime, end: datetime):
    from iot_lake.simulate.runner import Simulator

    sim = Simulator(cfg, lake)
    if not settings.is_prod:  # in prod the historian is a real database, not ours to seed
        sim.seed_historian(settings.historian_url, first.date())
        sim.backfill_weather(first.date() - timedelta(days=cfg.history_days), first.date())
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as p:
        task = p.add_task(f"simulating {cfg.devices} devices", total=int((end - first) / timedelta(hours=1)))
        return sim.backfill(first, end, on_hour=lambda _: p.advance(task))


if __name__ == "__main__":
    main()
