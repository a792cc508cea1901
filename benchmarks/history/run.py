"""Curated history throughput vs a DuckDB reference: the historian's extract into the curated layer.

    .venv/bin/python -m benchmarks.history            # 90 days of 15-minute history, 200 devices (6.9M rows)
    .venv/bin/python -m benchmarks.history --quick    # 14 days, 20 devices

Input (benchmarks/history/data.py): ``--days`` of 15-minute readings of ``--devices`` devices (4
metrics each) as the extract lands them, and a second extract day re-loading 1% of them (half
corrected) with 0.4% imperfect rows. Ours: the Spark job the asset runs
(``python -m iot_lake.curated.history_job``, Sail, both extract days in one run: validation with the
record rules, quarantine, dedupe, precedence against telemetry, MERGE into a fresh curated/telemetry,
1- and 5-minute aggregates). DuckDB: the same validation, dedupe, quarantine and aggregates in SQL,
written to Delta (benchmarks/history/duck.py). Each side runs in its own process on a fresh copy of
the lake; peak memory is the largest summed RSS of the process tree (Sail included), sampled every 50 ms.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from benchmarks.curate.run import measure
from benchmarks.history.data import fresh_lake, history_source
from benchmarks.results import Result, json_option, workdir_option, write

console = Console(stderr=True)


def _rows(table: Path) -> int:
    from deltalake import DeltaTable

    return DeltaTable(str(table)).to_pyarrow_dataset().count_rows()


@click.command()
@click.option("--devices", default=200, show_default=True)
@click.option("--days", default=90, show_default=True, help="Days of 15-minute history.")
@click.option("--quick", is_flag=True, help="14 days of 20 devices.")
@click.option("--seed", default=42, show_default=True)
@workdir_option("history")
@json_option
def main(devices: int, days: int, quick: bool, seed: int, workdir: Path, json_path: str | None) -> None:
    if quick:
        devices, days = 20, 14
    with console.status(f"building {days} days of history for {devices} devices"):
        source = history_source(workdir, devices, days, seed)
    day_args = [a for day in source.days for a in ("--day", day.isoformat())]
    with console.status("ours: the history job on Sail"):
        lake = fresh_lake(source, workdir / "runs" / "ours")
        ours = measure(["iot_lake.curated.history_job", "--lake", str(lake), *day_args], {"IOT_LAKE_SPARK": "sail"})
        ours_rows = _rows(lake / "curated" / "telemetry")
    with console.status("DuckDB: the same validation and dedupe"):
        ref_lake = fresh_lake(source, workdir / "runs" / "duckdb")
        duck = measure(["benchmarks.history.duck", "--lake", str(ref_lake), *day_args], {})
    if ours_rows != duck.output["curated"]:
        raise click.ClickException(f"the two sides curated different rows: ours {ours_rows}, DuckDB {duck.output}")
    size = f"{days} days x {devices} devices ({source.rows:,} rows in 2 extracts)"
    table = Table(title=f"curated history: {size}")
    for column in ("", "wall s", "peak MiB", "CPU s", "curated rows"):
        table.add_column(column, justify="right" if column else "left")
    table.add_row(
        "ours (history_job, Sail)", f"{ours.wall:.1f}", f"{ours.peak_mib:,.0f}", f"{ours.cpu:.0f}", f"{ours_rows:,}"
    )
    table.add_row(
        "DuckDB", f"{duck.wall:.1f}", f"{duck.peak_mib:,.0f}", f"{duck.cpu:.0f}", f"{duck.output['curated']:,}"
    )
    table.add_row("ratio", f"{ours.wall / duck.wall:.2f}", f"{ours.peak_mib / duck.peak_mib:.2f}", "", "")
    Console().print(table)
    write(
        json_path,
        [
            Result(
                "history",
                f"curating {size}: wall time",
                ours.wall,
                reference="DuckDB, the same work",
                reference_value=duck.wall,
            ),
            Result(
                "history",
                f"curating {size}: peak memory",
                ours.peak_mib,
                unit="MiB",
                reference="DuckDB, the same work",
                reference_value=duck.peak_mib,
            ),
        ],
    )
    console.print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
