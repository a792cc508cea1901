"""A real `dagster dev` on a copy of the control plane, for the benchmarks that measure through the UI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONTROL_PLANE = ("assets", "resources", "jobs", "sensors", "lib", "dbt_project")
PROJECT_FILES = ("definitions.py", "workspace.yaml", "dagster.yaml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["data"]


def wait(predicate, timeout: float, what: str, every: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if value := predicate():
                return value
        except OSError:
            pass
        time.sleep(every)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def run_setup(module: str, project: Path, env: dict[str, str], *args: str) -> str:
    """A benchmark's setup module (``python -m MODULE ARGS``) in the project copy; its stdout, or
    exit with its stderr's end."""
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=project, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"setup failed:\n{out.stderr[-4000:]}")
    return out.stdout


def copy_control_plane(project: Path) -> None:
    """The control plane in a directory of its own, so its `.dagster/` and dbt target are the run's alone."""
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    for name in CONTROL_PLANE:
        # dbt_project's target/ keeps the manifest; its per-run dirs and logs stay behind.
        shutil.copytree(REPO / name, project / name, ignore=shutil.ignore_patterns("__pycache__", "runs", "logs"))
    for name in PROJECT_FILES:
        shutil.copy(REPO / name, project / name)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the project's settings, plus the run's own; the data plane
    is imported from the repo."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOT_LAKE", "DAGSTER_HOME"))}
    return {**env, "PYTHONPATH": str(REPO), **extra}


@contextmanager
def dagster_dev(project: Path, env: dict[str, str], log: Path, port: int | None = None) -> Iterator[int]:
    """`dagster dev` started in ``project``; yields its port and stops it (its daemon too) on exit."""
    port = port or free_port()
    # It runs in a session of its own (Ctrl-C reaches it through us, once): make a SIGTERM to us, e.g.
    # from `timeout`, unwind through the `finally` below instead of leaving it and its daemon running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-p", str(port)],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield port
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def served(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as resp:
        return resp.status == 200
