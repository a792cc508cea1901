"""The case store mirrored into the lake as Delta tables (delta-rs), for the warehouse and training.

Every mirror replaces the tables' contents with the store's, so running it twice, or after a
failed run, leaves the same tables:

- ``cases/cases``: one row per case, the evidence as a JSON string, its site incident's key if any;
- ``cases/history``: every status change;
- ``cases/feedback``: the contract of ``iot_lake.cases.feedback``, the cases a person closed.
  Resolved by a person (a real anomaly): ``confirmed``; marked a false positive:
  ``false_positive``. Auto-resolved cases are left out: nobody judged them, and a wrong
  "confirmed" would drop normal data from training (``iot-lake cases resolve`` on an
  auto-resolved case confirms it). Open and acknowledged cases are left out until closed.
  ``start_ts`` is the incident start, ``end_ts`` the first in-band point after the last
  anomalous one or, before one was seen, just after the last anomalous point.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from iot_lake.cases.feedback import CASES_FEEDBACK, CONFIRMED
from iot_lake.cases.feedback import FALSE_POSITIVE as FEEDBACK_FALSE_POSITIVE
from iot_lake.cases.model import FALSE_POSITIVE, RESOLVED, Case
from iot_lake.cases.store import CaseStore
from iot_lake.lake import Lake

CASES_TABLE = "cases/cases"
HISTORY_TABLE = "cases/history"

_TS = pa.timestamp("us", tz="UTC")
CASES_SCHEMA = pa.schema(
    [
        ("case_key", pa.string()),
        ("device_id", pa.string()),
        ("metric", pa.string()),
        ("site_id", pa.string()),
        ("incident_start", _TS),
        ("last_seen", _TS),
        ("back_in_band_since", _TS),
        ("severity", pa.string()),
        ("status", pa.string()),
        ("auto_resolved", pa.bool_()),
        ("evidence", pa.string()),
        ("opened_at", _TS),
        ("updated_at", _TS),
        ("resolved_at", _TS),
        ("reopen_count", pa.int32()),
        ("site_incident_key", pa.string()),
    ]
)
HISTORY_SCHEMA = pa.schema(
    [
        ("case_key", pa.string()),
        ("at", _TS),
        ("from_status", pa.string()),
        ("to_status", pa.string()),
        ("actor", pa.string()),
        ("note", pa.string()),
    ]
)
FEEDBACK_SCHEMA = pa.schema(
    [
        ("case_id", pa.string()),
        ("device_id", pa.string()),
        ("metric", pa.string()),
        ("start_ts", _TS),
        ("end_ts", _TS),
        ("resolution", pa.string()),
    ]
)


def feedback_rows(cases: list[Case]) -> list[dict[str, Any]]:
    rows = []
    for case in cases:
        if case.status == FALSE_POSITIVE:
            resolution = FEEDBACK_FALSE_POSITIVE
        elif case.status == RESOLVED and not case.auto_resolved:
            resolution = CONFIRMED
        else:
            continue
        rows.append(
            {
                "case_id": case.case_key,
                "device_id": case.device_id,
                "metric": case.metric,
                "start_ts": case.period()[0],
                "end_ts": case.period()[1],
                "resolution": resolution,
            }
        )
    return rows


def mirror_to_lake(store: CaseStore, lake: Lake, storage_options: dict[str, str] | None = None) -> dict[str, int]:
    """Replace the three tables with the store's contents; the rows written, per table."""
    from deltalake import write_deltalake

    cases = store.list_cases()
    case_rows = [{**vars(c), "evidence": json.dumps(c.evidence, sort_keys=True)} for c in cases]
    tables = {
        CASES_TABLE: pa.Table.from_pylist(case_rows, CASES_SCHEMA),
        HISTORY_TABLE: pa.Table.from_pylist([vars(h) for h in store.history()], HISTORY_SCHEMA),
        CASES_FEEDBACK: pa.Table.from_pylist(feedback_rows(cases), FEEDBACK_SCHEMA),
    }
    for key, table in tables.items():
        write_deltalake(
            lake.uri(key), table, mode="overwrite", schema_mode="overwrite", storage_options=storage_options
        )
    return {key: table.num_rows for key, table in tables.items()}
