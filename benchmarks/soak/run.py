"""Soak: `dagster-webserver` and `dagster-daemon` with the simulator following in accelerated time, the
daemon and run workers killed (SIGKILL) at random moments; afterwards every landed line must be
accounted for exactly once.

    .venv/bin/python -m benchmarks.soak [--minutes 6] [--hours 4] [--devices 5] [--seed 7]

1. A copy of the control plane and a fresh lake (benchmarks/soak/setup.py): the day before the soak
   curated, a seasonal-naive champion, and the forecast of every soak hour, so the deviations and
   cases follow the telemetry as they do in production.
2. The webserver and the daemon start as two processes (what `dagster dev` runs as one), so the daemon
   can be killed alone and restarted; the landing and automation sensors run in the daemon.
3. For ``--minutes``, the simulator delivers ``--hours`` hours in accelerated time, the last one the
   hour in progress up to the soak's end (objects as their windows close on the accelerated clock,
   with the simulator's bad lines, duplicates, late records and truncated objects). The automation
   scores only the latest hour (eager's latest time window), so deviations and cases come from
   the hour the soak ends in, and only from its data delivered while it is in progress. The
   accelerated clock is behind the real one until the end, so all of that hour's data comes after
   it began; the soak runs on until that hour holds MIN_LIVE of data (benchmarks/hours.py), so one
   that crosses an hour or starts early in one still scores enough minutes to open cases. At
   seeded random moments the daemon is killed -9 and restarted a few seconds later, and a run
   worker (a process a code server spawned for a run) is killed -9 mid-run.
   The simulator's own anomalies may fall outside the minutes scored, so once the scored hour holds
   PLANT_DATA of data one known incident is planted in it (benchmarks/lake_setup.py, as latency's:
   a temperature series' last 10 minutes 25 degrees up), and one daemon and one run kill follow
   within AFTER_PLANT_S: its case opens under kills.
4. The system settles (no run queued or in progress for 30 s, bounded), the processes stop, and the
   lake is checked: every landed line (object, line number) is in quarantine or its message
   (device, metric, message id) in curated telemetry; no curated message and no quarantined line
   twice; no case twice (device, metric, incident start) nor two overlapping incidents of one series; every
   outbox row (cases and alerts) delivered.

Targets: missing 0, duplicated 0, duplicate cases 0, outbox pending 0, and at least 1 case: with
none, the duplicate-case check has checked nothing, so the soak fails it. The planted incident's
case must be opened exactly once (its series' cases overlapping its minutes). The kills survived, the
runs that failed and the automatic retries are reported beside them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from benchmarks.dagster_dev import clean_env, copy_control_plane, free_port, graphql, run_setup, served, wait
from benchmarks.hours import HOUR, hour_of, hours_in, soak_end, uncovered
from benchmarks.lake_setup import Incident
from benchmarks.results import Result, json_option, write

console = Console(stderr=True)
BIN = Path(sys.executable).parent
ACTIVE = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}
RUNS = "{ runsOrError { ... on Runs { results { runId status jobName tags { key value } } } } }"
BUFFER_S = 900  # one Firehose object per 15 simulated minutes: a few runs a minute on 2 cores
SETTLE_QUIET_S = 30.0
# Data of the scored hour the soak delivers at least. The recorded runs that scored 18 to 56 minutes
# of it opened 6-7 cases; 15 stays near that evidence and lengthens a soak by at most 15 minutes.
MIN_LIVE = timedelta(minutes=15)
# The planted incident re-sends the scored hour's last 10 minutes of one temperature series shifted
# (benchmarks/lake_setup.py), so it is planted once that hour holds 10 minutes; MIN_LIVE leaves at
# least 5 more delivered after it, so the soak never ends at the plant.
PLANT_DATA = timedelta(minutes=10)
# One daemon and one run kill fall within this many seconds after the plant: the runs that take the
# incident in and open its case (the sensor polls every 5 s) do so under kills, whatever the seed.
AFTER_PLANT_S = 60.0


def sim_config(devices: int, seed: int, buffer_s: int = BUFFER_S):
    """The simulated fleet of setup and soak alike; anomalies frequent enough (12 per series and day) to
    open cases within the minutes of the hour in progress the soak delivers."""
    from iot_lake.simulate.deliveries import SimConfig

    return SimConfig(devices=devices, seed=seed, history_days=1, buffer_s=buffer_s, anomaly_rate=12.0)


# --- the verification --------------------------------------------------------------------------


@dataclass
class Accounting:
    objects: int = 0
    lines: int = 0
    curated: int = 0  # lines whose message is in curated telemetry (duplicate deliveries included)
    quarantined: int = 0  # lines whose (object, line number) is in quarantine
    missing: int = 0
    duplicated: int = 0  # curated messages or quarantined lines present more than once
    missing_examples: list[str] = field(default_factory=list)


def landed_lines(lake) -> dict[tuple[str, int], tuple[str, str, str] | None]:
    """Every landing line the way the curated job numbers them: (object key, line number) -> its
    message key (device, metric, message id), None where the line is no such record. A truncated
    object's lines before its cut are landed lines; what follows the cut is not."""
    from iot_lake.lake import TELEMETRY_PREFIX
    from iot_lake.sources.telemetry import UnreadableObject, iter_lines

    lines: dict[tuple[str, int], tuple[str, str, str] | None] = {}
    for obj in lake.list(TELEMETRY_PREFIX):
        try:
            for number, line in enumerate(iter_lines(lake, obj.key), start=1):
                lines[(obj.key, number)] = _message_key(line)
        except UnreadableObject:
            pass
    return lines


