"""The data-quality check results as a lake table: ``ops/check_results`` (Delta, by evaluation day).

Every evaluation of an asset check (the Great Expectations suites, row accounting, the landing
checks, the dbt tests dagster-dbt reports as checks) lives in Dagster's instance, which the
warehouse cannot read. The control plane (``assets/ops/check_results.py``) copies them here, one
row per evaluation, so the data quality dashboard can show failed checks beside the quarantine.

Rows are merged on (run_id, event_id): copying the same evaluations again (a retried step, a
cursor reset) replaces them, never adds rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pyarrow as pa

from iot_lake.lake import Lake

CHECK_RESULTS_KEY = "ops/check_results"
SUMMARY_CHARS = 500  # a short summary: the check's tables and Markdown stay in Dagster's UI

CHECK_RESULTS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("event_id", pa.int64()),  # the evaluation's event storage id in the instance
        ("job", pa.string()),
        ("asset_key", pa.string()),  # e.g. curated/telemetry, warehouse/fct_case
        ("check_name", pa.string()),
        ("passed", pa.bool_()),
        ("severity", pa.string()),  # ERROR or WARN
        ("description", pa.string()),
        ("partition_key", pa.string()),  # a partition key, a range "a...b", or null
        ("evaluated_at", pa.timestamp("us")),  # naive UTC, as the warehouse's timestamps are
        ("evaluated_date", pa.date32()),
    ]
)


def summary(metadata: dict[str, object], limit: int = SUMMARY_CHARS) -> str:
    """The check's small metadata values as one line; long text (tables, Markdown) is left out."""
    parts = [f"{k}={v}" for k, v in metadata.items() if not (isinstance(v, str) and (len(v) > 80 or "\n" in v))]
    return _clip(", ".join(parts), limit)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def row(
    *,
    run_id: str,
    event_id: int,
    job: str,
    asset_key: str,
    check_name: str,
    passed: bool,
    severity: str,
    description: str | None,
    partition_key: str | None,
    evaluated_at: datetime,
) -> dict:
    """One evaluation as a row of the table (evaluated_at: an aware or naive-UTC time)."""
    if evaluated_at.tzinfo is not None:
        evaluated_at = evaluated_at.astimezone(UTC).replace(tzinfo=None)
    return {
        "run_id": run_id,
        "event_id": event_id,
        "job": job,
        "asset_key": asset_key,
        "check_name": check_name,
        "passed": passed,
        "severity": severity,
        "description": _clip(description, SUMMARY_CHARS) if description else None,
        "partition_key": partition_key,
        "evaluated_at": evaluated_at,
        "evaluated_date": evaluated_at.date(),
    }


def write_check_results(lake: Lake, rows: Sequence[dict], storage_options: dict[str, str] | None = None) -> int:
    """Upsert the rows by (run_id, event_id); the rows written."""
    from deltalake import DeltaTable, write_deltalake
    from deltalake.exceptions import TableNotFoundError

    if not rows:
        return 0
    source = pa.Table.from_pylist(list(rows), CHECK_RESULTS_SCHEMA)
    uri = lake.uri(CHECK_RESULTS_KEY)
    try:
        table = DeltaTable(uri, storage_options=storage_options)
    except TableNotFoundError:
        write_deltalake(uri, source, partition_by=["evaluated_date"], storage_options=storage_options)
        return len(rows)
    (
        table.merge(
            source,
            predicate="t.run_id = s.run_id and t.event_id = s.event_id and t.evaluated_date = s.evaluated_date",
            source_alias="s",
            target_alias="t",
        )
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )
    return len(rows)
