"""The cost of an hour must not grow with history: hour 720 against an hour of new tables (issue 19).

    .venv/bin/python -m benchmarks.growth            # 20 devices, tables holding 30 days (a few minutes)
    .venv/bin/python -m benchmarks.growth --quick    # 3 devices, 3 days: a smoke run

One measured hour (``MEASURED``, the simulator's landing objects of a fleet at 10 s sampling) goes
through the main job's path in two lakes that differ only by the history their tables hold:

- the reference: the tables hold one hour, the hour before (``prime``: its own runs created them);
- the long one: a copy of the reference, plus that hour's rows copied back over the rest of ``--days`` days
  (benchmarks/growth/history.py): the measured hour is the 720th of 30 days.

Each lake gets the same inputs first (benchmarks/growth/lake.py ``template``: a curated day, a
seasonal-naive champion and its forecasts of both hours, made once and cached). The path, each part
one Dagster run timed on its own in a child process per lake: the landing inventory, the curated
materialization (curated telemetry and its 1-/5-minute aggregates: Spark on Sail through Pipes),
``deviations_job``, ``warehouse_job`` (staging, dimensions, cases) and ``warehouse_hourly_job`` (the
hourly facts, dbt). Targets: curated, deviations and the warehouse's hourly facts at most 1.3x the
reference each; the inventory and the unpartitioned warehouse run are printed as information.
The hour that created the tables (the reference lake's priming) is printed too.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from benchmarks.curate.run import measure
from benchmarks.growth.lake import MEASURED, PREVIOUS, keep_inputs
from benchmarks.results import Result, json_option, load_average, workdir_option, write

TARGET = 1.3
# Part of the hour's path -> (label, judged). Each is one Dagster run.
PARTS = {
    "landing": ("landing inventory", False),
    "curated": ("curated telemetry + 1-/5-minute aggregates", True),
    "deviations": ("deviations (deviations_job)", True),
    "warehouse": ("warehouse staging, dimensions, cases (warehouse_job)", False),
    "warehouse_hourly": ("warehouse hourly facts (warehouse_hourly_job)", True),
}
# Tables of the path that grow by the hour -> the column their hour is read from.
DELTA_TABLES = {
    "curated/telemetry": "event_ts",
    "curated/telemetry_1min": "bucket_start",
    "curated/telemetry_5min": "bucket_start",
    "ops/deviations": "ts",
    "forecasts/telemetry_5min": "origin",
}
console = Console(stderr=True)


def _env(lake: Path, home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {"IOT_LAKE_ENV": "local", "IOT_LAKE_ROOT": str(lake), "DAGSTER_HOME": str(home)}


def _child(step: str, lake: Path, home: Path, *extra: str) -> dict:
    return measure(["benchmarks.growth.lake", step, "--lake", str(lake), *extra], _env(lake, home)).output


def template(work: Path, devices: int, seed: int) -> Path:
    root = work / "sources" / f"growth-{devices}-{seed}"
    if not (root / ".ready").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        _child("template", root / "lake", root / "dagster_home", "--devices", str(devices), "--seed", str(seed))
        (root / ".ready").touch()
    return root / "lake"


def warehouse_tables(database: Path) -> dict[str, str]:
    """The warehouse's incremental facts -> their event-time column (the models' microbatch config)."""
    import duckdb

    with duckdb.connect(str(database), read_only=True) as con:
        names = {
            f"{schema}.{name}"
            for schema, name in con.execute("select table_schema, table_name from information_schema.tables").fetchall()
        }
    # A forecast's rows are read by their origin: a copy of an hour is the forecast made at its start.
    wanted = {
        "marts.fct_telemetry_minute": "bucket_start",
        "marts.fct_telemetry_hourly": "hour_start",
        "marts.fct_forecast": "origin",
        "marts.fct_deviation": "ts",
    }
    return {t: c for t, c in wanted.items() if t in names}


def add_history(lake: Path, hours: int) -> dict[str, int]:
    """``hours`` more hours in every growing table of the lake; the rows added per table."""
    from benchmarks.growth.history import replicate_delta, replicate_duckdb, replicate_object_counts
    from iot_lake.curated.object_counts import OBJECT_COUNTS

    added = {t: replicate_delta(str(lake / t), c, PREVIOUS, hours) for t, c in DELTA_TABLES.items()}
    added[OBJECT_COUNTS] = replicate_object_counts(str(lake / OBJECT_COUNTS), PREVIOUS, hours)
    database = lake / "warehouse" / "iot_lake.duckdb"
    for table, column in warehouse_tables(database).items():
        added[f"warehouse.{table}"] = replicate_duckdb(str(database), table, column, PREVIOUS, hours)
    return added


def _restore(root: Path, copy: Path, first: bool) -> None:
    """Before the first measurement, keep a copy of the settled lake (and its Dagster instance);
    before every later one, put it back."""
    if first:
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(root, copy)
    else:
        shutil.rmtree(root)
        shutil.copytree(copy, root)
    # The long lake's copy is 2.5 GB: flushed now, not by the kernel while the hour is measured.
    os.sync()


def _median(runs: list[dict], part: str) -> float:
    return statistics.median(r[part] for r in runs)


def _each(runs: list[dict], part: str) -> str:
    """Every measurement of a part, in seconds: the spread beside the median."""
    return ", ".join(f"{r[part]:.1f}" for r in runs)


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def results(reference: list[dict], grown: list[dict], created: dict, hours: int, midnight: float) -> list[Result]:
    measured = f"the {ordinal(hours)} hour ({hours - 1} hours of tables)"
    out = []
    for part, (label, judged) in PARTS.items():
        # The hour before was scored over the history and kept the scorers' states (the lakes are
        # settled); the first hour of a day replays every series' window instead.
        first_of_day = f"; the first hour of its day (a full replay): {midnight:.1f} s" if part == "deviations" else ""
        out.append(
            Result(
                "growth",
                f"{label}: {measured}",
                _median(grown, part),
                reference="the same hour on tables holding one hour",
                reference_value=_median(reference, part),
                target=TARGET if judged else None,
                note=(
                    f"median of {len(grown)} ({_each(grown, part)} against {_each(reference, part)}); "
                    if len(grown) > 1
                    else ""
                )
                + f"the hour that created the tables: {created[part]:.1f} s"
                + first_of_day,
            )
        )
    return out


@click.command()
@click.option("--devices", default=20, show_default=True, help="Fleet (4 metrics each, 10 s sampling).")
@click.option("--days", default=30, show_default=True, help="History of the long lake's tables.")
@click.option(
    "--repeat",
    default=1,
    show_default=True,
    help="Measurements of each lake (alternated; median), each a first run of the hour.",
)
@click.option("--quick", is_flag=True, help="3 devices and 3 days: a smoke run.")
@click.option("--seed", default=42, show_default=True, help="Seed of the simulated fleet.")
@workdir_option(help="The cached template and the runs' lakes.")
@json_option
def main(devices: int, days: int, repeat: int, quick: bool, seed: int, workdir: Path, json_path: Path | None) -> None:
    if quick:
        devices, days = 3, 3
    hours = days * 24
    with console.status(f"template: a curated day of {devices} devices, a naive champion, its forecasts"):
        source = template(workdir, devices, seed)
    runs = workdir / "runs" / "growth"
    lakes = {"reference": runs / "reference", "grown": runs / "grown"}
    reference, grown = lakes["reference"], lakes["grown"]
    with console.status("the hour before, through the main job's path: the tables created"):
        keep_inputs(source, reference / "lake")
        shutil.rmtree(reference / "dagster_home", ignore_errors=True)
        created = _child("prime", reference / "lake", reference / "dagster_home")
    # The long lake starts as the same one (and the same Dagster instance), then gets its history.
    shutil.rmtree(grown, ignore_errors=True)
    shutil.copytree(reference, grown)
    with console.status(f"grown: {hours - 2} more hours in its tables"):
        added = add_history(grown / "lake", hours - 2)
    console.print("history added: " + ", ".join(f"{t} {n:,}" for t, n in added.items()))
    for name, root in lakes.items():
        with console.status(f"{name}: the hour before's deviations again, over the history"):
            _child("settle", root / "lake", root / "dagster_home")
    settled = {name: runs / f"{name}.settled" for name in lakes}
    os.sync()  # the history written above, flushed before anything is measured
    measured: dict[str, list[dict]] = {name: [] for name in lakes}
    for i in range(repeat):
        for name, root in lakes.items():
            # Every measurement is the hour's first run: a re-run finds its rows already there (the
            # curated MERGEs then change nothing) and would measure something else.
            if repeat > 1:
                _restore(root, settled[name], first=i == 0)
            with console.status(f"{name}: the measured hour {MEASURED:%Y-%m-%d %H:00} ({i + 1}/{repeat})"):
                measured[name].append(_child("measure", root / "lake", root / "dagster_home"))
    for copy in settled.values():
        shutil.rmtree(copy, ignore_errors=True)
    with console.status("grown: the first hour of the measured day's deviations"):
        midnight = _child("midnight", grown / "lake", grown / "dagster_home")["deviations"]
    out = results(measured["reference"], measured["grown"], created, hours, midnight)
    table = Table(title=f"the cost of an hour with {days} days of tables ({os.cpu_count()} cores)")
    for column in ("part", "hour 1 (new tables)", "hour 2", f"hour {hours}", "ratio", "target"):
        table.add_column(column, justify="left" if column in ("part", "target") else "right")
    for r, (part, (label, judged)) in zip(out, PARTS.items(), strict=True):
        verdict = "" if r.met is None else ("[green]met[/]" if r.met else "[red]MISSED[/]")
        table.add_row(
            label,
            f"{created[part]:.1f}",
            f"{r.reference_value:.1f}",
            f"{r.value:.1f}",
            f"{r.ratio:.2f}",
            f"<= {TARGET} {verdict}" if judged else "",
        )
    Console(width=None if sys.stdout.isatty() else 120).print(table)
    write(json_path, out)
    console.print(f"load average at the end: {load_average():.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
