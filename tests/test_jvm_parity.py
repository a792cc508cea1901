"""The telemetry job gives the same tables and reports on classic (JVM) Spark as on Sail.

Locally and in the other tests the job runs on Sail; EMR Serverless and Glue run the same script on
classic Spark. So that behaviour only Sail has is caught, this runs the job (curated telemetry,
quarantine, 1- and 5-minute aggregates, hot state) over landing hours with every kind of fault (duplicates,
late, bad and truncated objects), then re-runs one hour, on both:
Sail writing Delta, and classic PySpark (local[2]) from .venv-jvm writing Parquet, since no Delta
jars can be fetched here; the table format is the only difference. Both run the job's main() in a
subprocess (tests/job_runs.py), at the same time.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from deltalake import DeltaTable

from iot_lake.curated.aggregates import AGGREGATE_TABLES
from iot_lake.curated.object_counts import OBJECT_COUNTS
from iot_lake.curated.state import DEVICE_STATE
from iot_lake.curated.telemetry_job import CURATED_TELEMETRY, QUARANTINE_TELEMETRY
from iot_lake.lake import Lake
from tests.conftest import START
from tests.unavailable import assert_skipped_locally_and_failed_in_ci, unavailable

pytestmark = pytest.mark.jvm

ROOT = Path(__file__).resolve().parents[1]
JVM_PYTHON = ROOT / ".venv-jvm" / "bin" / "python"
# (table, partition column): everything the job writes.
TABLES = [
    (CURATED_TELEMETRY, "event_date"),
    (QUARANTINE_TELEMETRY, "landing_date"),
    *((key, "event_date") for key in AGGREGATE_TABLES.values()),
    (DEVICE_STATE, None),
    (OBJECT_COUNTS, "landing_date"),
]
WRITE_TIMES = {"updated_at", "counted_at"}  # when each engine wrote the row: never equal between runs
# Each argument is one main() call in the same process: two hours, then the first one again.
RUNS = [
    ["--hour", START.isoformat(), "--hour", (START + timedelta(hours=1)).isoformat()],
    ["--hour", START.isoformat()],
]
JVM_SPARK_ARGS = [
    "--master",
    "local[2]",
    "--driver-memory",
    "1g",
    # A short job: the quick JIT tier and a simple GC start faster (~35 s instead of ~50 s here).
    "--driver-java-options",
    "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
    "--conf",
    "spark.sql.shuffle.partitions=4",
    "--conf",
    "spark.ui.enabled=false",
    "--conf",
    "spark.ui.showConsoleProgress=false",
    "--conf",
    "spark.log.level=ERROR",
    # Spark's default INT96 reads back as naive nanoseconds; micros in UTC is the type Delta stores.
    "--conf",
    "spark.sql.parquet.outputTimestampType=TIMESTAMP_MICROS",
]


def jvm_python() -> Path:
    if not JVM_PYTHON.exists():
        unavailable(f"no classic PySpark at {JVM_PYTHON}: run scripts/setup.sh --test", "the JVM parity test")
    if shutil.which("java") is None:
        unavailable("no java on PATH: classic PySpark needs a JDK 17+", "the JVM parity test")
    return JVM_PYTHON


def _start(python: Path, lake: Lake, table_format: str, env: dict[str, str]) -> subprocess.Popen:
    runs = [json.dumps(["--lake", lake.url, *run, "--table-format", table_format]) for run in RUNS]
    return subprocess.Popen(
        [str(python), "-m", "tests.job_runs", *runs],
        env=env,
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _reports(proc: subprocess.Popen, engine: str) -> list[dict]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{engine} job failed:\n{err[-4000:]}"
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _delta(lake: Lake, key: str) -> pa.Table:
    return DeltaTable(lake.path(key)).to_pyarrow_table()


def _parquet(lake: Lake, key: str, partition_column: str | None) -> pa.Table:
    partitioning = (
        ds.partitioning(pa.schema([(partition_column, pa.date32())]), flavor="hive") if partition_column else None
    )
    return ds.dataset(lake.path(key), format="parquet", partitioning=partitioning).to_table()


def _nullable(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.with_nullable(True) for f in schema])


def _sorted_rows(table: pa.Table, columns: list[str]) -> list[tuple]:
    # Ordered by the values that must be equal (every table has a key among them), not by floats.
    return sorted(
        zip(*(table.column(c).to_pylist() for c in columns)),
        key=lambda row: repr([v for v in row if not isinstance(v, float)]),
    )


def _same_value(a, b) -> bool:
    # Engines may sum floats in another order (mean, stddev of aggregates): equal to the last bits.
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) or (math.isnan(a) and math.isnan(b))
    return a == b


def test_jvm_spark_on_parquet_matches_sail_on_delta(landed, tmp_path_factory):
    python = jvm_python()
    jvm_lake = Lake(str(tmp_path_factory.mktemp("jvm_lake")))
    shutil.copytree(landed.path(""), jvm_lake.path(""), dirs_exist_ok=True)

    # pyspark's Connect client sets SPARK_CONNECT_MODE_ENABLED in this process once any test has opened
    # a Sail session; inherited, it would turn the classic job into a Connect client too.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "IOT_LAKE_SPARK", "PYSPARK_SUBMIT_ARGS")
    }
    # Neither engine may depend on the machine's time zone: both run in one that is not UTC.
    env.update(TZ="America/New_York", PYTHONPATH=str(ROOT))
    jvm_env = {
        **env,
        "IOT_LAKE_SPARK": "classic",
        "PYSPARK_PYTHON": str(python),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_SUBMIT_ARGS": shlex.join([*JVM_SPARK_ARGS, "pyspark-shell"]),
    }
    sail, jvm = _start(Path(sys.executable), landed, "delta", env), _start(python, jvm_lake, "parquet", jvm_env)
    sail_reports, jvm_reports = _reports(sail, "Sail"), _reports(jvm, "classic Spark")

    # The run covered what it is meant to, so agreement means something.
    first, rerun = sail_reports[:2], sail_reports[2]
    assert len(sail_reports) == 3 and all(r["lines_landed"] > 0 for r in sail_reports)
    assert all(
        r["duplicates_in_batch"] and r["quarantined"] and r["unreadable_objects"] and r["late_records"] for r in first
    )
    assert rerun["curated_new"] == 0 and rerun["duplicates_existing"] > 0
    assert len(first[0]["event_dates"]) == 2
    assert jvm_reports == sail_reports

    for key, partition_column in TABLES:
        expected = _delta(landed, key)
        actual = _parquet(jvm_lake, key, partition_column)
        assert (key, actual.num_rows) == (key, expected.num_rows) and expected.num_rows > 0
        # Types must match; nullability need not: Sail's Delta writer keeps a DataFrame's NOT NULL
        # (lit(), count()), while delta-spark, like Spark's Parquet writer, stores every column nullable.
        assert _nullable(actual.select(expected.column_names).schema) == _nullable(expected.schema), key
        columns = [c for c in expected.column_names if c not in WRITE_TIMES]
        for a, b in zip(_sorted_rows(actual, columns), _sorted_rows(expected, columns), strict=True):
            differs = [c for c, x, y in zip(columns, a, b) if not _same_value(x, y)]
            assert not differs, f"{key}: {differs} differ in\n JVM  {a}\n Sail {b}"

    # Re-running an hour changed nothing on either engine.
    assert _delta(landed, CURATED_TELEMETRY).num_rows == sum(r["curated_new"] for r in first)
    quarantined = sum(r["quarantined"] + r["unreadable_objects"] for r in first)
    assert _delta(landed, QUARANTINE_TELEMETRY).num_rows == quarantined


def test_missing_jvm_venv_is_a_visible_skip_locally_and_a_failure_in_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules[__name__], "JVM_PYTHON", tmp_path / "missing" / "python")
    assert_skipped_locally_and_failed_in_ci(
        monkeypatch, jvm_python, skip="run scripts/setup.sh --test", fail="the JVM parity test must run there"
    )
