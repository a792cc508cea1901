"""``iot-lake``: the work that is not an asset (simulating sources, working cases)."""

from __future__ import annotations

import getpass
import json
import os
import signal
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import click
import requests
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from iot_lake.cases.model import OPEN, RESOLVED, STATUSES, Case
from iot_lake.cases.sinks import sinks_for
from iot_lake.cases.store import CaseError, CaseNotFound, CaseStore
from iot_lake.cases.views import case_json, incident_json
from iot_lake.dashboards import (
    ADMIN,
    DASHBOARDS_DIR,
    DEFAULT_PORT,
    DashboardsError,
    Superset,
    Warehouse,
    extra_config,
    stop,
    superset_home,
    warehouse_for,
)
from iot_lake.lake import Lake
from iot_lake.settings import SettingsError, load_settings, local_historian_url
from iot_lake.simulate.deliveries import SimConfig
from iot_lake.simulate.runner import SimulationReport, Simulator
from iot_lake.sources.importer import ImportReport, OptionError, RegistrationError, SeriesError, import_series

console = Console(stderr=True)


@click.group()
def main() -> None:
    """iot-lake: industrial IoT telemetry lake (the Dagster UI runs the assets)."""


def _settings():
    """This environment's settings; a setting that does not hold is the command's error, not a traceback."""
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _utc_day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