def _message_key(line: bytes) -> tuple[str, str, str] | None:
    try:
        record = json.loads(line)
    except Exception:  # noqa: BLE001 - the simulator's malformed lines: quarantine must hold them
        return None
    if not isinstance(record, dict):
        return None
    key = tuple(record.get(k) for k in ("device_id", "metric", "message_id"))
    return key if all(isinstance(k, str) for k in key) else None


def _delta_rows(root: str, table: str, columns: list[str]) -> list[tuple]:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        data = DeltaTable(f"{root}/{table}").to_pyarrow_table(columns=columns)
    except TableNotFoundError:
        return []
    return list(zip(*(data.column(c).to_pylist() for c in columns)))


def account(lake_root: str) -> Accounting:
    """Every landed line against curated telemetry and its quarantine (module docstring, step 4)."""
    from iot_lake.lake import Lake

    landed = landed_lines(Lake(lake_root))
    curated = Counter(_delta_rows(lake_root, "curated/telemetry", ["device_id", "metric", "message_id"]))
    quarantined = Counter(_delta_rows(lake_root, "quarantine/telemetry", ["source_object", "line_number"]))
    acc = Accounting(objects=len({key for key, _ in landed}), lines=len(landed))
    acc.duplicated = sum(1 for n in curated.values() if n > 1) + sum(1 for n in quarantined.values() if n > 1)
    for row_id, message in landed.items():
        if row_id in quarantined:
            acc.quarantined += 1
        elif message is not None and message in curated:
            acc.curated += 1
        else:
            acc.missing += 1
            if len(acc.missing_examples) < 5:
                acc.missing_examples.append(f"{row_id[0]} line {row_id[1]}")
    return acc


@dataclass
class CaseFigures:
    cases: int = 0
    duplicate_cases: int = 0  # (device, metric, incident start) twice, or overlapping incidents of a series
    outbox_rows: int = 0
    outbox_pending: int = 0  # not delivered (cases' and alerts' outboxes)
    planted: int = 0  # cases of the planted incident: exactly 1 wanted


