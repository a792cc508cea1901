"""Curated telemetry throughput vs a DuckDB reference, and the cost of a late hour of the day.

    .venv/bin/python -m benchmarks.curate            # 2 million records in 20 objects (a few minutes)
    .venv/bin/python -m benchmarks.curate --quick    # a small run, under a minute once the data is cached

1. Throughput: one landing hour of ``--records`` simulator lines in ``--objects`` gzip NDJSON
   objects (2% duplicate deliveries). Ours: telemetry_hourly_job through Dagster in a fresh lake
   and DAGSTER_HOME, as three runs of its subsets (benchmarks/curate/ours.py): the landing
   inventory, then the curated materialization (curated table and its aggregates, the job in a
   Pipes subprocess on Sail, row accounting), then the Great Expectations checks. DuckDB: the same
   data path in SQL (benchmarks/curate/duck.py), reading the objects itself.
   Targets (issue 19): landing inventory + curated materialization / DuckDB <= 1.5 in wall time
   (the reference reads the objects itself: the same rows written), and the peak memory of the
   process tree <= 1.2x DuckDB's. The curated materialization alone is printed beside it; the
   checks, which the reference has no counterpart of, are printed on their own.
2. Incremental cost: a smaller fleet's two simulated days on one set of tables. Day 1 creates the
   tables (its first hour alone, then the rest as one single-run backfill); on day 2 the first
   hour, hours 2-23 as one backfill, then the 24th hour. Target: day 2's 24th / 1st <= 1.3 for the
   curated materialization (both add to existing tables; the 24th finds a day of rows in its event
   date). The 24th over day 1's first hour, which only creates tables, is printed too.

Each side runs in its own process; peak memory is the largest summed RSS of that process and its
descendants (the Pipes subprocess running Sail included), sampled every 50 ms.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import click
import psutil
from rich.console import Console
from rich.table import Table

from benchmarks.curate.data import Source, fresh_lake, incremental_source, throughput_source
from benchmarks.results import Result, json_option, workdir_option, write

REPO = Path(__file__).resolve().parents[2]
THROUGHPUT_TARGET = 1.5  # landing inventory + curated materialization / DuckDB
MEMORY_TARGET = 1.2  # peak memory / DuckDB's
INCREMENTAL_TARGET = 1.3
console = Console(stderr=True)


@dataclass
class Measured:
    output: object  # the child's JSON
    wall: float  # the child process, start to exit
    peak_mib: float
    cpu: float  # user + system seconds of the child and every descendant


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(args: list[str], env: dict[str, str]) -> Measured:
    """Run a child module, sampling its process tree's memory until it exits."""
    t0, usage0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        try:
            ps = psutil.Process(proc.pid)
            while not stop.is_set():
                peak = max(peak, _tree_rss(ps))
                stop.wait(0.05)
        except psutil.Error:
            pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    stop.set()
    sampler.join()
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime - usage0.ru_utime - usage0.ru_stime
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed ({proc.returncode}):\n{stderr[-4000:]}")
    return Measured(json.loads(stdout.strip().splitlines()[-1]), wall, peak / 2**20, cpu)