@main.command()
@click.option("--devices", default=50, show_default=True, help="Number of devices (10 per site).")
@click.option("--days", default=1.0, show_default=True, type=float, help="Days of arrivals to generate.")
@click.option("--start", "start_day", default=None, help="First UTC day (YYYY-MM-DD). Default: --days before today.")
@click.option("--seed", default=42, show_default=True, help="Same seed, same bytes.")
@click.option(
    "--lake",
    "lake_root",
    envvar="IOT_LAKE_ROOT",
    default=None,
    help="Lake root (dir or s3://bucket). Env: IOT_LAKE_ROOT.",
)
@click.option(
    "--db", "db_url", default=None, help="Historian SQLAlchemy URL to seed. Default: the lake's embedded SQLite."
)
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
@click.option(
    "--to",
    "target",
    nargs=2,
    type=(click.Choice(["kinesis"]), str),
    default=None,
    metavar="kinesis STREAM",
    help="Publish records to a Kinesis stream instead of writing objects.",
)
def simulate(
    devices,
    days,
    start_day,
    seed,
    lake_root,
    db_url,
    no_db,
    interval_s,
    buffer_s,
    bad_rate,
    duplicate_rate,
    late_rate,
    anomaly_rate,
    truncated_rate,
    bad_weather_rate,
    history_days,
    follow,
    target,
):
    """Generate telemetry as IoT Core + Firehose land it, plus historian rows and weather files."""
    settings = _settings()
    try:
        cfg = SimConfig(
            devices=devices,
            seed=seed,
            interval_s=interval_s,
            buffer_s=buffer_s,
            bad_rate=bad_rate,
            duplicate_rate=duplicate_rate,
            late_rate=late_rate,
            anomaly_rate=anomaly_rate,
            truncated_rate=truncated_rate,
            bad_weather_rate=bad_weather_rate,
            history_days=history_days,
        )
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
    now = datetime.now(UTC)
    if follow and not start_day:
        start = now - timedelta(days=days)
        end = datetime.fromtimestamp(int(now.timestamp()) // buffer_s * buffer_s, tz=UTC)
    else:
        first = _utc_day(start_day) or (now.date() - timedelta(days=int(-(-days // 1))))
        start = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
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
            sim.follow(
                end,
                on_window=lambda closed, r: console.print(
                    f"{closed:%H:%M:%S} objects={r.objects} lines={r.lines} published={r.published}"
                ),
            )
        except KeyboardInterrupt:
            console.print("stopped")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("hours"),
        TimeElapsedColumn(),
        console=console,
        transient=not sys.stderr.isatty(),
    )


def _print_report(report: SimulationReport, root: str, target) -> None:
    table = Table(title="simulated", show_header=False)
    table.add_row("window", f"{report.start} .. {report.end}")
    table.add_row("destination", f"kinesis:{target[1]}" if target else root)
    for name in ("objects", "lines", "bytes", "published", "weather_files", "anomalies"):
        table.add_row(name, f"{getattr(report, name):,}")
    Console().print(table)


def _day(ctx, param, value: str | None) -> date | None:
    try:
        return _utc_day(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a day (YYYY-MM-DD)") from None


@main.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--device", "device_id", required=True, help="Device id the series becomes (registered if new).")
@click.option("--metric", required=True, help="Metric name, e.g. temperature or cpu_utilization (new ones allowed).")
@click.option("--unit", required=True, help="Unit of the values, e.g. degC or % (a new metric's canonical unit).")
@click.option("--site", "site_id", default=None, help="Site of a new device. Default: site-import.")
@click.option("--timestamp-column", default=None, help="Column of the timestamps. Default: detected.")
@click.option("--value-column", default=None, help="Column of the values. Default: detected.")
@click.option(
    "--start",
    callback=_day,
    default=None,
    help="Shift by whole weeks so the first point falls in the 7 days from this UTC day (YYYY-MM-DD).",
)
@click.option(
    "--lake",
    "lake_root",
    envvar="IOT_LAKE_ROOT",
    default=None,
    help="Lake root (dir or s3://bucket). Env: IOT_LAKE_ROOT.",
)
@click.option("--db", "db_url", default=None, help="Historian SQLAlchemy URL. Default: the lake's embedded SQLite.")
@click.option("--format", "output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def import_command(
    path, device_id, metric, unit, site_id, timestamp_column, value_column, start, lake_root, db_url, output
):
    """Land a CSV or Parquet time series as a device's telemetry, as Firehose delivers it."""
    settings = _settings()
    root = lake_root or settings.lake_root
    if not db_url and lake_root and lake_root.startswith("s3://"):
        raise click.UsageError("an s3:// lake has no embedded historian: pass --db")
    url = db_url or (settings.historian_url if not lake_root else local_historian_url(root))
    try:
        report = import_series(
            Lake(root), url, path, device_id, metric, unit, site_id, timestamp_column, value_column, start
        )
    except OptionError as exc:
        raise click.BadParameter(str(exc), param_hint=exc.option) from None
    except (SeriesError, RegistrationError) as exc:
        raise click.ClickException(str(exc)) from None
    if output == "json":
        click.echo(json.dumps(report.to_dict()))
    else:
        _print_import(report)


def _print_import(report: ImportReport) -> None:
    table = Table(title=f"imported {Path(report.path).name}", show_header=False)
    added = [name for name, new in report.registered.items() if new]
    for name, value in (
        ("device / metric / site", f"{report.device_id} / {report.metric} / {report.site_id}"),
        (
            "unit",
            report.unit + (f" (curated in {report.canonical_unit})" if report.canonical_unit != report.unit else ""),
        ),
        ("columns", f"{report.timestamp_column}, {report.value_column}"),
        ("rows landed", f"{report.rows:,} of {report.read:,}"),
        ("rejected", f"{report.rejected:,}"),
        ("shifted by", f"{report.shift_seconds // 86_400 // 7} weeks" if report.shift_seconds else "nothing"),
        ("first (UTC)", report.first),
        ("last (UTC)", report.last),
        ("objects", f"{len(report.objects):,}"),
        ("registered", ", ".join(added) or "nothing new"),
    ):
        table.add_row(name, value)
    Console().print(table)
    if report.rejected_rows:
        bad = Table(title="rejected rows" + (" (first 10; --format json lists all)" if report.rejected > 10 else ""))
        bad.add_column("row", justify="right")
        bad.add_column("reason")
        for row in report.rejected_rows[:10]:
            bad.add_row(str(row["row"]), row["reason"])
        Console().print(bad)


@main.group()
def cases() -> None:
    """Work anomaly cases: list, show, acknowledge, resolve; list site incidents."""


_db_option = click.option(
    "--db",
    "db_url",
    default=None,
    help="Case store SQLAlchemy URL. Default: IOT_LAKE_CASES_URL or the lake's embedded SQLite.",
)


def _open_store(db_url: str | None) -> CaseStore:
    """The store with this environment's sinks, so the changes made here reach them through the outbox."""
    settings = _settings()
    return CaseStore(db_url or settings.cases_url, sinks=sinks_for(settings))


def _band(evidence: dict) -> str:
    if evidence.get("expected_lo") is None:  # opened before the series had a forecast
        return "none (no forecast yet: the series' own history)"
    return f"{evidence['expected_lo']:.3g} .. {evidence['expected_hi']:.3g}"


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else ""


@cases.command("list")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only cases with this status.")
@click.option("--format", "output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@_db_option
def list_cases(status, output, db_url):
    """Cases, newest incident first."""
    with _open_store(db_url) as store:
        found = store.list_cases(status)
    if output == "json":
        click.echo(json.dumps([case_json(case) for case in found]))
        return
    table = Table(title=f"{len(found)} case(s)" + (f" {status}" if status else ""))
    table.add_column("case", no_wrap=True)  # the key is what ack/resolve/show take: never broken
    for column in ("status", "severity", "site", "start (UTC)", "last seen (UTC)", "score", "reopens"):
        table.add_column(column)
    table.add_column("site incident", no_wrap=True)
    for case in found:
        table.add_row(
            case.case_key,
            case.status + (" (auto)" if case.auto_resolved else ""),
            case.severity,
            case.site_id or "",
            _when(case.incident_start),
            _when(case.last_seen),
            f"{case.evidence['max_score']:.2f}",
            str(case.reopen_count),
            case.site_incident_key or "",
        )
    Console().print(table)


@cases.command("incidents")
@click.option(
    "--status", type=click.Choice([OPEN, RESOLVED]), default=None, help="Only site incidents with this status."
)
@click.option("--site", "site_id", default=None, help="Only this site's incidents.")
@click.option("--format", "output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@_db_option
def incidents(status, site_id, output, db_url):
    """Site incidents (several devices of one site out of band together), newest first, with their cases."""
    with _open_store(db_url) as store:
        found = store.site_incidents(status, site_id)
    if output == "json":
        click.echo(json.dumps([incident_json(incident) for incident in found]))
        return
    table = Table(title=f"{len(found)} site incident(s)" + (f" {status}" if status else ""))
    table.add_column("site incident", no_wrap=True)
    for column in ("status", "site", "devices", "first start (UTC)", "last start (UTC)", "resolved (UTC)"):
        table.add_column(column)
    table.add_column("cases", no_wrap=True)
    for incident in found:
        table.add_row(
            incident.site_incident_key,
            incident.status,
            incident.site_id,
            str(len(incident.devices)),
            _when(incident.first_start),
            _when(incident.last_start),
            _when(incident.resolved_at),
            "\n".join(incident.case_keys),
        )
    Console().print(table)


@cases.command()
@click.argument("key")
@_db_option
def show(key, db_url):
    """One case: its fields, evidence and history."""
    with _open_store(db_url) as store:
        case, history = store.get(key), store.history(key)
    if case is None:
        raise click.ClickException(f"no case {key}")
    _print_case(case)
    table = Table(title="history")
    for column in ("at (UTC)", "from", "to", "actor", "note"):
        table.add_column(column, overflow="fold")
    for h in history:
        table.add_row(_when(h.at), h.from_status or "", h.to_status, h.actor, h.note or "")
    Console().print(table)


def _print_case(case: Case) -> None:
    table = Table(title=case.case_key, show_header=False)
    evidence = case.evidence
    for name, value in (
        ("status", case.status + (" (auto-resolved)" if case.auto_resolved else "")),
        ("severity", case.severity),
        ("device / metric / site", f"{case.device_id} / {case.metric} / {case.site_id or '-'}"),
        ("incident start", _when(case.incident_start)),
        ("last seen", _when(case.last_seen)),
        ("back in band since", _when(case.back_in_band_since)),
        ("resolved at", _when(case.resolved_at)),
        ("reopened", str(case.reopen_count)),
        ("site incident", case.site_incident_key or "-"),
        ("max score", f"{evidence['max_score']:.2f}"),
        ("expected band", _band(evidence)),
        ("actual values", json.dumps(evidence["actual_values"][-10:])),
    ):
        table.add_row(name, value)
    Console().print(table)


@cases.command()
@click.argument("key")
@click.option("--note", default=None, help="Why, for the history.")
@click.option("--actor", default=getpass.getuser, show_default="your user name", help="Who does it.")
@_db_option
def ack(key, note, actor, db_url):
    """Acknowledge an open case (it stays acknowledged while the detector updates it)."""
    with _open_store(db_url) as store:
        try:
            case = store.acknowledge(key, actor, note)
        except CaseError as exc:
            raise click.ClickException(_error(exc)) from None
    _print_case(case)


@cases.command()
@click.argument("key")
@click.option("--false-positive", is_flag=True, help="Not an anomaly after all (kept in training data).")
@click.option("--note", default=None, help="Why, for the history.")
@click.option("--actor", default=getpass.getuser, show_default="your user name", help="Who does it.")
@_db_option
def resolve(key, false_positive, note, actor, db_url):
    """Close a case as a real anomaly (or a false positive); confirms an auto-resolved one. Never reopened."""
    with _open_store(db_url) as store:
        try:
            case = store.resolve(key, actor, note, false_positive=false_positive)
        except CaseError as exc:
            raise click.ClickException(_error(exc)) from None
    _print_case(case)


def _error(exc: CaseError) -> str:
    return f"no case {exc.args[0]}" if isinstance(exc, CaseNotFound) else str(exc)


# `iot-lake api --rate-limit`, handed to the server's workers (each builds its app in its own process).
RATE_LIMIT_VAR = "IOT_LAKE_API_RATE_LIMIT"
LIMITS_VAR = "IOT_LAKE_API_LIMITS"  # the file the workers share their per-key limits in
DEFAULT_RATE_LIMIT = 20


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Server processes (one core each at most: Python serves a process's requests one at a time). "
    "They share the rate limits.",
)
@click.option(
    "--rate-limit",
    default=DEFAULT_RATE_LIMIT,
    show_default=True,
    type=click.IntRange(1),
    help="Requests per second and key (all workers together) before answers are 429.",
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="A line per request on the console (uvicorn's access log). Under load it takes about a fifth of "
    "a worker's CPU: a server behind a proxy or load balancer that logs requests can leave it off.",
)
def api(host, port, workers, rate_limit, access_log):
    """Serve the API (devices, their state and series, cases; OpenAPI at /openapi.json) and the operator
    workbench (/workbench) over this environment's case store and lake."""
    import uvicorn

    _settings()  # a setting that does not hold fails here, not in each worker
    os.environ[RATE_LIMIT_VAR] = str(rate_limit)  # the workers build the app themselves: they inherit it
    with tempfile.TemporaryDirectory(prefix="iot-lake-api-") as run:
        # A fresh file per server: the workers' shared per-key limits (iot_lake/api/limits.py).
        os.environ[LIMITS_VAR] = os.path.join(run, "limits")
        # Workers import the app themselves, so it is named, not passed; each builds its own.
        uvicorn.run(
            "iot_lake.cli:api_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="info",
            access_log=access_log,
        )


def api_app():
    """The serving app over this environment's case store and lake (one per server process)."""
    from iot_lake.api.app import create_app
    from iot_lake.encryption import delta_storage_options

    settings = _settings()
    options = {"AWS_REGION": settings.aws_region} if settings.aws_region else {}
    if settings.lake_root.startswith("s3://"):
        options.update(delta_storage_options(settings.kms_key_id))
    per_second = int(os.environ.get(RATE_LIMIT_VAR, DEFAULT_RATE_LIMIT))
    return create_app(
        settings.cases_url,
        settings.lake_root,
        delta_options=options or None,
        per_second=per_second,
        limits_path=os.environ.get(LIMITS_VAR),
    )


@main.group("api-keys")
def api_keys() -> None:
    """Keys for the serving API: create (shown once), list, revoke."""


@api_keys.command("create")
@click.option("--name", required=True, help="Who or what uses the key (recorded as the actor of its actions).")
@click.option("--scope", type=click.Choice(["read", "operator"]), required=True, help="operator may act on cases.")
@_db_option
def create_api_key(name, scope, db_url):
    """Create a key and print it once: only its hash is stored."""
    from iot_lake.api.keys import ApiKeys

    try:
        key = ApiKeys(db_url or _settings().cases_url).create(name, scope)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(key)


@api_keys.command("list")
@_db_option
def list_api_keys(db_url):
    """The keys' ids, names, scopes and dates (never the keys)."""
    from iot_lake.api.keys import ApiKeys

    rows = ApiKeys(db_url or _settings().cases_url).list()
    click.echo(json.dumps(rows, default=str))


@api_keys.command("revoke")
@click.argument("key_id")
@_db_option
def revoke_api_key(key_id, db_url):
    """Revoke a key by its id (the part after iotl_): it stops working at once."""
    from iot_lake.api.keys import ApiKeys

    if not ApiKeys(db_url or _settings().cases_url).revoke(key_id):
        raise click.ClickException(f"no active key {key_id}")
    click.echo(f"revoked {key_id}")


@main.group()
def dashboards() -> None:
    """Apache Superset over the warehouse, with the dashboards of dashboards/ (docs/dashboards.md)."""


_port_option = click.option("--port", default=DEFAULT_PORT, show_default=True, help="Port on 127.0.0.1.")


def _superset(port: int) -> tuple[Superset, Warehouse]:
    settings = _settings()
    warehouse = warehouse_for(settings)
    superset = Superset(
        superset_home(settings), port, extra_config=extra_config(settings), warehouse_file=warehouse.path
    )
    return superset, warehouse


@dashboards.command()
@_port_option
def up(port):
    """Start Superset on 127.0.0.1 (login required) with the dashboards of dashboards/; Ctrl-C stops it."""
    superset, warehouse = _superset(port)
    if warehouse.path and not warehouse.path.exists():
        console.print(f"[yellow]no warehouse at {warehouse.path} yet: the charts fail until dbt builds it")
    t0 = time.monotonic()
    # A stop by SIGTERM (a service manager, a test) unwinds like Ctrl-C, so the server is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if superset.prepare():
            console.print(f"Superset's metadata database set up in {superset.home}")
        server = superset.start()
    except DashboardsError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        _serve(superset, warehouse, server, t0)
    except DashboardsError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass
    finally:
        stop(server)


def _serve(superset: Superset, warehouse: Warehouse, server, t0: float) -> None:
    """Import the dashboards, say where to log in, and wait for the server (until Ctrl-C)."""
    superset.import_dashboards(warehouse)
    console.print(
        f"Superset ready at {superset.url} in {time.monotonic() - t0:.1f} s: log in as {ADMIN} with the "
        f"password in {superset.password_file} (log: {superset.log_file})"
    )
    if server.wait() != 0:
        raise DashboardsError(f"Superset exited ({server.returncode}); its log: {superset.log_file}")


@dashboards.command()
@_port_option
@click.option("--to", "target", type=click.Path(file_okay=False, path_type=Path), default=DASHBOARDS_DIR)
def export(port, target):
    """Write the running Superset's dashboards (with their charts and datasets) back into dashboards/."""
    superset, _ = _superset(port)
    try:
        written = superset.export_dashboards(target)
    except DashboardsError as exc:
        raise click.ClickException(str(exc)) from None
    except requests.ConnectionError:
        raise click.ClickException(f"no Superset on {superset.url}: start it with `iot-lake dashboards up`") from None
    console.print(f"{len(written)} definitions written to {target}")


@dashboards.command("quicksight-deploy")
@click.option("--account-id", required=True, help="AWS account that holds the QuickSight resources.")
@click.option("--region", required=True, help="QuickSight's region.")
@click.option("--principal", required=True, help="QuickSight user or group ARN given the owner's actions.")
@click.option("--template-arn", help="Template to make the dashboard from (its placeholders named after marts).")
@click.option("--dashboard-name", default="iot-lake fleet", show_default=True)
@click.option("--redshift-host", envvar="IOT_LAKE_REDSHIFT_HOST", help="[env IOT_LAKE_REDSHIFT_HOST]")
@click.option("--redshift-port", envvar="IOT_LAKE_REDSHIFT_PORT", help="[env IOT_LAKE_REDSHIFT_PORT, 5439]")
@click.option("--redshift-database", envvar="IOT_LAKE_REDSHIFT_DATABASE", help="[env IOT_LAKE_REDSHIFT_DATABASE]")
@click.option(
    "--redshift-user",
    envvar=["IOT_LAKE_DASHBOARDS_REDSHIFT_USER", "IOT_LAKE_REDSHIFT_USER"],
    help="[env IOT_LAKE_DASHBOARDS_REDSHIFT_USER, else IOT_LAKE_REDSHIFT_USER]; the password from the env only",
)
@click.option("--vpc-connection-arn", help="QuickSight VPC connection, for a cluster in private subnets.")
def quicksight_deploy(account_id, region, principal, template_arn, dashboard_name, vpc_connection_arn, **redshift):
    """Create or update the QuickSight data source, a data set per mart of dashboards/ and the dashboard."""
    from iot_lake import aws
    from iot_lake.quicksight import Deployer, QuickSightError, deploy, redshift_from_env

    given = {
        "IOT_LAKE_REDSHIFT_HOST": redshift["redshift_host"],
        "IOT_LAKE_REDSHIFT_PORT": redshift["redshift_port"],
        "IOT_LAKE_REDSHIFT_DATABASE": redshift["redshift_database"],
        "IOT_LAKE_DASHBOARDS_REDSHIFT_USER": redshift["redshift_user"],
    }
    env = {**os.environ, **{k: v for k, v in given.items() if v}}
    try:
        client = aws.client("quicksight", region_name=region)
        deployer = Deployer(client, account_id, principal, redshift_from_env(env), vpc_connection_arn)
        done = deploy(deployer, template_arn, dashboard_name)
    except QuickSightError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"data source {done.data_source}")
    for mart, arn in done.data_sets.items():
        click.echo(f"data set {mart}: {arn}")
    click.echo(f"dashboard {done.dashboard}" if done.dashboard else "no --template-arn: no dashboard")


@main.command()
@click.option("--once", is_flag=True, help="One step (read the window, score, deliver), then exit.")
@click.option("--interval", "interval_s", default=1.0, show_default=True, help="Seconds between polls.")
@click.option(
    "--kinesis",
    "kinesis_stream",
    default=None,
    envvar="IOT_LAKE_TELEMETRY_STREAM",
    show_envvar=True,
    help="Read this Kinesis data stream (the one Firehose reads) instead of the lake's landing prefix.",
)
def stream(once, interval_s, kinesis_stream):
    """Score landing records against the forecast as they arrive and open cases within seconds.

    The hourly ops/deviations asset stays the system of record and re-scores the same hours into the
    same cases (docs/cases-and-alerts.md#the-streaming-scorer). Run it beside `dagster dev`."""
    import logging

    from iot_lake.encryption import delta_storage_options
    from iot_lake.stream.scorer import StreamScorer
    from iot_lake.stream.service import run
    from iot_lake.stream.sources import KinesisReader, LandingWatcher

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = _settings()
    lake = Lake(settings.lake_root)
    options = {"AWS_REGION": settings.aws_region} if settings.aws_region else {}
    if settings.lake_root.startswith("s3://"):
        options.update(delta_storage_options(settings.kms_key_id))
    sinks = sinks_for(settings)
    with CaseStore(settings.cases_url, sinks=sinks) as store:
        scorer = StreamScorer(lake, store, sinks, delta_options=options or None)
        if kinesis_stream:
            source = KinesisReader(kinesis_stream, scorer.registry)
        else:
            source = LandingWatcher(lake, scorer.registry)
        console.print(f"streaming {kinesis_stream or lake.url + '/landing/telemetry'} into the cases (Ctrl-C stops)")
        try:
            run(source, scorer, interval_s, once=once, on_step=_stream_step if once else None)
        except KeyboardInterrupt:
            pass


def _stream_step(report) -> None:
    console.print(
        f"{report.records} records ({report.rejected} lines rejected), {report.minutes} minutes of "
        f"{report.series} series scored; cases: {report.cases or 'unchanged'}"
    )


if __name__ == "__main__":  # pragma: no cover
    main()
