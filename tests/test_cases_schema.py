"""The case store's schema migrations, on a store the previous version made (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from iot_lake.cases.model import case_key
from iot_lake.cases.schema import SCHEMA_VERSION, SchemaError, create_engine, schema_version, stored_version
from iot_lake.cases.store import CaseStore
from tests import cases_schema_v1
from tests.cases_helpers import T0, point
from tests.test_cases_site_incidents import PAGER, rows

OLD = case_key("dev-001", "temperature", T0)


def version_1_store(url: str) -> None:
    """The tables as version 1 created them, with an open case whose page is pending."""
    engine = cases_schema_v1.create_engine(url)
    cases_schema_v1.create_tables(engine)
    v1 = cases_schema_v1
    with engine.begin() as conn:
        conn.execute(
            sa.insert(v1.cases).values(
                case_key=OLD,
                device_id="dev-001",
                metric="temperature",
                site_id="site-1",
                incident_start=T0,
                last_seen=T0,
                severity="warning",
                status="open",
                auto_resolved=False,
                evidence={"max_score": 4.0, "actual_values": [], "window_start": "", "window_end": ""},
                opened_at=T0,
                updated_at=T0,
                reopen_count=0,
            )
        )
        conn.execute(
            sa.insert(v1.outbox).values(
                case_key=OLD,
                event="opened",
                payload={"event": "opened", "case_key": OLD},
                sink="pager",
                attempts=0,
                next_attempt_at=T0,
            )
        )
    engine.dispose()


def columns(url: str, table: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {c["name"] for c in sa.inspect(conn).get_columns(table)}
    finally:
        engine.dispose()


def test_a_version_1_store_is_migrated_and_keeps_its_cases(store_url):
    version_1_store(store_url)
    assert "site_incident_key" not in columns(store_url, "cases")
    with CaseStore(store_url, sinks=[PAGER]) as store:
        with store.engine.connect() as conn:
            assert stored_version(conn) == SCHEMA_VERSION == 2
        assert [(c.case_key, c.status, c.site_incident_key) for c in store.list_cases()] == [(OLD, "open", None)]
        # The old open case and a new device of its site are a site incident, the old case its anchor.
        assert store.observe(point(5, device="dev-002")).action == "opened"
        [incident] = store.site_incidents()
        assert incident.case_keys == (OLD, case_key("dev-002", "temperature", T0 + timedelta(minutes=5)))
        assert [r[0] for r in rows(store, "pager")] == ["opened", "site_linked"]
    assert {"receipt"} <= columns(store_url, "outbox") & columns(store_url, "alert_outbox")
    # Opening it again (every process does) finds it migrated and changes nothing.
    with CaseStore(store_url) as again:
        # (One connection at a time: a SQLite connection holds the write lock for its transaction.)
        with again.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(schema_version)).scalar_one() == 1
        assert len(again.site_incidents()) == 1


def test_a_new_store_starts_at_the_current_version(store_url):
    with CaseStore(store_url) as store, store.engine.connect() as conn:
        assert stored_version(conn) == SCHEMA_VERSION
    assert "site_incident_key" in columns(store_url, "cases")


def test_a_store_newer_than_the_code_is_refused(store_url):
    CaseStore(store_url).close()
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(sa.update(schema_version).values(version=SCHEMA_VERSION + 1))
    engine.dispose()
    with pytest.raises(SchemaError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this code's"):
        CaseStore(store_url)
