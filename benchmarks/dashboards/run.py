"""Dashboard load time on the main job's data (issue 17: a median under 3 s per dashboard).

    .venv/bin/python -m benchmarks.dashboards [--repeat 5] [--lake DIR]

The main job (`python -m jobs.main`) fills a fresh lake, unless --lake names a lake it filled;
`iot-lake dashboards up` serves its warehouse, and a headless Chromium, logged in, opens each
dashboard --repeat times. The clock runs from the navigation until every chart is drawn (none
loading, each a chart or an error); the figure is the median per dashboard.

Reference: Superset's dashboard list, from the navigation until it shows the dashboards: the app
without any chart, so the ratio is what a dashboard's charts add to loading Superset itself.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from benchmarks.dagster_dev import REPO, clean_env, free_port, wait
from benchmarks.dashboards.browser import chart_counts, launch, log_in, open_dashboard
from benchmarks.results import Result, json_option, load_average, write

console = Console(stderr=True)
TARGET_S = 3.0
CHROMIUM = "/usr/bin/chromium"


def main_job(lake: Path, home: Path, sizes: list[str]) -> float:
    """`python -m jobs.main` on a fresh lake, as the README runs it; its seconds."""
    home.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "jobs.main", *sizes],
        cwd=REPO,
        env=clean_env(IOT_LAKE_ROOT=str(lake), DAGSTER_HOME=str(home)),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise click.ClickException(f"the main job failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return time.perf_counter() - t0


@contextmanager
def superset(lake: Path, state: Path) -> Iterator[tuple[str, str]]:
    """`iot-lake dashboards up` over the lake's warehouse; yields its URL and the admin password."""
    port, log = free_port(), state.parent / "up.log"
    env = clean_env(IOT_LAKE_ROOT=str(lake), IOT_LAKE_SUPERSET_HOME=str(state), COLUMNS="400")
    with open(log, "w") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "iot_lake.cli", "dashboards", "up", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait(lambda: "Superset ready" in log.read_text() or up.poll() is not None, 600, "Superset", every=0.5)
        if up.poll() is not None:
            raise click.ClickException(f"`iot-lake dashboards up` exited:\n{log.read_text()[-3000:]}")
        yield f"http://127.0.0.1:{port}", (state / "admin-password").read_text().strip()
    finally:
        up.terminate()  # it stops its server on SIGTERM
        up.wait(60)


def _shell(page, url: str, title: str) -> float:
    """Seconds from navigating to the dashboard list until it shows a dashboard's title."""
    t0 = time.perf_counter()
    page.goto(f"{url}/dashboard/list/")
    page.get_by_text(title, exact=True).first.wait_for(timeout=120_000)
    drawn = time.perf_counter() - t0
    page.wait_for_load_state("networkidle")
    return drawn


def measure(url: str, password: str, repeat: int) -> tuple[list[float], dict[str, list[float]]]:
    """The shell's load times, and each dashboard's, --repeat times in turn."""
    from playwright.sync_api import sync_playwright

    charts = chart_counts()
    shell, loads = [], {slug: [] for slug in charts}
    with sync_playwright() as p:
        browser = launch(p, CHROMIUM)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            log_in(page, url, password)
            for _ in range(repeat):
                shell.append(_shell(page, url, "Fleet overview"))
                for slug, count in charts.items():
                    loads[slug].append(open_dashboard(page, url, slug, count))
        finally:
            browser.close()
    return shell, loads


def _report(shell: list[float], loads: dict[str, list[float]], repeat: int) -> None:
    table = Table(title=f"dashboard drawn after navigation ({os.cpu_count()} cores, median of {repeat})")
    for column in ("page", "seconds", "loads", "x reference"):
        table.add_column(column, justify="left" if column == "page" else "right")
    ref = statistics.median(shell)
    table.add_row("reference: the dashboard list", f"{ref:.2f}", ", ".join(f"{s:.2f}" for s in shell), "1.0")
    for slug, times in loads.items():
        median = statistics.median(times)
        table.add_row(slug, f"{median:.2f}", ", ".join(f"{s:.2f}" for s in times), f"{median / ref:.2f}")
    Console(width=None if sys.stdout.isatty() else 120).print(table)


@click.command()
@click.option("--repeat", default=5, show_default=True, help="Loads of each dashboard; the median is reported.")
@click.option("--lake", type=click.Path(file_okay=False, path_type=Path), help="A lake the main job filled.")
@click.option("--devices", type=int, help="The main job's --devices (its default without).")
@click.option("--history-days", type=int, help="The main job's --history-days (its default without).")
@click.option("--seed", type=int, help="The main job's --seed (its default without).")
@json_option
def main(repeat, lake, devices, history_days, seed, json_path) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        raise click.ClickException(f"no {CHROMIUM}: install Debian's chromium (scripts/setup.sh --test does)")
    given = {"--devices": devices, "--history-days": history_days, "--seed": seed}
    sizes = [str(part) for flag, value in given.items() if value is not None for part in (flag, value)]
    with tempfile.TemporaryDirectory(prefix="iot-lake-dashboards-") as tmp:
        work = Path(tmp)
        if lake is None:
            lake = work / "lake"
            with console.status(f"python -m jobs.main {' '.join(sizes)} on a fresh lake"):
                console.print(f"main job: {main_job(lake, work / 'home', sizes):.0f} s")
        with console.status("iot-lake dashboards up"), superset(lake, work / "superset") as (url, password):
            with console.status(f"{repeat} loads of each dashboard"):
                before = load_average()
                shell, loads = measure(url, password, repeat)
                after = load_average()
    _report(shell, loads, repeat)
    load = f"load average {before:.1f} before the loads, {after:.1f} after, on {os.cpu_count()} cores"
    console.print(load)
    reference = statistics.median(shell)
    write(
        json_path,
        [
            Result(
                "dashboards",
                f"{slug} dashboard drawn, main job's data (median of {repeat})",
                statistics.median(times),
                reference="Superset's dashboard list: the app without charts",
                reference_value=reference,
                target=TARGET_S,
                target_on="value",
                note=load,
            )
            for slug, times in loads.items()
        ],
    )


if __name__ == "__main__":
    main()
