"""The lake mirror: cases, history and cases/feedback as Delta tables, replaced on every run."""

from __future__ import annotations

import json
from datetime import timedelta

from deltalake import DeltaTable

from iot_lake.cases.feedback import CASES_FEEDBACK
from iot_lake.cases.mirror import CASES_TABLE, HISTORY_TABLE, mirror_to_lake
from iot_lake.cases.model import case_key
from iot_lake.cases.store import CaseStore
from iot_lake.lake import Lake
from tests.cases_helpers import T0, point


def key(device: str):
    return case_key(device, "temperature", T0)


def table(lake: Lake, name: str) -> list[dict]:
    return sorted(DeltaTable(lake.path(name)).to_pyarrow_table().to_pylist(), key=lambda r: json.dumps(r, default=str))


def build_cases(store: CaseStore) -> None:
    """dev-001 confirmed, dev-002 false positive, dev-003 auto-resolved, dev-004 open,
    dev-005 confirmed while still out of band."""
    for device in ("dev-001", "dev-002", "dev-003", "dev-004", "dev-005"):
        store.observe(point(0, device=device))
        store.observe(point(4, device=device))
    for device in ("dev-001", "dev-002", "dev-003"):
        store.observe(point(5, anomalous=False, device=device))
        store.observe(point(35, anomalous=False, device=device))
    store.resolve(key("dev-001"), actor="ana")
    store.resolve(key("dev-002"), actor="ana", false_positive=True)
    store.resolve(key("dev-005"), actor="ana")


def test_feedback_holds_what_people_closed_and_nothing_else(store_url, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    with CaseStore(store_url) as store:
        build_cases(store)
        written = mirror_to_lake(store, lake)
    assert written == {CASES_TABLE: 5, HISTORY_TABLE: 5 + 3 + 1 + 1 + 1, CASES_FEEDBACK: 3}
    assert table(lake, CASES_FEEDBACK) == sorted(
        [
            {
                "case_id": key("dev-001"),
                "device_id": "dev-001",
                "metric": "temperature",
                "start_ts": T0,
                "end_ts": T0 + timedelta(minutes=5),
                "resolution": "confirmed",
            },
            {
                "case_id": key("dev-002"),
                "device_id": "dev-002",
                "metric": "temperature",
                "start_ts": T0,
                "end_ts": T0 + timedelta(minutes=5),
                "resolution": "false_positive",
            },
            # Still out of band when confirmed: the case ends just after its last anomalous point.
            {
                "case_id": key("dev-005"),
                "device_id": "dev-005",
                "metric": "temperature",
                "start_ts": T0,
                "end_ts": T0 + timedelta(minutes=4, microseconds=1),
                "resolution": "confirmed",
            },
        ],
        key=lambda r: json.dumps(r, default=str),
    )
    schema = DeltaTable(lake.path(CASES_FEEDBACK)).to_pyarrow_table().schema
    assert [(f.name, str(f.type)) for f in schema] == [
        ("case_id", "string"),
        ("device_id", "string"),
        ("metric", "string"),
        ("start_ts", "timestamp[us, tz=UTC]"),
        ("end_ts", "timestamp[us, tz=UTC]"),
        ("resolution", "string"),
    ]

    cases = {r["case_key"]: r for r in table(lake, CASES_TABLE)}
    assert {k.split("|")[0]: (r["status"], r["auto_resolved"]) for k, r in cases.items()} == {
        "dev-001": ("resolved", False),
        "dev-002": ("false_positive", False),
        "dev-003": ("resolved", True),
        "dev-004": ("open", False),
        "dev-005": ("resolved", False),
    }
    assert json.loads(cases[key("dev-004")]["evidence"])["window_end"] == (T0 + timedelta(minutes=4)).isoformat()
    assert {(r["from_status"], r["to_status"], r["actor"]) for r in table(lake, HISTORY_TABLE)} == {
        (None, "open", "detector"),
        ("open", "resolved", "auto-resolve"),
        ("resolved", "resolved", "ana"),
        ("resolved", "false_positive", "ana"),
        ("open", "resolved", "ana"),
    }


def test_mirroring_again_replaces_the_tables(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    with CaseStore(f"sqlite:///{tmp_path / 'cases.sqlite'}") as store:
        build_cases(store)
        mirror_to_lake(store, lake)
        first = {name: table(lake, name) for name in (CASES_TABLE, HISTORY_TABLE, CASES_FEEDBACK)}
        mirror_to_lake(store, lake)
        assert {name: table(lake, name) for name in first} == first
        store.resolve(key("dev-003"), actor="ana", note="confirmed after the fact")  # the auto-resolved one
        mirror_to_lake(store, lake)
    feedback = table(lake, CASES_FEEDBACK)
    assert sorted(r["case_id"] for r in feedback) == [key(d) for d in ("dev-001", "dev-002", "dev-003", "dev-005")]
    assert len(table(lake, CASES_TABLE)) == 5


def test_an_empty_store_writes_empty_tables_the_training_data_job_can_read(tmp_path, spark):
    from iot_lake.forecast.training_data_job import window_cases

    lake = Lake(str(tmp_path / "lake"))
    with CaseStore(f"sqlite:///{tmp_path / 'cases.sqlite'}") as store:
        assert mirror_to_lake(store, lake) == {CASES_TABLE: 0, HISTORY_TABLE: 0, CASES_FEEDBACK: 0}
        assert window_cases(spark, lake, T0.date(), T0.date()).count() == 0
        build_cases(store)
        mirror_to_lake(store, lake)
    rows = window_cases(spark, lake, T0.date(), T0.date()).collect()
    assert sorted((r.device_id, r.resolution) for r in rows) == [
        ("dev-001", "confirmed"),
        ("dev-002", "false_positive"),
        ("dev-005", "confirmed"),
    ]
