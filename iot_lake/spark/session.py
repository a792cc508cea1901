"""Where a job script gets its SparkSession, the only thing that differs between worlds.

- ``SPARK_REMOTE`` set: connect to that Spark Connect server.
- ``IOT_LAKE_SPARK=classic`` (EMR Serverless, Glue): the cluster's own session; Delta is configured
  by the job's spark-submit parameters (delta-spark's extension and catalog).
- otherwise (the embedded default): start Sail, an in-process Spark Connect server, on loopback.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# Sail logs every session at INFO (and its normal shutdown at WARN) through Rust's env_logger;
# job output should show our lines and real warnings only.
os.environ.setdefault("RUST_LOG", "warn,sail_common::actor=error")
# Sail drops a session idle for 15 minutes (spark.session_timeout_secs). The embedded server serves
# one session, its owner's, and stops with it, so that would only ever break a session still in use:
# a long-lived one (the test suite's, a notebook's) after a quiet stretch. A week, unless set.
EMBEDDED_SESSION_TIMEOUT_S = str(7 * 24 * 3600)
# pyspark-client 4.2 warns about pandas 3 on import; the jobs exchange Arrow, not pandas.
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)


def _utc(spark):
    # Timestamp literals (replaceWhere predicates, date casts) must mean UTC on every cluster.
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    return spark


def unparsed_reply_policy():
    """A Spark Connect retry policy for a unary call whose reply did not parse.

    Seen once in CI (pysail 0.7.2, pyspark-client 4.2): a ``Config`` reply that protobuf could not
    decode, read by pyspark for every timestamp literal, failed a curated job. The default policy
    retries only unavailable servers. A unary call (config, analyze) reads or sets session state, so
    asking again is safe; a streamed ``ExecutePlan`` (an iterator) is not retried: it may have written.
    """
    import grpc
    from pyspark.sql.connect.client.retries import RetryPolicy

    class UnparsedUnaryReply(RetryPolicy):
        def __init__(self):
            super().__init__(max_retries=3, initial_backoff=50, backoff_multiplier=4.0, max_backoff=1000)

        def can_retry(self, e: BaseException) -> bool:
            return (
                isinstance(e, grpc.RpcError)
                and not hasattr(e, "__next__")  # a streamed call's error is its response iterator
                and e.code() == grpc.StatusCode.INTERNAL
                and "Exception deserializing response" in (e.details() or "")
            )

    return UnparsedUnaryReply()


def _connected(spark):
    spark.client.set_retry_policies([*spark.client.get_retry_policies(), unparsed_reply_policy()])
    return _utc(spark)


def _embedded_sail() -> bool:
    """Whether ``spark_session`` starts Sail in this process (the local default)."""
    return not os.environ.get("SPARK_REMOTE") and os.environ.get("IOT_LAKE_SPARK", "sail") != "classic"


def python_partitions(inputs: int, most: int = 64) -> int:
    """Partitions for a Python stage (mapInArrow) over ``inputs`` independent inputs (objects, parts).

    Spark runs Python in worker processes on its executors: one task per input, up to ``most``.
    Embedded Sail runs it inside its own process, under one interpreter lock: partitions beyond the
    cores wait for it and each adds its start-up. The main job's week (2,016 objects, 810k lines)
    parsed in 28 s as 64 partitions, 18 s as 8, 12 s as 4 or 1 and 8 s as 2, on 2 cores.
    """
    slots = (os.cpu_count() or 1) if _embedded_sail() else most
    return max(1, min(inputs, slots))


@contextmanager
def spark_session(app_name: str = "iot-lake") -> Iterator[object]:
    from pyspark.sql import SparkSession

    remote = os.environ.get("SPARK_REMOTE")
    if remote:
        yield _connected(SparkSession.builder.remote(remote).getOrCreate())
        return
    if not _embedded_sail():  # IOT_LAKE_SPARK=classic
        spark = SparkSession.builder.appName(app_name).getOrCreate()
        try:
            yield _utc(spark)
        finally:
            spark.stop()
        return
    from pysail.spark import SparkConnectServer

    os.environ.setdefault("SAIL_SPARK__SESSION_TIMEOUT_SECS", EMBEDDED_SESSION_TIMEOUT_S)  # read by the server
    server = SparkConnectServer("127.0.0.1", 0)
    server.start(background=True)
    host, port = server.listening_address
    spark = SparkSession.builder.remote(f"sc://{host}:{port}").getOrCreate()
    try:
        yield _connected(spark)
    finally:
        spark.stop()
        server.stop()