def case_figures(cases_url: str, incident: Incident | None = None) -> CaseFigures:
    import sqlalchemy as sa

    from iot_lake.cases.schema import alert_outbox, cases, outbox

    engine = sa.create_engine(cases_url)
    try:
        if not sa.inspect(engine).has_table(cases.name):
            return CaseFigures()
        with engine.connect() as conn:
            rows = list(
                conn.execute(sa.select(cases.c.device_id, cases.c.metric, cases.c.incident_start, cases.c.last_seen))
            )
            starts = Counter((r.device_id, r.metric, r.incident_start) for r in rows)
            figures = CaseFigures(cases=len(rows))
            figures.duplicate_cases = sum(n - 1 for n in starts.values()) + _overlapping(rows)
            figures.planted = planted_cases(rows, incident)
            for table in (outbox, alert_outbox):
                figures.outbox_rows += conn.scalar(sa.select(sa.func.count()).select_from(table))
                figures.outbox_pending += conn.scalar(
                    sa.select(sa.func.count()).select_from(table).where(table.c.delivered_at.is_(None))
                )
            return figures
    finally:
        engine.dispose()


def planted_cases(rows, incident: Incident | None) -> int:
    """The cases of the planted incident's series whose incident overlaps its shifted minutes (a case
    starts and is last seen on minute marks, hence the minute's slack after its last record)."""
    if incident is None:
        return 0
    first, last = incident.first_ts, incident.last_ts + timedelta(minutes=1)
    return sum(
        1
        for r in rows
        if (r.device_id, r.metric) == (incident.device, incident.metric)
        and _utc(r.incident_start) <= last
        and _utc(r.last_seen) >= first.replace(second=0, microsecond=0)
    )


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _overlapping(rows) -> int:
    """Cases of one series whose incidents overlap: one incident opened twice (the store's own unique
    index already refuses two active cases of a series, so a re-run could only double a closed one)."""
    by_series: dict[tuple[str, str], list] = {}
    for r in rows:
        by_series.setdefault((r.device_id, r.metric), []).append(r)
    overlaps = 0
    for series in by_series.values():
        series.sort(key=lambda r: r.incident_start)
        overlaps += sum(1 for a, b in zip(series, series[1:]) if b.incident_start <= a.last_seen)
    return overlaps


# --- the processes ------------------------------------------------------------------------------


class Processes:
    """The webserver and the daemon, each in a session of its own, and every session ever started (a
    killed daemon's code server lives on in its session until it is stopped at the end)."""

    def __init__(self, project: Path, env: dict[str, str], logs: Path, port: int):
        self.project, self.env, self.logs, self.port = project, env, logs, port
        self.sessions: list[subprocess.Popen] = []
        self.daemon: subprocess.Popen | None = None

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "a") as out:
            proc = subprocess.Popen(
                args, cwd=self.project, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.sessions.append(proc)
        return proc

    def start_webserver(self) -> None:
        self._start("webserver", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.port)])

    def start_daemon(self) -> None:
        self.daemon = self._start("daemon", [str(BIN / "dagster-daemon"), "run"])

    def kill_daemon(self) -> None:
        os.kill(self.daemon.pid, signal.SIGKILL)
        self.daemon.wait()
        self.daemon = None

    def run_workers(self) -> list[int]:
        """Run workers: the processes a code server of ours spawned to execute a run."""
        import psutil

        groups = {p.pid for p in self.sessions}
        workers = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if "spawn_main" not in " ".join(proc.info["cmdline"] or []) or os.getpgid(proc.pid) not in groups:
                    continue
                parent = proc.parent()
                if parent is not None and "grpc" in " ".join(parent.cmdline()):
                    workers.append(proc.pid)
            except (psutil.Error, ProcessLookupError):
                continue
        return sorted(workers)

    def stop(self) -> None:
        for proc in self.sessions:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in self.sessions:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            try:  # what is left of the session: a code server and its run workers
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def runs(port: int) -> list[dict]:
    results = graphql(port, RUNS)["runsOrError"]["results"]
    return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in results]


