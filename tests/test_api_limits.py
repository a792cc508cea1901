"""The API's per-key rate limit (iot_lake/api/limits.py): a burst of the limit, then one request per
interval, the same count whichever of the server's processes takes the requests."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from iot_lake.api import limits
from iot_lake.api.limits import SharedLimits

SECOND = 1_000_000_000  # the limiter's clock counts nanoseconds


@pytest.fixture
def clock(monkeypatch):
    now = [1_000 * SECOND]
    monkeypatch.setattr(limits, "NOW", lambda: now[0])
    return now


def test_a_key_may_send_its_limit_at_once_then_one_per_interval(clock):
    limiter = SharedLimits(per_second=5)
    assert [limiter.allow("k1") for _ in range(7)] == [True] * 5 + [False] * 2
    clock[0] += SECOND // 10  # half an interval: still nothing
    assert not limiter.allow("k1")
    clock[0] += SECOND // 10  # one interval (0.2 s) after the burst
    assert limiter.allow("k1") and not limiter.allow("k1")
    clock[0] += SECOND  # a second idle: the whole burst again, no more
    assert [limiter.allow("k1") for _ in range(6)] == [True] * 5 + [False]
    assert limiter.allow("k2")  # another key has a budget of its own


def test_refused_requests_do_not_push_the_next_allowed_one_back(clock):
    limiter = SharedLimits(per_second=2)
    assert [limiter.allow("k") for _ in range(2)] == [True, True]
    for _ in range(100):  # a client hammering while refused
        assert not limiter.allow("k")
    clock[0] += SECOND // 2
    assert limiter.allow("k")


def _send(path: str, per_second: int, count: int, start, allowed) -> None:
    limiter = SharedLimits(per_second, path)
    start.wait()
    allowed.put(sum(limiter.allow(key) for _ in range(count) for key in ("app-a", "app-b")))


@pytest.mark.parametrize("shared", [True, False], ids=["one file", "a map per process"])
def test_processes_on_one_file_share_each_keys_budget(tmp_path, clock, shared):
    """Four processes (forked with the frozen clock) send 30 requests each for each of two keys at the
    same instant: on one file each key gets its 20, not 20 per process."""
    fork = multiprocessing.get_context("fork")
    start, allowed = fork.Barrier(4), fork.Queue()
    path = str(tmp_path / "limits")
    procs = [fork.Process(target=_send, args=(path if shared else None, 20, 30, start, allowed)) for _ in range(4)]
    for proc in procs:
        proc.start()
    counts = [allowed.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(10)
    assert sum(counts) == (2 * 20 if shared else 4 * 2 * 20)


def test_keys_past_the_table_share_a_slot_instead_of_going_unlimited(clock, monkeypatch):
    monkeypatch.setattr(limits, "SLOTS", 4)
    monkeypatch.setattr(limits, "PROBES", 4)
    limiter = SharedLimits(per_second=1)
    assert all(limiter.allow(f"key-{i}") for i in range(4))  # the table is full
    assert not limiter.allow("key-late")  # shares a slot whose budget is spent
    assert not limiter.allow("key-0")


def test_the_cli_gives_its_workers_one_fresh_limits_file(tmp_path, monkeypatch):
    """`iot-lake api --workers N`: every worker builds its app from the environment it inherits, so the
    limits file must be named there (one per server, gone when it stops)."""
    import uvicorn
    from click.testing import CliRunner

    from iot_lake import cli

    monkeypatch.setenv("IOT_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.delenv(cli.LIMITS_VAR, raising=False)
    seen: list[dict] = []

    def run(app, **options):  # what each worker would see, instead of serving
        path = os.environ[cli.LIMITS_VAR]
        assert SharedLimits(3, path).allow("k") and os.path.exists(path)
        seen.append({"path": path, "rate": os.environ[cli.RATE_LIMIT_VAR], **options})

    monkeypatch.setattr(uvicorn, "run", run)
    for _ in range(2):
        result = CliRunner().invoke(cli.main, ["api", "--workers", "2", "--rate-limit", "3", "--no-access-log"])
        assert result.exit_code == 0, result.output
    first, second = seen
    assert (first["workers"], first["rate"], first["access_log"]) == (2, "3", False)
    assert first["path"] != second["path"] and not os.path.exists(first["path"])