def _ours_env(lake: Path, home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {"IOT_LAKE_ENV": "local", "IOT_LAKE_ROOT": str(lake), "DAGSTER_HOME": str(home)}


def _rows(table: Path) -> int:
    from deltalake import DeltaTable

    return DeltaTable(str(table)).to_pyarrow_dataset().count_rows()


def _key(hour) -> str:
    return hour.strftime("%Y-%m-%d-%H:%M")


def run_ours(source: Source, work: Path, runs: list[str]) -> Measured:
    lake = fresh_lake(source, work / "lake")
    return measure(
        ["benchmarks.curate.ours", *(a for r in runs for a in ("--run", r))], _ours_env(lake, work / "dagster_home")
    )


def run_duckdb(source: Source, work: Path) -> Measured:
    lake = fresh_lake(source, work / "lake")
    return measure(["benchmarks.curate.duck", "--lake", str(lake), "--hour", source.hours[0].isoformat()], {})


def _verdict(ratio: float, target: float) -> str:
    return f"[green]{ratio:.2f} <= {target}[/]" if ratio <= target else f"[red]{ratio:.2f} > {target}[/]"


@click.command()
@click.option("--records", default=2_000_000, show_default=True, help="Records in the throughput hour.")
@click.option("--objects", default=20, show_default=True, help="Gzip NDJSON objects they are packed in.")
@click.option("--day-devices", default=20, show_default=True, help="Fleet of the simulated day (10 s sampling).")
@click.option("--quick", is_flag=True, help="100k records and one 3-device day (no warm-up day): a smoke run.")
@click.option("--seed", default=42, show_default=True, help="Seed of the simulated fleet and its data.")
@click.option("--skip", type=click.Choice(["throughput", "incremental"]), multiple=True, help="Leave a part out.")
@workdir_option(help="Cached inputs and the runs' lakes.")
@json_option
def main(
    records: int,
    objects: int,
    day_devices: int,
    quick: bool,
    seed: int,
    skip: tuple[str, ...],
    workdir: Path,
    json_path: Path | None,
) -> None:
    if quick:
        records, day_devices = 100_000, 3
    out = Console(width=None if sys.stdout.isatty() else 120)
    results: list[Result] = []
    table = Table(title=f"curated telemetry benchmark ({os.cpu_count()} cores)")
    for column in ("run", "records", "seconds", "records/s", "peak MiB", "CPU s", "vs target"):
        table.add_column(column, justify="left" if column in ("run", "vs target") else "right")

    if "throughput" not in skip:
        with console.status(f"simulating {records:,} records in {objects} objects (cached after the first run)"):
            source = throughput_source(workdir, records, objects, seed=seed)
        with console.status("ours: telemetry_hourly_job through Dagster + Pipes + Sail"):
            ours = run_ours(source, workdir / "runs" / "ours", [_key(source.hours[0])])
        with console.status("DuckDB reference"):
            duck = run_duckdb(source, workdir / "runs" / "duckdb")
        run, duck_s = ours.output[0], duck.output["seconds"]
        ours_s, landing_s = run["curated"], run["landing"]
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in run["steps"].items())
        for label, seconds in (
            ("ours: landing inventory", landing_s),
            ("ours: curated materialization", ours_s),
            ("ours: GX checks (no counterpart)", run["checks"]),
        ):
            table.add_row(label, f"{source.lines:,}", f"{seconds:.1f}", f"{source.lines / seconds:,.0f}", "", "", "")
        # Memory and CPU are sampled per process tree, so they cover all three runs.
        table.add_row(
            "ours: the three runs' process", "", f"{ours.wall:.1f}", "", f"{ours.peak_mib:,.0f}", f"{ours.cpu:.0f}", ""
        )
        table.add_row(
            "DuckDB reference",
            f"{source.lines:,}",
            f"{duck_s:.1f}",
            f"{source.lines / duck_s:,.0f}",
            f"{duck.peak_mib:,.0f}",
            f"{duck.cpu:.0f}",
            "",
        )
        table.add_row(
            "ratio curated / DuckDB",
            "",
            f"{ours_s / duck_s:.2f}",
            "",
            "",
            "",
            "",
        )
        table.add_row(
            "ratio landing + curated / DuckDB",
            "",
            f"{(landing_s + ours_s) / duck_s:.2f}",
            "",
            "",
            "",
            _verdict((landing_s + ours_s) / duck_s, THROUGHPUT_TARGET),
        )
        table.add_row(
            "ratio peak memory / DuckDB's",
            "",
            f"{ours.peak_mib / duck.peak_mib:.2f}",
            "",
            "",
            "",
            _verdict(ours.peak_mib / duck.peak_mib, MEMORY_TARGET),
        )
        reference = f"DuckDB, same {source.lines:,} records"
        results += [
            Result(
                "curate",
                f"curated materialization, {source.lines:,} records",
                ours_s,
                reference=reference,
                reference_value=duck_s,
            ),
            Result(
                "curate",
                "landing inventory + curated materialization",
                landing_s + ours_s,
                reference=reference,
                reference_value=duck_s,
                target=THROUGHPUT_TARGET,
            ),
            Result(
                "curate",
                "peak memory, the three runs' process tree",
                ours.peak_mib,
                "MiB",
                reference="DuckDB's peak",
                reference_value=duck.peak_mib,
                target=MEMORY_TARGET,
            ),
        ]
        console.print(f"ours: steps {steps}; process wall {ours.wall:.1f}s (DuckDB {duck.wall:.1f}s)")
        # The same valid-record definition on both sides: the curated tables must agree.
        ours_rows = {
            t: _rows(workdir / "runs" / "ours" / "lake" / t) for t in ("curated/telemetry", "curated/telemetry_1min")
        }
        console.print(
            f"curated rows: ours {ours_rows['curated/telemetry']:,}, DuckDB {duck.output['curated']:,}; "
            f"1-min buckets: ours {ours_rows['curated/telemetry_1min']:,}, DuckDB {duck.output['buckets_1min']:,}"
        )

    if "incremental" not in skip:
        # --quick leaves out the warm-up day: its first hour is then the one that creates the tables.
        n_days = 1 if quick else 2
        with console.status(f"simulating {n_days} day(s) of {day_devices} devices (cached after the first run)"):
            days = incremental_source(workdir, day_devices, seed=seed, days=n_days)
        keys = [_key(h) for h in days.hours]
        day = keys[-24:]
        runs = ([keys[0], f"{keys[1]}...{keys[23]}"] if n_days == 2 else []) + [
            day[0],
            f"{day[1]}...{day[22]}",
            day[23],
        ]
        with console.status(
            "ours: "
            + ("day 1 hour 1, the rest of day 1; " if n_days == 2 else "")
            + "the measured day's hour 1, hours 2-23, hour 24"
        ):
            inc = run_ours(days, workdir / "runs" / "incremental", runs)
        first, middle, last = inc.output[-3:]
        fresh = inc.output[0]
        per_hour = days.lines / len(days.hours)
        rows = [("day 1, hour 1 (new tables)", fresh)] if n_days == 2 else []
        rows += [
            (f"day {n_days}, hour 1" + (" (new tables)" if n_days == 1 else ""), first),
            (f"day {n_days}, hours 2-23 (one backfill run)", middle),
            (f"day {n_days}, hour 24", last),
        ]
        for label, run in rows:
            n = per_hour * (22 if run is middle else 1)
            table.add_row(
                label,
                f"~{n:,.0f}",
                f"{run['seconds']:.1f}",
                "",
                f"{inc.peak_mib:,.0f}" if run is fresh else "",
                f"{inc.cpu:.0f}" if run is fresh else "",
                "",
            )
        ratio = last["seconds"] / first["seconds"]
        table.add_row(
            f"ratio day {n_days}: hour 24 / hour 1", "", f"{ratio:.2f}", "", "", "", _verdict(ratio, INCREMENTAL_TARGET)
        )
        results.append(
            Result(
                "incremental",
                f"hour 24 of day {n_days} (a day of rows in its tables)",
                last["seconds"],
                reference=f"hour 1 of day {n_days}",
                reference_value=first["seconds"],
                target=INCREMENTAL_TARGET,
            )
        )
        if n_days == 2:
            table.add_row(
                "ratio hour 24 / hour 1 of new tables", "", f"{last['seconds'] / fresh['seconds']:.2f}", "", "", "", ""
            )
        console.print(
            "day steps: "
            + "; ".join(f"{r['run']}: " + ", ".join(f"{k} {v:.1f}s" for k, v in r["steps"].items()) for r in inc.output)
        )
    out.print(table)
    write(json_path, results)
    # Other work on the machine slows the Spark side most: say how busy it was.
    console.print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
