"""``iot-lake``: the work that is not an asset (simulating sources; later, working cases)."""

from __future__ import annotations

import sys
from datetime import date, datetime, timedelta, timezone

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from iot_lake.lake import Lake
from iot_lake.settings import SettingsError, load_settings, local_historian_url
from iot_lake.simulate.deliveries import SimConfig
from iot_lake.simulate.runner import SimulationReport, Simulator

console = Console(stderr=True)


@click.group()
def main() -> None:
    """iot-lake: industrial IoT telemetry lake (the Dagster UI runs the assets)."""


def _utc_day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


@main.command()
@click.option("--devices", default=50, show_default=True, help="Number of devices (10 per site).")
@click.option("--days", default=1.0, show_default=True, type=float, help="Days of arrivals to generate.")
@click.option("--start", "start_day", default=None, help="First UTC day (YYYY-MM-DD). Default: --days before today.")
@click.option("--seed", default=42, show_default=True, help="Same seed, same bytes.")
@click.option("--lake", "lake_root", envvar="IOT_LAKE_ROOT", default=None, help="Lake root (dir or s3://bucket). Env: IOT_LAKE_ROOT.")
@click.option("--db", "db_url", default=None, help="Historian SQLAlchemy URL to seed. Default: the lake's embedded SQLite.")
@click.option("--no-db", is_flag=True, help="Do not seed the historian.")
@click.option("--interval", "interval_s", default=60, show_default=True, help="Seconds between samples per metric.")
@click.option("--buffer", "buffer_s", default=300, show_default=True, help="Firehose buffer interval in seconds.")
@click.option("--bad-rate", default=0.01, show_default=True, help="Share of records with bad input.")
@click.option("--duplicate-rate", default=0.01, show_default=True, help="Share of records delivered twice.")
@click.option("--late-rate", default=0.005, show_default=True, help="Share of records arriving 10 min-6 h late.")
@click.option("--anomaly-rate", default=0.05, show_default=True, help="Labelled anomalies per device-metric-day.")
@click.option("--truncated-rate", default=0.005, show_default=True, help="Share of objects cut short.")
@click.option("--bad-weather-rate", default=0.05, show_default=True, help="Share of weather files with a defect.")
@click.option("--history-days", default=7, show_default=True, help="Days of past readings in the historian.")
@click.option("--follow", is_flag=True, help="After the backfill, keep delivering in real time until Ctrl-C.")
@click.option("--to", "target", nargs=2, type=(click.Choice(["kinesis"]), str), default=None,
              metavar="kinesis STREAM", help="Publish records to a Kinesis stream instead of writing objects.")
def simulate(devices, days, start_day, seed, lake_root, db_url, no_db, interval_s, buffer_s, bad_rate,
             duplicate_rate, late_rate, anomaly_rate, truncated_rate, bad_weather_rate, history_days, follow, target):
    """Generate telemetry as IoT Core + Firehose land it, plus historian rows and weather files."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        cfg = SimConfig(devices=devices, seed=seed, interval_s=interval_s, buffer_s=buffer_s, bad_rate=bad_rate,
                        duplicate_rate=duplicate_rate, late_rate=late_rate, anomaly_rate=anomaly_rate,
                        truncated_rate=truncated_rate, bad_weather_rate=bad_weather_rate, history_days=history_days)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if days <= 0:
        raise click.BadParameter("--days must be positive")
    root = lake_root or settings.lake_root
    lake = Lake(root)
    publisher = None
    if target:
        from iot_lake.simulate.kinesis import KinesisPublisher

        publisher = KinesisPublisher(target[1])
    now = datetime.now(timezone.utc)
    if follow and not start_day:
        start = now - timedelta(days=days)
        end = datetime.fromtimestamp(int(now.timestamp()) // buffer_s * buffer_s, tz=timezone.utc)
    else:
        first = _utc_day(start_day) or (now.date() - timedelta(days=int(-(-days // 1))))
        start = datetime.combine(first, datetime.min.time(), tzinfo=timezone.utc)
        end = start + timedelta(days=days)
    sim = Simulator(cfg, lake, publisher)
    if not no_db:
        url = db_url or (settings.historian_url if not lake_root else local_historian_url(root))
        seeded = sim.seed_historian(url, start.date())
        console.print(f"historian {url.split('@')[-1]}: {seeded}")
    hours = int(-(-(end - start).total_seconds() // 3600))
    with _progress() as progress:
        task = progress.add_task(f"simulating {devices} devices", total=hours)
        report = sim.backfill(start, end, on_hour=lambda _: progress.advance(task))
    _print_report(report, root, target)
    if follow:
        console.print(f"following in real time (one object per {buffer_s} s); Ctrl-C to stop")
        try:
            sim.follow(end, on_window=lambda closed, r: console.print(
                f"{closed:%H:%M:%S} objects={r.objects} lines={r.lines} published={r.published}"))
        except KeyboardInterrupt:
            console.print("stopped")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("hours"),
                    TimeElapsedColumn(), console=console, transient=not sys.stderr.isatty())


def _print_report(report: SimulationReport, root: str, target) -> None:
    table = Table(title="simulated", show_header=False)
    table.add_row("window", f"{report.start} .. {report.end}")
    table.add_row("destination", f"kinesis:{target[1]}" if target else root)
    for name in ("objects", "lines", "bytes", "published", "weather_files", "anomalies"):
        table.add_row(name, f"{getattr(report, name):,}")
    Console().print(table)


if __name__ == "__main__":  # pragma: no cover
    main()
