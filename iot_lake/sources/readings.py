"""The historian readings extract as the lake holds it: where an extract day lands and the schema of
its Parquet parts. What the extract (iot_lake.sources.historian) writes and the curated history job
(iot_lake.curated.history_job) reads, importable without SQLAlchemy."""

from __future__ import annotations

from datetime import date

import pyarrow as pa

from iot_lake.lake import HISTORIAN_PREFIX

READINGS_SCHEMA = pa.schema(
    [
        ("reading_id", pa.int64()),
        ("device_id", pa.string()),
        ("metric", pa.string()),
        ("recorded_at", pa.timestamp("us", tz="UTC")),
        ("value", pa.float64()),
        ("unit", pa.string()),
        ("loaded_at", pa.timestamp("us", tz="UTC")),
    ]
)


def readings_prefix(day: date) -> str:
    """The Parquet parts an extract day landed, beside its manifest."""
    return f"{HISTORIAN_PREFIX}/readings/{day:%Y/%m/%d}"


def readings_manifest_key(day: date) -> str:
    return f"{readings_prefix(day)}/_manifest.json"
