"""The case lifecycle on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import sqlite3
import threading
from datetime import timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from iot_lake.api.keys import ApiKeys
from iot_lake.cases.model import EVENTS, CasePolicy, case_key
from iot_lake.cases.schema import case_history, cases, outbox
from iot_lake.cases.store import CaseNotFound, CaseStateError, CaseStore
from tests.cases_helpers import T0, point

EVERYTHING = SimpleNamespace(name="everything", events=EVENTS)
PAGER = SimpleNamespace(name="pager", events=frozenset({"opened", "reopened"}))
KEY = case_key("dev-001", "temperature", T0)


@pytest.fixture
def store(store_url):
    with CaseStore(store_url, sinks=[EVERYTHING, PAGER]) as s:
        yield s


def outbox_rows(store) -> list[tuple[str, str, str]]:
    with store.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(sa.select(outbox.c.sink, outbox.c.event, outbox.c.case_key).order_by(outbox.c.id))
        ]


def counts(store) -> tuple[int, int, int]:
    with store.engine.connect() as conn:
        return tuple(
            conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in (cases, case_history, outbox)
        )


def transitions(store, key=KEY) -> list[tuple[str | None, str, str]]:
    return [(h.from_status, h.to_status, h.actor) for h in store.history(key)]


def test_an_excursion_is_one_case_however_often_its_points_arrive(store):
    excursion = [point(0), point(1, score=5.0, actual=33.0), point(2), point(3, anomalous=False)]
    assert [store.observe(p).action for p in excursion] == ["opened", "updated", "updated", "updated"]
    after_first_run = (store.list_cases(), store.history(), counts(store))
    # A re-run, a duplicate delivery, a restart with a fresh store on the same database.
    for p in excursion + excursion[::-1]:
        assert store.observe(p).action == "unchanged"
    with CaseStore(store.engine.url.render_as_string(hide_password=False), sinks=[EVERYTHING, PAGER]) as again:
        assert [again.observe(p).action for p in excursion] == ["unchanged"] * 4
    assert (store.list_cases(), store.history(), counts(store)) == after_first_run

    [case] = store.list_cases()
    assert (case.case_key, case.status, case.severity, case.site_id) == (KEY, "open", "warning", "site-1")
    assert (case.incident_start, case.last_seen, case.back_in_band_since) == (
        T0,
        T0 + timedelta(minutes=2),
        T0 + timedelta(minutes=3),
    )
    assert case.evidence == {
        "window_start": T0.isoformat(),
        "window_end": (T0 + timedelta(minutes=2)).isoformat(),
        "expected_lo": 10.0,
        "expected_hi": 20.0,
        "max_score": 5.0,
        "actual_values": [[(T0 + timedelta(minutes=m)).isoformat(), v] for m, v in ((0, 30.0), (1, 33.0), (2, 30.0))],
    }
    assert transitions(store) == [(None, "open", "detector")]
    assert outbox_rows(store) == [("everything", "opened", KEY), ("pager", "opened", KEY)]


def test_a_late_point_shortly_before_the_start_moves_it_back_an_older_one_is_ignored(store):
    assert store.observe(point(0, anomalous=False)).action == "unchanged"  # in band, no case: nothing
    key = store.observe(point(60)).case_key
    assert store.observe(point(60 - 31)).action == "unchanged"
    assert store.observe(point(60 - 30)).action == "updated"
    [case] = store.list_cases()
    assert (case.case_key, case.incident_start, case.evidence["window_start"]) == (
        key,
        T0 + timedelta(minutes=30),
        (T0 + timedelta(minutes=30)).isoformat(),
    )


def test_severity_only_rises_and_a_rise_is_an_event(store):
    store.observe(point(0, score=2.0))
    assert store.get(KEY).severity == "info"
    store.observe(point(1, score=7.0))
    store.observe(point(2, score=3.5))
    case = store.get(KEY)
    assert (case.severity, case.evidence["max_score"]) == ("critical", 7.0)
    assert [h.note for h in store.history(KEY)] == [None, "severity info -> critical"]
    assert [e for s, e, _ in outbox_rows(store) if s == "everything"] == ["opened", "updated"]


def test_auto_resolve_after_30_minutes_in_band_and_a_relapse_restarts_the_clock(store):
    store.observe(point(0))
    store.observe(point(1, anomalous=False))
    assert store.observe(point(30, anomalous=False)).action == "unchanged"  # 29 minutes in band: the clock runs
    assert store.get(KEY).status == "open"
    store.observe(point(31))  # relapse: the clock starts again at the next in-band point
    assert store.get(KEY).back_in_band_since is None
    store.observe(point(32, anomalous=False))
    assert store.observe(point(61, anomalous=False)).action == "unchanged"
    assert store.observe(point(62, anomalous=False)).action == "resolved"
    case = store.get(KEY)
    assert (case.status, case.auto_resolved, case.resolved_at, case.back_in_band_since) == (
        "resolved",
        True,
        T0 + timedelta(minutes=62),
        T0 + timedelta(minutes=32),
    )
    assert transitions(store) == [(None, "open", "detector"), ("open", "resolved", "auto-resolve")]
    assert [e for s, e, _ in outbox_rows(store) if s == "everything"] == ["opened", "resolved"]
    assert store.observe(point(63, anomalous=False)).action == "unchanged"


def test_a_relapse_within_two_hours_of_an_auto_resolve_reopens_the_same_case(store):
    for p in (point(0), point(5, anomalous=False), point(35, anomalous=False)):
        store.observe(p)
    assert store.get(KEY).status == "resolved"
    assert store.observe(point(35 + 120, score=6.5)).action == "reopened"  # exactly 2 h after the auto-resolve
    case = store.get(KEY)
    assert (case.status, case.reopen_count, case.resolved_at, case.auto_resolved, case.severity) == (
        "open",
        1,
        None,
        False,
        "critical",
    )
    assert len(store.list_cases()) == 1
    assert transitions(store)[-1] == ("resolved", "open", "detector")
    assert outbox_rows(store)[-2:] == [("everything", "reopened", KEY), ("pager", "reopened", KEY)]

    # Resolved again, a relapse more than 2 h later is a new incident.
    store.observe(point(160, anomalous=False))
    store.observe(point(190, anomalous=False))
    assert store.get(KEY).status == "resolved"
    later = store.observe(point(190 + 121))
    assert later.action == "opened" and later.case_key != KEY
    assert (store.get(KEY).status, store.get(KEY).reopen_count) == ("resolved", 1)


@pytest.mark.parametrize("false_positive", [False, True])
def test_a_case_closed_by_a_person_is_never_reopened(store, false_positive):
    store.observe(point(0))
    closed = store.resolve(KEY, actor="ana", note="seen", false_positive=false_positive)
    assert (closed.status, closed.auto_resolved) == ("false_positive" if false_positive else "resolved", False)
    # The excursion goes on after the person closed it: no new case, no page, the evidence grows.
    assert store.observe(point(1, score=9.0)).action == "updated"
    assert (store.get(KEY).status, store.get(KEY).last_seen, len(store.list_cases())) == (
        closed.status,
        T0 + timedelta(minutes=1),
        1,
    )
    # Back in band, then out again within two hours: a new case, the closed one untouched.
    store.observe(point(2, anomalous=False))
    new = store.observe(point(10))
    assert new.action == "opened" and new.case_key != KEY
    assert (store.get(KEY).status, store.get(KEY).reopen_count) == (closed.status, 0)
    assert transitions(store) == [(None, "open", "detector"), ("open", closed.status, "ana")]
    events = outbox_rows(store)
    with pytest.raises(CaseStateError, match="already closed"):
        store.resolve(KEY, actor="ben", note="closing it")
    with pytest.raises(CaseStateError, match="only an open case"):
        store.acknowledge(KEY, actor="cy")
    # The refused attempts are in the history (the CLI and the API share this), the case and outbox unchanged.
    assert transitions(store)[-2:] == [(closed.status, "rejected", "ben"), (closed.status, "rejected", "cy")]
    ben, cy = store.history(KEY)[-2:]
    refused = f"case {KEY} was already closed as {closed.status} by a person"
    assert ben.note == f"rejected close as resolved: {refused} (note: closing it)"
    assert cy.note.startswith("rejected acknowledge: ")
    assert store.get(KEY).status == closed.status and outbox_rows(store) == events


def test_an_acknowledged_case_stays_acknowledged_while_updated_and_can_still_auto_resolve(store):
    store.observe(point(0))
    case = store.acknowledge(KEY, actor="ana", note="on it")
    assert case.status == "acknowledged"
    assert store.observe(point(1, score=8.0)).action == "updated"
    assert (store.get(KEY).status, store.get(KEY).severity) == ("acknowledged", "critical")
    store.observe(point(2, anomalous=False))
    assert store.observe(point(32, anomalous=False)).action == "resolved"
    assert transitions(store) == [
        (None, "open", "detector"),
        ("open", "acknowledged", "ana"),
        ("acknowledged", "acknowledged", "detector"),
        ("acknowledged", "resolved", "auto-resolve"),
    ]
    assert store.history(KEY)[1].note == "on it"
    with pytest.raises(CaseStateError, match="only an open case"):
        store.acknowledge(KEY, actor="ana")


def test_a_person_confirms_an_auto_resolved_case(store):
    for p in (point(0), point(1, anomalous=False), point(31, anomalous=False)):
        store.observe(p)
    auto = store.get(KEY)
    confirmed = store.resolve(KEY, actor="ana", note="real overheating")
    assert (confirmed.status, confirmed.auto_resolved, confirmed.resolved_at) == ("resolved", False, auto.resolved_at)
    assert transitions(store)[-1] == ("resolved", "resolved", "ana")
    assert store.observe(point(40)).action == "opened"  # confirmed by a person: never reopened


def test_unknown_cases_and_status_filter(store):
    with pytest.raises(CaseNotFound):
        store.acknowledge("nope", actor="ana")
    assert store.get("nope") is None
    store.observe(point(0))
    store.observe(point(0, device="dev-002"))
    store.acknowledge(KEY, actor="ana")
    assert [c.device_id for c in store.list_cases("acknowledged")] == ["dev-001"]
    assert [c.device_id for c in store.list_cases("open")] == ["dev-002"]
    assert len(store.list_cases()) == 2


def test_policy_durations_are_configurable(store_url):
    policy = CasePolicy(resolve_after=timedelta(minutes=5), reopen_within=timedelta(minutes=10))
    with CaseStore(store_url, policy=policy) as store:
        for p in (point(0), point(1, anomalous=False)):
            store.observe(p)
        assert store.observe(point(6, anomalous=False)).action == "resolved"
        assert store.observe(point(17)).action == "opened"  # 11 minutes after the auto-resolve
        assert counts(store)[2] == 0  # no sinks configured: no outbox rows


SERIES = 25


@pytest.mark.parametrize("_", range(2))
def test_concurrent_observers_never_open_two_cases_for_one_incident(store_url, _):
    """Two observers see the same excursions, each in its own order, at the same time."""
    CaseStore(store_url).close()  # the tables, before the race
    stream = [point(m, device=f"dev-{s:03d}") for s in range(SERIES) for m in (0, 1)]
    orders = [stream, [p for pair in zip(stream[1::2], stream[0::2]) for p in pair]]  # second sees minute 1 first
    start, errors = threading.Barrier(len(orders)), []

    def observe(points):
        try:
            with CaseStore(store_url, sinks=[EVERYTHING]) as store:
                start.wait()
                for p in points:
                    store.observe(p)
        except Exception as exc:  # reported below: an exception in a thread would not fail the test
            errors.append(exc)

    threads = [threading.Thread(target=observe, args=(o,)) for o in orders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with CaseStore(store_url) as store:
        listed = store.list_cases()
        assert len(listed) == SERIES
        assert len({(c.device_id, c.metric) for c in listed}) == SERIES
        assert all(c.incident_start == T0 and len(c.evidence["actual_values"]) == 2 for c in listed)
        assert counts(store) == (SERIES, SERIES, SERIES)  # one history row and one "opened" event each


def test_reads_do_not_queue_for_the_write_lock_on_sqlite(tmp_path):
    """The API reads cases and keys from many threads at once. On SQLite every writing transaction
    takes the write lock up front; a read must not, or reads would wait here for the open writer
    (and, under load, for each other)."""
    path = tmp_path / "cases.sqlite"
    with CaseStore(f"sqlite:///{path}") as store:
        store.observe_many([point(0), point(1)])
        keys = ApiKeys(f"sqlite:///{path}")
        key = keys.create("app", "read")
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")  # a detector run in the middle of its transaction
        try:
            (case,) = store.list_cases()
            assert store.get(case.case_key) == case and store.history(case.case_key)
            assert keys.verify(key).name == "app"
        finally:
            writer.rollback()
            writer.close()


def test_summaries_are_the_cases_without_their_evidence_but_its_max_score(store):
    """What lists read (no evidence decoded), on both databases: max_score comes out of the JSON there."""
    for p in (point(0, score=0.93), point(1, score=0.97), point(0, device="dev-002", score=0.912345)):
        store.observe(p)
    store.acknowledge(KEY, "ana")
    full = store.list_cases()
    expected = [
        {**{k: v for k, v in vars(c).items() if k != "evidence"}, "max_score": c.evidence["max_score"]} for c in full
    ]
    assert store.summaries() == expected and len(expected) == 2
    assert [s["case_key"] for s in store.summaries("acknowledged", "dev-001")] == [KEY]
    assert store.summaries(device_id="dev-003") == []
