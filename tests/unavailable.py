"""What a test does when something it needs is not on the machine: skip, with the reason, except
under CI (``CI`` set), where that is a failure: CI must never pass without having run it."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str, tests: str) -> NoReturn:
    """``tests`` names what must run in CI, e.g. "the PostgreSQL tests"."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: {tests} must run there)", pytrace=False)
    pytest.skip(reason)


def assert_skipped_locally_and_failed_in_ci(monkeypatch, probe, skip: str, fail: str) -> None:
    """``probe()``, with what it looks for missing, skips (message matching ``skip``) without CI and
    fails (matching ``fail``) under CI."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=skip):
        probe()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=fail):
        probe()


def chromium_binary(tests: str = "the browser tests") -> str:
    """Debian's Chromium, which the browser tests drive (no browser is ever downloaded)."""
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        unavailable(
            "chromium not found at /usr/bin/chromium (install Debian's 'chromium' package; "
            "scripts/setup.sh --test does as root)",
            tests,
        )
    return path
