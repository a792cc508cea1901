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


# A Spark Connect server whose first reply to each kind of call does not parse: the client must ask a
# unary call (Config) again, and must not run a streamed ExecutePlan twice (it may have written).
GARBLED = """
import os, sys
from concurrent import futures

import grpc
from pyspark.sql.connect.proto import base_pb2 as pb2

calls = {"Config": 0, "ExecutePlan": 0}
garble = [True]  # the next Config reply does not parse


def config(request, context):
    calls["Config"] += 1
    if garble[0]:
        garble[0] = False
        return b"\\xff\\xff\\xff"  # not a ConfigResponse
    op = request.operation
    pairs = [pb2.KeyValue(key=k) for k in op.get_option.keys] + list(op.get_with_default.pairs)
    reply = pb2.ConfigResponse(session_id=request.session_id, server_side_session_id="s", pairs=pairs)
    return reply.SerializeToString()


def execute(request, context):
    calls["ExecutePlan"] += 1
    yield b"\\xff\\xff\\xff"


server = grpc.server(futures.ThreadPoolExecutor(4))
server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("spark.connect.SparkConnectService", {
    "Config": grpc.unary_unary_rpc_method_handler(config, pb2.ConfigRequest.FromString, bytes),
    "ExecutePlan": grpc.unary_stream_rpc_method_handler(execute, pb2.ExecutePlanRequest.FromString, bytes),
})])
port = server.add_insecure_port("127.0.0.1:0")
server.start()
os.environ["SPARK_REMOTE"] = f"sc://127.0.0.1:{port}"

from iot_lake.spark.session import spark_session

with spark_session("garbled") as spark:
    if sys.argv[1] == "default":  # pyspark's own policies only
        spark.client.set_retry_policies(spark.client.get_retry_policies()[:1])
    garble[0] = True
    try:
        print("timestamp type:", spark.conf.get("spark.sql.timestampType", "unset"))
    except Exception as exc:
        print("config failed:", type(exc).__name__, " ".join(str(exc).split()))
    try:
        spark.range(1).collect()
    except Exception as exc:
        print("execute failed:", type(exc).__name__)
print("calls", calls, flush=True)
os._exit(0)  # pyspark's exit hook would call the server again, stopped by then: no one to answer
"""


def _garbled(tmp_path, policies: str) -> str:
    script = tmp_path / "garbled.py"
    script.write_text(GARBLED)
    done = subprocess.run(
        [sys.executable, str(script), policies], capture_output=True, text=True, timeout=120, cwd=os.getcwd()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_config_reply_that_does_not_parse_is_asked_again_and_an_execution_is_not(tmp_path):
    out = _garbled(tmp_path, "ours")
    # Both garbled replies (the session's first call, setting UTC, then a read) were asked again.
    assert "timestamp type: unset" in out and "config failed" not in out, out
    assert "execute failed: SparkConnectGrpcException" in out and "'ExecutePlan': 1" in out, out
    # With pyspark's default policy alone, the same reply fails the read, as it failed CI's curated job.
    with_default = _garbled(tmp_path, "default")
    assert "config failed: SparkConnectGrpcException" in with_default, with_default
    assert 'details = "Exception deserializing response!"' in with_default, with_default
    assert "timestamp type" not in with_default, with_default


def test_python_stages_get_a_task_per_core_on_embedded_sail_and_per_input_on_spark(monkeypatch):
    """Sail runs Python UDFs in its own process under one interpreter lock: more tasks than cores only
    queue (and each adds its start-up); Spark's Python workers are processes across executors."""
    from iot_lake.spark.session import python_partitions

    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    monkeypatch.delenv("IOT_LAKE_SPARK", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert [python_partitions(n) for n in (0, 1, 2, 2016)] == [1, 1, 2, 2]
    monkeypatch.setenv("IOT_LAKE_SPARK", "classic")
    assert [python_partitions(n) for n in (0, 1, 20, 2016)] == [1, 1, 20, 64]
    monkeypatch.delenv("IOT_LAKE_SPARK")
    monkeypatch.setenv("SPARK_REMOTE", "sc://spark.example:15002")  # a remote server: its executors
    assert python_partitions(2016) == 64
