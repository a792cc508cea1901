"""Latency of the serving API under 50 concurrent clients, on the main job's data.

    .venv/bin/python -m benchmarks.api                 # 50 clients, 30 s per route
    .venv/bin/python -m benchmarks.api --seconds 5     # a smoke run

Runs `python -m jobs.main` (small sizes) on a fresh lake and DAGSTER_HOME, creates one read key per
client (each client is an application of its own: the API rate limits per key; the server runs with a
limit no client reaches, see ``start_api``), and starts `iot-lake api` on a free port. Then, one route
at a time, ``--clients`` closed-loop clients, each on its own keep-alive connection, send a request
as soon as the previous answer has been read, for ``--seconds``: `GET /health` (no key: the bare cost
of a request through the app), then `GET /devices/{id}/state` over the registry's devices in turn,
then `GET /cases`. Any answer that is not 2xx counts as an error. The server runs ``--workers``
processes (default: one per core), with its access log off unless ``--access-log`` (as a server under
load behind a proxy that logs requests would run; the log's line per request took a fifth or more of
a worker's CPU, so the figures with it are another measure, not noise).

The clients are autocannon (Node.js, benchmarks/api/loadgen, installed by `scripts/setup.sh --test`):
a Python client (httpx on asyncio) topped out near 400 requests/s on this machine's 2 cores, below
the ~1,000/s that 50 clients need to see 50 ms answers. They run on the same cores as the server, so
the figures include their share of the CPU. So the same clients first drive a trivial ASGI app
(benchmarks/api/trivial.py, one uvicorn process, no framework) for the same time: the generator's
ceiling in this run. The load average is printed with the figures.

Figures: p50 and p99 of state and cases; reference, measured in the same run: the same percentile
of `/health`. Target (issue 18): state's p99 <= 50 ms, on the value itself.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import click
import httpx
from rich.console import Console
from rich.table import Table

from benchmarks.dagster_dev import REPO, clean_env, free_port, wait
from benchmarks.results import Result, json_option, load_average, write

TARGET_STATE_P99_MS = 50.0
ROUTES = ("health", "state", "cases")
NO_LIMIT = 1_000_000  # requests per second and key
TRIVIAL = "trivial app"  # the phase of the load generator's ceiling
# autocannon, pinned by benchmarks/api/loadgen/package-lock.json (scripts/setup.sh --test: npm ci)
DRIVER = Path(__file__).with_name("loadgen") / "drive.js"
LOADGEN = DRIVER.with_name("node_modules") / "autocannon"
LOGS = Path(tempfile.gettempdir()) / "iot-lake-bench"  # the server's access log outlives the run's lake
console = Console(stderr=True)


def percentile(samples: list[float], q: float) -> float:
    """The nearest-rank percentile: the smallest sample with at least ``q`` % of them at or below it."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Phase:
    """What the clients measured on one route."""

    route: str
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # status (or exception name) -> count
    client_cpu: float = 0.0  # seconds of CPU the clients took: they share the cores with the server

    @property
    def requests(self) -> int:
        return len(self.latencies)

    def ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def main_job(work: Path, devices: int, history_days: int, seed: int) -> dict[str, str]:
    """The README's main command on a fresh lake; the environment that serves it."""
    (work / "home").mkdir()
    env = clean_env(IOT_LAKE_ROOT=str(work / "lake"), DAGSTER_HOME=str(work / "home"))
    args = ["--days", "1", "--devices", str(devices), "--history-days", str(history_days), "--seed", str(seed)]
    with console.status(f"python -m jobs.main {' '.join(args)} on a fresh lake"):
        done = subprocess.run([sys.executable, "-m", "jobs.main", *args], cwd=REPO, env=env, capture_output=True)
    if done.returncode:
        raise SystemExit(f"the main job failed ({done.returncode}):\n{done.stderr[-3000:].decode()}")
    return env


def read_keys(lake_root: Path, count: int) -> list[str]:
    """``count`` read keys in the environment's case store, as `iot-lake api-keys create` makes them."""
    from iot_lake.api.keys import READ, ApiKeys
    from iot_lake.settings import local_cases_url

    keys = ApiKeys(local_cases_url(str(lake_root)))
    return [keys.create(f"bench-client-{i}", READ) for i in range(count)]


