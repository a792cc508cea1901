"""`iot-lake cases` as a user calls it, against a SQLite store."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from iot_lake.cases.model import case_key
from iot_lake.cases.schema import outbox
from iot_lake.cases.store import CaseStore
from iot_lake.cli import main
from tests.cases_helpers import T0, point

KEY = case_key("dev-001", "temperature", T0)
OTHER = case_key("dev-002", "temperature", T0)
SITE = "site-1|2026-11-20T10:00:00+00:00|dev-001|temperature"


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'cases.sqlite'}"
    with CaseStore(url) as store:
        store.observe(point(0, score=7.5))
        store.observe(point(0, device="dev-002"))
    return url


def cli(*args: str):
    # Wide enough that rich never folds a case key in the tables.
    return CliRunner(env={"COLUMNS": "250"}).invoke(main, ["cases", *args])


def test_list_show_ack_and_resolve(db):
    listed = cli("list", "--db", db)
    assert listed.exit_code == 0, listed.output
    assert KEY in listed.output and OTHER in listed.output and "2 case(s)" in listed.output

    acked = cli("ack", KEY, "--note", "crew on site", "--actor", "ana", "--db", db)
    assert acked.exit_code == 0, acked.output
    assert "acknowledged" in acked.output
    only_open = cli("list", "--status", "open", "--db", db)
    assert OTHER in only_open.output and KEY not in only_open.output

    shown = cli("show", KEY, "--db", db)
    assert shown.exit_code == 0, shown.output
    for text in ("critical", "dev-001 / temperature / site-1", "7.50", "10 .. 20", "crew on site", "ana", "detector"):
        assert text in shown.output, text

    resolved = cli("resolve", OTHER, "--false-positive", "--note", "calibration", "--db", db)
    assert resolved.exit_code == 0, resolved.output
    with CaseStore(db) as store:
        assert store.get(OTHER).status == "false_positive"
        assert store.history(OTHER)[-1].note == "calibration"
    assert OTHER in cli("list", "--status", "false_positive", "--db", db).output


def test_errors_are_clear(db):
    for args, message in [
        (["show", "nope"], "no case nope"),
        (["ack", "nope"], "no case nope"),
        (["resolve", "nope"], "no case nope"),
    ]:
        result = cli(*args, "--db", db)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
    assert cli("resolve", KEY, "--db", db).exit_code == 0
    again = cli("ack", KEY, "--db", db)
    assert again.exit_code == 1 and "only an open case can be acknowledged" in again.output
    bad = cli("list", "--status", "closed", "--db", db)
    assert bad.exit_code == 2 and "'closed' is not one of" in bad.output


def test_the_default_store_is_the_lakes_embedded_sqlite(tmp_path, monkeypatch):
    monkeypatch.setenv("IOT_LAKE_ROOT", str(tmp_path / "lake"))
    with CaseStore(f"sqlite:///{tmp_path / 'lake' / '_sources' / 'cases.sqlite'}") as store:
        store.observe(point(0))
    result = cli("list")
    assert result.exit_code == 0 and KEY in result.output, result.output
    # Changes made here reach the environment's sinks (locally the log and JSON lines) through the outbox.
    assert cli("ack", KEY).exit_code == 0
    with (
        CaseStore(f"sqlite:///{tmp_path / 'lake' / '_sources' / 'cases.sqlite'}") as store,
        store.engine.connect() as conn,
    ):
        rows = conn.execute(sa.select(outbox.c.sink, outbox.c.event)).all()
    assert [tuple(r) for r in rows] == [("log", "acknowledged"), ("jsonl", "acknowledged")]


def test_list_as_json_for_scripts(db):
    result = CliRunner().invoke(main, ["cases", "list", "--format", "json", "--db", db])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert [c["key"] for c in found] == [KEY, OTHER]  # same incident start: by key
    first = found[0]
    assert first == {
        "key": KEY,
        "device_id": "dev-001",
        "metric": "temperature",
        "site_id": "site-1",
        "start": T0.isoformat(),
        "last_seen": T0.isoformat(),
        "status": "open",
        "auto_resolved": False,
        "severity": "critical",
        "max_score": 7.5,
        "reopen_count": 0,
        "site_incident": SITE,  # two devices of site-1 at the same minute
    }
    assert cli("ack", KEY, "--db", db).exit_code == 0
    only_open = CliRunner().invoke(main, ["cases", "list", "--status", "open", "--format", "json", "--db", db])
    assert [c["key"] for c in json.loads(only_open.stdout)] == [OTHER]
    empty = CliRunner().invoke(main, ["cases", "list", "--status", "resolved", "--format", "json", "--db", db])
    assert empty.exit_code == 0 and json.loads(empty.stdout) == []


def test_site_incidents_listed_and_shown_per_case(db):
    with CaseStore(db) as store:
        store.observe(point(0, device="dev-009", site="site-9"))  # alone at its site: no site incident
    listed = cli("list", "--db", db)
    assert listed.exit_code == 0, listed.output
    assert "site incident" in listed.output and listed.output.count(SITE) == 2
    by_key = {c["key"]: c["site_incident"] for c in json.loads(cli("list", "--format", "json", "--db", db).stdout)}
    assert by_key == {KEY: SITE, OTHER: SITE, case_key("dev-009", "temperature", T0): None}
    assert SITE in cli("show", OTHER, "--db", db).output

    table = cli("incidents", "--db", db)
    assert table.exit_code == 0, table.output
    assert "1 site incident(s)" in table.output and SITE in table.output and OTHER in table.output
    [incident] = json.loads(cli("incidents", "--format", "json", "--db", db).stdout)
    assert incident == {
        "key": SITE,
        "site_id": "site-1",
        "status": "open",
        "anchor_case": KEY,
        "first_start": T0.isoformat(),
        "last_start": T0.isoformat(),
        "opened_at": incident["opened_at"],  # the wall clock
        "resolved_at": None,
        "devices": ["dev-001", "dev-002"],
        "cases": [KEY, OTHER],
    }
    for key in (KEY, OTHER):
        assert cli("resolve", key, "--db", db).exit_code == 0
    assert json.loads(cli("incidents", "--status", "open", "--format", "json", "--db", db).stdout) == []
    [resolved] = json.loads(cli("incidents", "--status", "resolved", "--format", "json", "--db", db).stdout)
    assert resolved["key"] == SITE and resolved["resolved_at"] is not None
    assert json.loads(cli("incidents", "--site", "site-9", "--format", "json", "--db", db).stdout) == []
