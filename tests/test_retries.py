"""lib/retries.py against what Dagster raises: a local script's exit code decides whether a retry can help."""

from __future__ import annotations

import sys

import pytest
from dagster import Failure, PipesSubprocessClient, asset, materialize

from lib.retries import local_process_failures

EXIT_3 = "import sys; sys.exit(3)"
KILLED = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
raised: list[BaseException] = []


def _run(script: str) -> BaseException:
    @asset
    def step(context):
        try:
            with local_process_failures("the script"):
                PipesSubprocessClient().run(command=[sys.executable, "-c", script], context=context)
        except BaseException as exc:
            raised.append(exc)
            raise

    raised.clear()
    assert not materialize([step], raise_on_error=False).success
    [exc] = raised
    return exc


def test_a_script_that_exits_with_an_error_fails_the_step_without_retries():
    exc = _run(EXIT_3)
    assert isinstance(exc, Failure) and exc.allow_retries is False
    assert "the script exited with code 3" in exc.description


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_killed_script_stays_retryable():
    exc = _run(KILLED)
    assert not isinstance(exc, Failure)
    assert "failed with code -9" in str(exc)
