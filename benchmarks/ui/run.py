"""`dagster dev` cold start to a served UI, ours against a one-asset project measured in the same run.

    .venv/bin/python -m benchmarks.ui [--repeat 2]

Each start is a copy of the control plane with a new, empty DAGSTER_HOME and lake, so nothing of an
earlier start is reused but the interpreter's bytecode caches. The clock runs from the process
start until the UI serves its page and its GraphQL endpoint lists every asset of the code location
(the code location has loaded: what a user waits for before the asset graph shows).

Reference: the same for a project holding one asset and nothing else, i.e. what `dagster dev` itself
costs on this machine; the ratio is what our definitions (dagster-dbt, the dbt manifest, the
resources, the sensors and schedules) add to it. Target (issue 19): at most 1.2x the reference.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from benchmarks.dagster_dev import clean_env, copy_control_plane, dagster_dev, graphql, wait
from benchmarks.results import Result, json_option, load_average, write

TARGET = 1.2  # ours / the one-asset project (issue 19)

console = Console(stderr=True)
ASSETS = "{ assetNodes { assetKey { path } } }"
ONE_ASSET = """from dagster import Definitions, asset


@asset
def one():
    return 1


defs = Definitions(assets=[one])
"""
WORKSPACE = "load_from:\n  - python_file:\n      relative_path: definitions.py\n      working_directory: .\n"


def _page(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
        return resp.status == 200 and b"<html" in resp.read(2000).lower()


def cold_start(project: Path, env: dict[str, str], expect_assets: int) -> float:
    """Seconds from starting `dagster dev` in ``project`` until the page is served and the assets are listed."""
    t0 = time.perf_counter()
    with dagster_dev(project, env, project / "dagster-dev.log") as port:
        wait(lambda: _page(port), 300, "the UI page", every=0.1)
        wait(lambda: len(graphql(port, ASSETS)["assetNodes"]) >= expect_assets, 300, "the asset graph", every=0.1)
        return time.perf_counter() - t0


def ours_asset_count() -> int:
    from definitions import defs

    return len(list(defs().resolve_asset_graph().get_all_asset_keys()))


@click.command()
@click.option("--repeat", default=2, show_default=True, help="Starts of each project; the median is reported.")
@json_option
def main(repeat: int, json_path: Path | None) -> None:
    expect = ours_asset_count()
    ours, reference = [], []
    for i in range(repeat):
        with tempfile.TemporaryDirectory(prefix="iot-lake-ui-") as tmp:
            work = Path(tmp)
            minimal = work / "minimal"
            minimal.mkdir()
            (minimal / "definitions.py").write_text(ONE_ASSET)
            (minimal / "workspace.yaml").write_text(WORKSPACE)
            with console.status(f"start {i + 1}/{repeat}: a one-asset project"):
                reference.append(cold_start(minimal, clean_env(DAGSTER_HOME=str(minimal)), 1))
            project = work / "project"
            copy_control_plane(project)
            env = clean_env(DAGSTER_HOME=str(project), IOT_LAKE_ROOT=str(work / "lake"))
            with console.status(f"start {i + 1}/{repeat}: iot-lake ({expect} assets)"):
                ours.append(cold_start(project, env, expect))
    ours_s, reference_s = statistics.median(ours), statistics.median(reference)

    table = Table(title=f"dagster dev cold start to a served UI ({os.cpu_count()} cores, median of {repeat})")
    for column in ("project", "seconds", "starts", "x reference"):
        table.add_column(column, justify="left" if column == "project" else "right")
    table.add_row("reference: one asset", f"{reference_s:.1f}", ", ".join(f"{s:.1f}" for s in reference), "1.0")
    table.add_row(
        f"iot-lake ({expect} assets)",
        f"{ours_s:.1f}",
        ", ".join(f"{s:.1f}" for s in ours),
        f"{ours_s / reference_s:.2f}",
    )
    Console(width=None if sys.stdout.isatty() else 120).print(table)
    console.print(f"load average at the end: {load_average():.1f} on {os.cpu_count()} cores")
    write(
        json_path,
        [
            Result(
                "ui",
                f"dagster dev cold start to the asset graph ({expect} assets)",
                ours_s,
                reference="the same for a one-asset project",
                reference_value=reference_s,
                target=TARGET,
            )
        ],
    )


if __name__ == "__main__":
    main()