def settle(port: int, timeout: float) -> bool:
    """Wait until no run is queued or in progress for SETTLE_QUIET_S (the sensors and the retry daemon
    may still launch runs after a quiet moment); False if that did not happen within ``timeout``."""
    deadline, quiet_since = time.time() + timeout, None
    while time.time() < deadline:
        try:
            busy = any(r["status"] in ACTIVE for r in runs(port))
        except OSError:
            busy = True
        quiet_since = None if busy else (quiet_since or time.time())
        if quiet_since and time.time() - quiet_since >= SETTLE_QUIET_S:
            return True
        time.sleep(3)
    return False


# --- the soak -----------------------------------------------------------------------------------


@dataclass
class Kills:
    daemon: int = 0
    runs: int = 0
    run_attempts_without_worker: int = 0


def kill_plan(rng: random.Random, minutes: float, plant_s: float | None = None) -> list[tuple[float, str]]:
    """(seconds after the soak's start, "daemon" | "run"): about one of each per two minutes, and one
    of each within AFTER_PLANT_S after ``plant_s`` (the planted incident's runs)."""
    n = max(1, round(minutes / 2))
    span = minutes * 60
    plan = [(rng.uniform(0.1, 0.9) * span, "daemon") for _ in range(n)]
    plan += [(rng.uniform(0.1, 0.9) * span, "run") for _ in range(n)]
    if plant_s is not None:
        plan += [(plant_s + rng.uniform(5, AFTER_PLANT_S), kind) for kind in ("daemon", "run")]
    return sorted(plan)