def start_api(
    env: dict[str, str], log: Path, workers: int = 1, access_log: bool = False
) -> tuple[subprocess.Popen, str]:
    """`iot-lake api` on a free port, once it answers; the process and its base URL."""
    # Each client sends as fast as it is answered, more than the default limit per key once answers take
    # under 50 ms: the limiter still runs for every request (its cost is measured), but throttles none.
    api = [sys.executable, "-m", "iot_lake.cli", "api", "--workers", str(workers), "--rate-limit", str(NO_LIMIT)]
    api.append("--access-log" if access_log else "--no-access-log")
    return _start(api, env, log, "/health")


def start_trivial(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """The trivial app of the generator's ceiling, one uvicorn process as the API's default."""
    uvicorn = [sys.executable, "-m", "uvicorn", "benchmarks.api.trivial:app", "--log-level", "warning"]
    return _start(uvicorn, env, log, "/")


def _start(command: list[str], env: dict[str, str], log: Path, probe: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    wait(lambda: _answers(base + probe) or proc.poll() is not None, 120, f"{command[2]} to answer")
    if proc.poll() is not None:
        raise SystemExit(f"{' '.join(command)} exited ({proc.returncode}); see {log}")
    return proc, base


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).is_success
    except httpx.HTTPError:
        return False


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def paths_of(route: str, devices: list[str]) -> list[str]:
    if route == "state":
        return [f"/devices/{d}/state" for d in devices]
    return [f"/{route}"]


def drive(base: str, route: str, paths: list[str], keys: list[str | None], seconds: float) -> Phase:
    """``len(keys)`` clients on ``route`` for ``seconds`` (benchmarks/api/loadgen/drive.js); /health is
    sent without a key, as it needs none."""
    if not LOADGEN.exists():
        raise SystemExit(f"no load generator at {LOADGEN.parent}: run scripts/setup.sh --test (npm ci there)")
    spec = {"url": base, "seconds": seconds, "paths": paths, "keys": keys}
    done = subprocess.run(["node", str(DRIVER), json.dumps(spec)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the load generator failed ({done.returncode}):\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout)
    phase = Phase(route, out["seconds"], [us / 1e6 for us in out["latencies_us"]], client_cpu=out["cpu_seconds"])
    phase.errors = {status: n for status, n in out["statuses"].items() if not status.startswith("2")}
    for name in ("errors", "timeouts"):
        if out[name]:
            phase.errors[name] = out[name]
    return phase


def device_ids(base: str, key: str) -> list[str]:
    """The registry's devices, as a client finds them."""
    answer = httpx.get(f"{base}/devices", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    answer.raise_for_status()
    return [d["device_id"] for d in answer.json()]


def warm_up(base: str, key: str, paths: dict[str, list[str]]) -> None:
    """One request per path first: the server's first request of a route imports its readers."""
    for route, route_paths in paths.items():
        for path in route_paths:
            headers = {} if route == "health" else {"Authorization": f"Bearer {key}"}
            httpx.get(f"{base}{path}", headers=headers, timeout=60).raise_for_status()


def ceiling(env: dict[str, str], clients: int, seconds: float, log: Path) -> Phase:
    """The load generator against the trivial app: the most it can drive on this machine now."""
    proc, base = start_trivial(env, log)
    try:
        with console.status(f"{clients} clients on the trivial app for {seconds:g} s"):
            return drive(base, TRIVIAL, ["/"], [None] * clients, seconds)
    finally:
        stop(proc)


def measure(
    env: dict[str, str], clients: int, seconds: float, log: Path, workers: int = 1, access_log: bool = False
) -> tuple[dict[str, Phase], int]:
    """Every route's phase (after the generator's ceiling), and the devices the state route went over."""
    phases = {TRIVIAL: ceiling(env, clients, seconds, log.with_name("api-trivial.log"))}
    keys = read_keys(Path(env["IOT_LAKE_ROOT"]), clients)
    proc, base = start_api(env, log, workers, access_log)
    try:
        devices = device_ids(base, keys[0])
        paths = {route: paths_of(route, devices) for route in ROUTES}
        warm_up(base, keys[0], paths)
        for route in ROUTES:
            with console.status(f"{clients} clients on {route} for {seconds:g} s"):
                keyed = [None] * clients if route == "health" else keys  # /health needs no key
                phases[route] = drive(base, route, paths[route], keyed, seconds)
    finally:
        stop(proc)
    return phases, len(devices)


def _note(p: Phase) -> str:
    errors = ", ".join(f"{s}: {n}" for s, n in sorted(p.errors.items())) or "none"
    figures = f"{p.requests:,} requests, {p.rps:,.0f}/s, p50 {p.ms(50):.1f} ms, p99 {p.ms(99):.1f} ms"
    return f"{figures}; non-2xx: {errors}; the clients took {p.client_cpu / p.seconds:.0%} of a core"


def results_of(
    phases: dict[str, Phase], clients: int, devices: int, load: float, server: str = "--workers 2 --no-access-log"
) -> list[Result]:
    health, state, cases = (phases[r] for r in ROUTES)
    at = f"{clients} clients, load {load:.1f}, iot-lake api {server}"
    latency = [
        Result(
            "api",
            f"GET {name} p{q}, {clients} clients",
            p.ms(q),
            unit="ms",
            reference=f"GET /health p{q}, same run",
            reference_value=health.ms(q),
            target=TARGET_STATE_P99_MS if (p is state and q == 99) else None,
            target_on="value",
            note=_note(p) + (f"; {devices} devices in turn" if p is state else "") + f" ({at})",
        )
        for name, p in (("/devices/{id}/state", state), ("/cases", cases))
        for q in (99, 50)
    ]
    errors = sum(p.error_count for route, p in phases.items() if route != TRIVIAL)
    return [
        *latency,
        Result(
            "api",
            "requests/s of /devices/{id}/state",
            state.rps,
            unit="req/s",
            reference="requests/s of /health, same run",
            reference_value=health.rps,
            higher_is_better=True,
            note=f"/cases: {cases.rps:,.0f}/s; /health: {_note(health)}",
        ),
        Result("api", "non-2xx answers, all routes", errors, unit="answers", target=0, target_on="value"),
        *_ceiling(phases, health),
    ]


def _ceiling(phases: dict[str, Phase], health: Phase) -> list[Result]:
    """The generator's ceiling, when measured: /health near it means the clients, not the server, bound the figures."""
    if TRIVIAL not in phases:
        return []
    trivial = phases[TRIVIAL]
    return [
        Result(
            "api",
            "requests/s of /health",
            health.rps,
            unit="req/s",
            reference="requests/s of the same clients against a trivial ASGI app, same run",
            reference_value=trivial.rps,
            higher_is_better=True,
            note=f"trivial app: {_note(trivial)}",
        )
    ]


def show(phases: dict[str, Phase], clients: int, seconds: float, server: str) -> None:
    table = Table(
        title=f"iot-lake api {server}: {clients} closed-loop clients, {seconds:g} s per route ({os.cpu_count()} cores)"
    )
    for column in ("route", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "non-2xx", "client CPU"):
        table.add_column(column, justify="left" if column == "route" else "right")
    for route, p in phases.items():
        table.add_row(
            route,
            f"{p.requests:,}",
            f"{p.rps:,.0f}",
            f"{p.ms(50):.1f}",
            f"{p.ms(99):.1f}",
            f"{p.ms(100):.1f}",
            str(p.error_count),
            f"{p.client_cpu / p.seconds:.0%}",
        )
    Console(width=None if sys.stdout.isatty() else 120).print(table)


@click.command()
@click.option("--clients", default=50, show_default=True, help="Concurrent closed-loop clients.")
@click.option("--seconds", default=30.0, show_default=True, help="How long the clients send, per route.")
@click.option("--devices", default=10, show_default=True, help="Simulated devices of the main job.")
@click.option("--history-days", default=3, show_default=True, help="The main job's days of history.")
@click.option("--seed", default=42, show_default=True, help="Seed of the simulated fleet and its data.")
@click.option(
    "--lake",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="A lake the main job already ran on: serve it instead of running the job (read keys are added to it).",
)
@click.option(
    "--workers",
    default=os.cpu_count() or 1,
    show_default="one per core",
    help="Server processes (`iot-lake api --workers`).",
)
@click.option(
    "--access-log/--no-access-log",
    default=False,
    show_default=True,
    help="The server's access log (`iot-lake api --access-log`).",
)
@json_option
def main(
    clients: int,
    seconds: float,
    devices: int,
    history_days: int,
    seed: int,
    lake: Path | None,
    workers: int,
    access_log: bool,
    json_path: Path | None,
) -> None:
    log = LOGS / "api-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="iot-lake-bench-api-") as tmp:
        env = clean_env(IOT_LAKE_ROOT=str(lake.resolve())) if lake else main_job(Path(tmp), devices, history_days, seed)
        phases, served = measure(env, clients, seconds, log, workers, access_log)
    load = load_average()
    server = f"--workers {workers} {'--access-log' if access_log else '--no-access-log'}"
    show(phases, clients, seconds, server)
    console.print(f"load average at the end: {load:.1f} on {os.cpu_count()} cores")
    write(json_path, results_of(phases, clients, served, load, server))


if __name__ == "__main__":
    main()
