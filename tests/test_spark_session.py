"""The embedded Sail server (iot_lake/spark/session.py) keeps its one session however long it idles:
Sail's own default drops a session after 15 idle minutes, which broke the suite's shared session
once a CI machine took longer than that between two Spark tests."""

from __future__ import annotations

import os
import subprocess
import sys

from iot_lake.spark.session import EMBEDDED_SESSION_TIMEOUT_S

IDLE = """
import os, time
from iot_lake.spark.session import spark_session

with spark_session("idle") as spark:
    print("timeout", os.environ["SAIL_SPARK__SESSION_TIMEOUT_SECS"])
    spark.range(3).count()
    time.sleep(4)
    try:
        print("after idling", spark.range(3).count())
    except Exception as exc:
        print("after idling: failed:", str(exc).splitlines()[0])
"""


def _idle(env: dict[str, str], tmp_path) -> str:
    # A script file, not -c: pyspark looks for its home beside the running script.
    script = tmp_path / "idle.py"
    script.write_text(IDLE)
    done = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_embedded_session_outlives_sails_idle_timeout(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SAIL_SPARK__SESSION_TIMEOUT_SECS"}
    out = _idle(env, tmp_path)
    assert f"timeout {EMBEDDED_SESSION_TIMEOUT_S}\n" in out and "after idling 3" in out, out
    assert int(EMBEDDED_SESSION_TIMEOUT_S) >= 24 * 3600
    # The setting is the one Sail reads: a 2-second timeout set by an operator drops the idle session.
    out = _idle({**env, "SAIL_SPARK__SESSION_TIMEOUT_SECS": "2"}, tmp_path)
    assert "timeout 2\n" in out and "is not running" in out, out