def _next_window(clock: datetime, delivered: datetime, live: datetime, sims: tuple) -> tuple[datetime, object]:
    """The end of what the accelerated clock has closed since ``delivered`` and the simulator to deliver
    it: 15-minute Firehose objects for the past hours; 5-minute ones in the hour in progress
    (``live``), the only hour whose deviations the automation scores (eager's latest time window),
    so its minutes come in several steps. A simulator names its objects by buffer window, so each
    emit covers whole windows of its own (a second emit into a window would overwrite the object)."""
    past, current = sims
    if delivered >= live:
        return delivered + timedelta(seconds=(clock - delivered).total_seconds() // 300 * 300), current
    closed = delivered + timedelta(seconds=(clock - delivered).total_seconds() // BUFFER_S * BUFFER_S)
    return min(closed, live), past


def soak(procs: Processes, sims: tuple, plan: SoakPlan, rng: random.Random) -> tuple[Kills, Incident | None]:
    """Deliver [first, end) over the minutes on an accelerated clock, planting the incident and
    executing the kill plan. The clock reaches ``end`` as the minutes run out (at or after ``end`` on
    the real clock: SoakPlan), so it is never ahead of the real one."""
    from iot_lake.simulate.runner import SimulationReport

    first, end, minutes = plan.first, plan.end, plan.minutes
    speed = (end - first).total_seconds() / (minutes * 60)
    report = SimulationReport(start=first.isoformat(), end="")
    kills_due, kills, incident, planted = kill_plan(rng, minutes, plan.plant_s), Kills(), None, False
    started, delivered, restart_at = time.time(), first, None
    while delivered < end or kills_due or restart_at:
        elapsed = time.time() - started
        clock = first + timedelta(seconds=elapsed * speed)
        closed, sim = _next_window(min(clock, end), delivered, plan.live, sims)
        if closed > delivered:
            sim.emit(delivered, closed, report)
            delivered = closed
        if not planted and delivered >= plan.plant_at:  # once: a failed plant is reported, not retried
            incident, planted = _plant(sim.lake, plan.live, elapsed), True
        if restart_at and time.time() >= restart_at:
            procs.start_daemon()
            restart_at = None
        restart_at = _kill_due(procs, kills_due, kills, elapsed, rng, minutes * 60 + 90) or restart_at
        time.sleep(0.5)
    return kills, incident


def _plant(lake, hour: datetime, elapsed: float) -> Incident | None:
    """Plant the incident in the scored hour and announce it as the simulator announces its objects;
    None (the soak's planted-case check then fails) if the hour held no series to shift."""
    from benchmarks.lake_setup import plant_incident
    from iot_lake.announcements import announce

    try:
        incident = plant_incident(lake, hour)
    except RuntimeError as exc:
        console.log(f"[red]no incident planted: {exc}[/]")
        return None
    announce(lake, "soak", [incident.key])
    console.log(
        f"planted an incident at {elapsed:.0f} s: {incident.device} {incident.metric} "
        f"{incident.first_ts:%H:%M}-{incident.last_ts:%H:%M}"
    )
    return incident


def _kill_due(
    procs: Processes, due: list, kills: Kills, elapsed: float, rng: random.Random, run_kill_deadline: float
) -> float | None:
    """Execute the kills of ``due`` whose moment has come (removing them); the time to restart the
    daemon at if it was killed. A kill that cannot happen yet (the daemon still down, no run in
    progress) stays due; a run kill waits until ``run_kill_deadline`` for a run to start."""
    restart_at = None
    while due and due[0][0] <= elapsed:
        if due[0][1] == "daemon":
            if procs.daemon is None:  # still down from the previous kill: try again shortly
                break
            procs.kill_daemon()
            kills.daemon += 1
            restart_at = time.time() + rng.uniform(2, 8)
            console.log(f"killed the daemon at {elapsed:.0f} s")
        else:
            workers = procs.run_workers()
            if not workers and elapsed <= run_kill_deadline:
                break
            if workers:
                pid = rng.choice(workers)
                os.kill(pid, signal.SIGKILL)
                kills.runs += 1
                console.log(f"killed run worker {pid} at {elapsed:.0f} s")
            else:
                kills.run_attempts_without_worker += 1
        due.pop(0)
    return restart_at


def _run_figures(all_runs: list[dict]) -> dict[str, int]:
    failed = [r for r in all_runs if r["status"] == "FAILURE"]
    groups: dict[str, list[dict]] = {}
    for r in all_runs:
        groups.setdefault(r["tags"].get("dagster/root_run_id", r["runId"]), []).append(r)
    return {
        "runs": len(all_runs),
        "failed": len(failed),
        "retries": sum(1 for r in all_runs if "dagster/retry_number" in r["tags"]),
        # A run and its retries that never succeeded: its work was left to a later run, if any.
        "unrecovered": sum(1 for g in groups.values() if not any(r["status"] == "SUCCESS" for r in g)),
    }


@dataclass(frozen=True)
class SoakPlan:
    """Which hours the soak sends to and which one it scores, from the moment it starts (hours.py)."""

    first: datetime  # the first hour delivered (the setup curated the day before it)
    start: datetime
    end: datetime  # deliveries end here; the hour it falls in is the scored one
    minutes: float  # wall minutes of delivery: the clock reaches ``end`` no earlier than the real one

    @property
    def live(self) -> datetime:
        return hour_of(self.end)

    @property
    def crosses(self) -> bool:
        return hour_of(self.start) != self.live

    def describe(self) -> str:
        live_min = (self.end - self.live).total_seconds() / 60
        crossed = f", crossing into {self.live:%H:00}" if self.crosses else ""
        return f"scored hour {self.live:%Y-%m-%d %H:00}: {live_min:.0f} min of its data{crossed}"

    @property
    def plant_at(self) -> datetime:
        """Where the incident goes: into the scored hour, once PLANT_DATA of it is delivered."""
        return self.live + PLANT_DATA

    @property
    def plant_s(self) -> float:
        """When that is, in seconds after the soak's start, on soak's clock (linear from ``first`` to
        ``end`` over the minutes)."""
        return (self.plant_at - self.first) / (self.end - self.first) * self.minutes * 60


def plan_soak(first: datetime, hours: int, start: datetime, minutes: float) -> SoakPlan:
    """The soak's deliveries from ``start``; exit if an hour in progress during it has no forecast
    from the setup (its hours from ``first`` and one more)."""
    end = soak_end(start, minutes, MIN_LIVE)
    if missing := uncovered(hours_in(start, end), first, first + hours * HOUR):
        raise SystemExit(f"the setup forecast no hour {missing[0]:%H:00}: it started in another hour")
    return SoakPlan(first, start, end, max(minutes, (end - start).total_seconds() / 60))


def _setup(project: Path, env: dict[str, str], lake_root: Path, devices: int, seed: int, first, hours: int):
    run_setup(
        "benchmarks.soak.setup",
        project,
        env,
        *("--lake", str(lake_root), "--devices", str(devices), "--seed", str(seed)),
        *("--start", first.isoformat(), "--hours", str(hours)),
    )


def _table(
    acc: Accounting, figures: CaseFigures, kills: Kills, run_figures: dict, settled: bool, wall: float, incident
):
    table = Table(title=f"soak: dagster webserver + daemon, kills -9, on {os.cpu_count()} cores")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target")
    rows = [
        ("landing objects (with a readable line)", acc.objects, ""),
        ("lines landed", acc.lines, ""),
        ("in curated (by message id)", acc.curated, ""),
        ("in quarantine (by object, line)", acc.quarantined, ""),
        ("missing", acc.missing, "0"),
        ("duplicated (curated message / quarantined line twice)", acc.duplicated, "0"),
        ("daemon kills survived", kills.daemon, ""),
        ("run worker kills", kills.runs, ""),
        ("run kills planned with no run in progress", kills.run_attempts_without_worker, ""),
        (
            "runs / failed / automatic retries",
            f"{run_figures['runs']} / {run_figures['failed']} / {run_figures['retries']}",
            "",
        ),
        ("run groups never succeeded", run_figures["unrecovered"], ""),
        ("cases", figures.cases, ">= 1"),
        ("duplicate cases", figures.duplicate_cases, "0"),
        (f"cases of the planted incident ({_incident_label(incident)})", figures.planted, "exactly 1"),
        ("outbox rows / pending", f"{figures.outbox_rows} / {figures.outbox_pending}", "pending 0"),
        ("settled within the bound", "yes" if settled else "NO", ""),
        ("wall time (s)", f"{wall:.0f}", ""),
    ]
    for measure, value, target in rows:
        table.add_row(measure, str(value), target)
    Console(width=None if sys.stdout.isatty() else 120).print(table)


def _incident_label(incident: Incident | None) -> str:
    if incident is None:
        return "NOT planted"
    return f"{incident.device} {incident.metric} {incident.first_ts:%H:%M}-{incident.last_ts:%H:%M}"


def _results(
    acc: Accounting, figures: CaseFigures, kills: Kills, settled: bool, plan: SoakPlan, incident: Incident | None
) -> list[Result]:
    note = f"{acc.lines} lines; {kills.daemon} daemon kills, {kills.runs} run kills; {plan.describe()}" + (
        "" if settled else "; NOT settled within the bound"
    )
    zero = {"target": 0.0, "target_on": "value", "note": note}
    return [
        Result("soak", "landed lines in neither curated nor quarantine", acc.missing, unit="lines", **zero),
        Result("soak", "curated messages or quarantined lines present twice", acc.duplicated, unit="rows", **zero),
        Result("soak", "duplicate cases", figures.duplicate_cases, unit="cases", **zero),
        # Without a case the duplicate-case check above checked nothing: the soak fails here then.
        Result("soak", "cases opened (what the duplicate-case check covers)", figures.cases, **AT_LEAST_ONE, note=note),
        *_planted_results(figures, incident, note),
        Result("soak", "outbox rows not delivered", figures.outbox_pending, unit="rows", **zero),
    ]


AT_LEAST_ONE = {"unit": "cases", "target": 1.0, "target_on": "value", "higher_is_better": True}


def _planted_results(figures: CaseFigures, incident: Incident | None, note: str) -> list[Result]:
    """The planted incident's case opened (at least once), and not more than once: two figures, since
    a target bounds a figure on one side only."""
    note = f"planted: {_incident_label(incident)}; {note}"
    return [
        Result("soak", "cases of the planted incident opened", figures.planted, **AT_LEAST_ONE, note=note),
        Result(
            "soak",
            "cases of the planted incident beyond the first",
            max(0, figures.planted - 1),
            unit="cases",
            target=0.0,
            target_on="value",
            note=note,
        ),
    ]


@click.command()
@click.option("--minutes", default=6.0, show_default=True, help="Wall minutes of delivery and kills.")
@click.option("--hours", default=4, show_default=True, help="Simulated hours delivered over those minutes.")
@click.option("--devices", default=5, show_default=True)
@click.option("--seed", default=7, show_default=True, help="Seed of the fleet, its data and the kill moments.")
@click.option("--settle-timeout", default=600.0, show_default=True, help="Seconds to wait for the runs to end.")
@click.option("--workdir", type=click.Path(path_type=Path), default=None, help="default: a temporary directory")
@json_option
def main(
    minutes: float, hours: int, devices: int, seed: int, settle_timeout: float, workdir: Path | None, json_path
) -> None:
    t0 = time.time()
    work = workdir or Path(tempfile.mkdtemp(prefix="iot-lake-soak-"))
    project, lake_root = work / "project", work / "lake"
    shutil.rmtree(lake_root, ignore_errors=True)
    copy_control_plane(project)
    env = clean_env(IOT_LAKE_ROOT=str(lake_root), DAGSTER_HOME=str(project))
    # The soak's hours end with the hour in progress, delivered up to the moment the soak ends: the
    # sensor sees no partition ahead of its clock, and the automation scores only the latest hour.
    # The setup forecasts one hour more, for a soak that starts in the next hour or crosses into it.
    first = hour_of(datetime.now(UTC)) - timedelta(hours=hours - 1)
    console.print(f"seed {seed}; soak hours from {first:%Y-%m-%d %H:00}, {hours} h; work dir {work}")
    with console.status("setup: the day before curated, a champion, the soak hours' forecasts"):
        _setup(project, env, lake_root, devices, seed, first, hours)

    from iot_lake.lake import Lake
    from iot_lake.settings import local_cases_url
    from iot_lake.simulate.runner import Simulator

    # A SIGTERM (e.g. from `timeout`) unwinds through the `finally`, which stops every process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    procs = Processes(project, env, work, free_port())
    try:
        procs.start_webserver()
        procs.start_daemon()
        with console.status("webserver starting"):
            wait(lambda: served(procs.port), 180, "the UI")
        plan = plan_soak(first, hours, datetime.now(UTC), minutes)
        console.print(f"soak until {plan.end:%H:%M} ({plan.minutes:.1f} min); {plan.describe()}")
        with console.status(f"soak: {hours} simulated hours over {plan.minutes:.1f} min, kills -9"):
            lake = Lake(str(lake_root))
            sims = (Simulator(sim_config(devices, seed), lake), Simulator(sim_config(devices, seed, 300), lake))
            kills, incident = soak(procs, sims, plan, random.Random(seed))
        with console.status("settling: waiting for the runs to end"):
            settled = settle(procs.port, settle_timeout)
        run_figures = _run_figures(runs(procs.port))
    finally:
        procs.stop()
    acc, figures = account(str(lake_root)), case_figures(local_cases_url(str(lake_root)), incident)
    _table(acc, figures, kills, run_figures, settled, time.time() - t0, incident)
    if acc.missing_examples:
        console.print("missing, e.g.: " + "; ".join(acc.missing_examples))
    write(json_path, _results(acc, figures, kills, settled, plan, incident))
    if not figures.cases:
        console.print("[red]no case opened: the duplicate-case check checked nothing[/]")
    console.print(f"logs: {work}/webserver.log, {work}/daemon.log")


if __name__ == "__main__":
    main()
