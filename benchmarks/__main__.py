"""Every benchmark of the project, one after the other, and one table of what they measured.

    .venv/bin/python -m benchmarks                 # the full set: about an hour on 2 cores
    .venv/bin/python -m benchmarks --quick         # smoke sizes: ~8 min
    .venv/bin/python -m benchmarks --only curate --only latency
    .venv/bin/python -m benchmarks --only realdata --update \
        --out benchmarks/results/latest.json --docs docs/benchmarks.md
    .venv/bin/python -m benchmarks --quick --out benchmarks/results/latest.json --docs docs/benchmarks.md

Each benchmark runs in its own process (`python -m benchmarks.NAME --json ...`) so none inherits
another's imports or memory; its own output goes to a log file whose path the table's footer
prints. Every figure stands beside the reference measured in the same run, and the ratio is what
the targets judge where a target is on the ratio. Wall times move with other load on the cores,
so the load average is printed with each benchmark.

``--out`` writes the run as JSON: every result and the run's metadata (date, cores, load averages,
quick or full, git commit); ``--docs`` renders docs/benchmarks.md from it (benchmarks/report.py).
``--update`` lays a partial run over the results file instead of replacing it: the benchmarks run
now replace theirs, the others keep their figures, each with the date and commit it was measured at.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from benchmarks.results import Result, load_average, merged, read, read_run, run_metadata, write_run

REPO = Path(__file__).resolve().parents[1]
# name -> (full arguments, --quick arguments); run in this order, the UI's cold start first while
# the machine is quietest.
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "ui": (["--repeat", "3"], ["--repeat", "1"]),
    "demo": ([], ["--devices", "10", "--history-days", "3"]),
    "dashboards": (["--repeat", "5"], ["--repeat", "2", "--devices", "10", "--history-days", "3"]),
    "curate": ([], ["--quick"]),
    "history": ([], ["--quick"]),
    # One hour's path on tables of 30 days against tables of one hour (--quick: 3 days of 3 devices).
    "growth": ([], ["--quick"]),
    "forecast": ([], ["--quick"]),
    "backtest": ([], []),
    "latency": ([], []),
    "sensor": ([], ["--quick"]),
    # The main job's data at the demo's --quick size, then 50 clients on each route for 30 s (--quick: 5 s).
    "api": ([], ["--seconds", "5"]),
    "nab": (["--loco"], ["--check-causal", "0"]),  # full: + leave-one-category-out (~3 min)
    "realdata": ([], []),
    "longwindow": ([], []),
    # Kills -9 while the simulator follows in accelerated time; bounded by --minutes plus the settling.
    "soak": (["--minutes", "6", "--hours", "4"], ["--minutes", "3", "--hours", "2"]),
}
SIMULATING = {
    "demo",
    "dashboards",
    "curate",
    "growth",
    "history",
    "forecast",
    "latency",
    "backtest",
    "soak",
    "api",
}  # the ones that take --seed
# Too slow for --quick (the rolling-origin backtest refits LightGBM at every origin: ~10 min on 2 cores).
# The real-data loop runs two weeks of hourly runs (a training and a forecast range per day).
# 30 days of 5-minute data train 29 nightly models.
FULL_ONLY = {"backtest", "realdata", "longwindow"}
console = Console(stderr=True)


def _ratio(r: Result) -> str:
    return "" if r.ratio is None else f"{r.ratio:.2f}"


def _verdict(r: Result) -> str:
    if r.met is None:
        return ""
    judged = "ratio" if r.target_on == "ratio" else r.unit
    want = ">=" if r.higher_is_better else "<="
    return f"[green]met: {judged} {want} {r.target:g}[/]" if r.met else f"[red]MISSED: {judged} {want} {r.target:g}[/]"


def _value(r: Result) -> str:
    return f"{r.value:,.2f}" if r.unit in ("MASE", "score") else f"{r.value:,.1f}"


@click.command()
@click.option("--quick", is_flag=True, help="Smoke sizes of every benchmark.")
@click.option("--only", type=click.Choice(list(BENCHMARKS)), multiple=True, help="Run just these (repeatable).")
@click.option("--skip", type=click.Choice(list(BENCHMARKS)), multiple=True, help="Leave these out (repeatable).")
@click.option("--seed", type=int, default=None, help="Seed of the simulated data, for the benchmarks that simulate.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Write every result and the run's metadata there as JSON.",
)
@click.option(
    "--update",
    is_flag=True,
    help="Keep --out's figures of the benchmarks not run now (each with its own date and commit).",
)
@click.option(
    "--docs",
    type=click.Path(path_type=Path),
    default=None,
    help="Render the results page there (docs/benchmarks.md); needs --out, which the page is checked against.",
)
@click.option(
    "--logs",
    type=click.Path(path_type=Path),
    default=Path(tempfile.gettempdir()) / "iot-lake-bench" / "logs",
    show_default=True,
    help="Each benchmark's own output.",
)
def main(
    quick: bool,
    only: tuple[str, ...],
    skip: tuple[str, ...],
    seed: int | None,
    out: Path | None,
    update: bool,
    docs: Path | None,
    logs: Path,
) -> None:
    if docs and not out:
        raise click.UsageError("--docs renders the page from the results file: give --out too")
    if update and not (out and out.exists()):
        raise click.UsageError("--update lays this run over an earlier results file: give --out with an existing one")
    names = [n for n in BENCHMARKS if (not only or n in only) and n not in skip and not (quick and n in FULL_ONLY)]
    metadata = run_metadata(REPO, quick, started=datetime.now(UTC))
    logs.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    rows: list[tuple[str, float, float, int]] = []  # name, seconds, load average at its end, exit code
    for name in names:
        full, smoke = BENCHMARKS[name]
        seeded = ["--seed", str(seed)] if seed is not None and name in SIMULATING else []
        json_path, log = logs / f"{name}.json", logs / f"{name}.log"
        json_path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        with console.status(f"benchmark {name} (output: {log})"), open(log, "w") as out_file:
            code = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    f"benchmarks.{name}",
                    *(smoke if quick else full),
                    *seeded,
                    "--json",
                    str(json_path),
                ],
                cwd=REPO,
                stdout=out_file,
                stderr=subprocess.STDOUT,
            ).returncode
        rows.append((name, time.perf_counter() - t0, load_average(), code))
        if code == 0 and json_path.exists():
            results += read(json_path)
            console.print(f"[green]done[/] {name} in {rows[-1][1]:.0f} s")
        else:
            console.print(f"[red]failed[/] {name} (exit {code}); see {log}")

    table = Table(title=f"iot-lake benchmarks{' (--quick)' if quick else ''} on {os.cpu_count()} cores")
    for column in ("benchmark", "measure", "value", "unit", "reference", "ref value", "ratio", "target"):
        table.add_column(column, justify="right" if column in ("value", "ref value", "ratio") else "left")
    for r in results:
        table.add_row(
            r.benchmark,
            r.measure,
            _value(r),
            r.unit,
            r.reference or "",
            "" if r.reference_value is None else f"{r.reference_value:,.2f}",
            _ratio(r),
            _verdict(r),
        )
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    console.print(
        "; ".join(f"{n} {s:.0f} s (load {load:.1f})" + (f" FAILED exit {c}" if c else "") for n, s, load, c in rows)
        + f"; logs in {logs}"
    )
    if out:
        metadata["benchmarks"] = [
            {"name": n, "seconds": round(s, 1), "load_average_end": round(load, 2), "exit_code": c}
            for n, s, load, c in rows
        ]
        out.parent.mkdir(parents=True, exist_ok=True)
        if update:
            results, metadata = merged(read_run(out), (results, metadata), list(BENCHMARKS))
        write_run(out, results, metadata)
        console.print(f"results in {out}")
    if docs:
        from benchmarks.report import render_file

        docs.write_text(render_file(out))
        console.print(f"page in {docs}")
    if any(c for *_, c in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
