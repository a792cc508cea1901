"""Site incidents: several devices of one site out of band together page once (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from iot_lake.cases.model import EVENTS, SITE_EVENTS, CasePolicy, case_key
from iot_lake.cases.schema import outbox, site_incidents
from iot_lake.cases.store import CaseStore
from tests.cases_helpers import T0, point

# A paging sink (as Incident Manager and SNS are) and one that sees everything without paging.
PAGER = SimpleNamespace(name="pager", events=frozenset({"opened", "reopened", "resolved", *SITE_EVENTS}), pages=True)
LOG = SimpleNamespace(name="log", events=EVENTS | SITE_EVENTS)


def key(device: str, minute: float = 0, metric: str = "temperature") -> str:
    return case_key(device, metric, T0 + timedelta(minutes=minute))


@pytest.fixture
def store(store_url):
    with CaseStore(store_url, sinks=[PAGER, LOG]) as s:
        yield s


def rows(store, sink: str) -> list[tuple[str, str, str | None]]:
    """(event, stream case key, the case the payload is about) of one sink's outbox rows, in order."""
    with store.engine.connect() as conn:
        found = conn.execute(
            sa.select(outbox.c.event, outbox.c.case_key, outbox.c.payload)
            .where(outbox.c.sink == sink)
            .order_by(outbox.c.id)
        )
        return [(event, stream, payload["case_key"]) for event, stream, payload in found]


def observe(store, *points) -> list[str]:
    return [store.observe(p).action for p in points]


THREE = [point(0, device="dev-001"), point(5, device="dev-002"), point(12, device="dev-003")]


def test_three_devices_within_15_minutes_are_one_site_incident_paged_once(store):
    assert observe(store, *THREE) == ["opened"] * 3
    anchor = key("dev-001")
    [incident] = store.site_incidents()
    assert (incident.site_incident_key, incident.site_id, incident.anchor_case_key, incident.status) == (
        f"site-1|{T0.isoformat()}|dev-001|temperature",
        "site-1",
        anchor,
        "open",
    )
    assert incident.case_keys == (anchor, key("dev-002", 5), key("dev-003", 12))
    assert incident.devices == ("dev-001", "dev-002", "dev-003")
    assert (incident.first_start, incident.last_start) == (T0, T0 + timedelta(minutes=12))
    assert {c.case_key: c.site_incident_key for c in store.list_cases()} == dict.fromkeys(
        incident.case_keys, incident.site_incident_key
    )
    # One page (the first case's), then the others as events of it, in its stream.
    assert rows(store, "pager") == [
        ("opened", anchor, anchor),
        ("site_linked", anchor, key("dev-002", 5)),
        ("site_linked", anchor, key("dev-003", 12)),
    ]
    # A sink that does not page still sees each device case.
    assert [r for r in rows(store, "log") if r[0] == "opened"] == [
        ("opened", k, k) for k in (anchor, key("dev-002", 5), key("dev-003", 12))
    ]


def test_re_observing_the_same_minutes_changes_nothing(store):
    excursion = [*THREE, point(1, device="dev-001"), point(13, anomalous=False, device="dev-003")]
    observe(store, *excursion)
    before = (store.site_incidents(), store.list_cases(), rows(store, "pager"), rows(store, "log"))
    assert set(observe(store, *excursion, *excursion[::-1])) == {"unchanged"}
    with CaseStore(store.engine.url.render_as_string(hide_password=False), sinks=[PAGER, LOG]) as again:
        assert set(observe(again, *excursion)) == {"unchanged"}
    assert (store.site_incidents(), store.list_cases(), rows(store, "pager"), rows(store, "log")) == before


def test_devices_20_minutes_apart_are_separate_cases_each_paged(store):
    observe(store, point(0, device="dev-001"), point(20, device="dev-002"))
    assert store.site_incidents() == []
    assert [c.site_incident_key for c in store.list_cases()] == [None, None]
    assert [r[0] for r in rows(store, "pager")] == ["opened", "opened"]


def test_a_case_joins_within_the_window_of_the_latest_linked_start(store):
    observe(store, *THREE, point(26, device="dev-004"), point(42, device="dev-005"))  # 14 min, then 16 min later
    [incident] = store.site_incidents()
    assert incident.devices == ("dev-001", "dev-002", "dev-003", "dev-004")
    assert store.get(key("dev-005", 42)).site_incident_key is None
    assert [r[0] for r in rows(store, "pager")] == ["opened", *["site_linked"] * 3, "opened"]


def test_two_sites_are_two_site_incidents(store):
    points = [point(m, device=f"dev-{site}{m:02d}", site=f"site-{site}") for site in (1, 2) for m in (0, 3)]
    observe(store, *points)
    found = store.site_incidents()
    assert sorted((i.site_id, i.devices) for i in found) == [
        ("site-1", ("dev-100", "dev-103")),
        ("site-2", ("dev-200", "dev-203")),
    ]
    assert [r[0] for r in rows(store, "pager")] == ["opened", "site_linked", "opened", "site_linked"]
    assert [i.site_id for i in store.site_incidents(site_id="site-2")] == ["site-2"]


def test_one_device_or_no_site_is_never_a_site_incident(store):
    observe(
        store,
        point(0, metric="temperature"),
        point(2, metric="vibration"),  # the same device: one device, however many metrics
        point(0, device="dev-008", site=None),
        point(1, device="dev-009", site=None),
    )
    assert store.site_incidents() == []
    assert [r[0] for r in rows(store, "pager")] == ["opened"] * 4


def test_the_site_incident_resolves_when_its_last_case_closes(store):
    observe(store, *THREE)
    site_key = store.site_incidents()[0].site_incident_key
    # dev-002 auto-resolves at minute 36 (event time), dev-003 is marked a false positive, dev-001 resolved.
    observe(store, point(6, anomalous=False, device="dev-002"), point(36, anomalous=False, device="dev-002"))
    store.resolve(key("dev-003", 12), actor="ana", false_positive=True)
    assert store.site_incident(site_key).status == "open"
    # The linked cases' own events do not page; the anchor's do.
    assert [r[0] for r in rows(store, "pager")] == ["opened", "site_linked", "site_linked"]
    store.resolve(key("dev-001"), actor="ana", note="storm")
    incident = store.site_incident(site_key)
    assert (incident.status, incident.resolved_at) == ("resolved", max(c.resolved_at for c in store.list_cases()))
    assert rows(store, "pager")[-2:] == [
        ("resolved", key("dev-001"), key("dev-001")),
        ("site_resolved", key("dev-001"), key("dev-001")),
    ]
    assert [r for r in rows(store, "log") if r[0] == "resolved"] == [
        ("resolved", k, k) for k in (key("dev-002", 5), key("dev-003", 12), key("dev-001"))
    ]
    # A resolved site incident takes no more cases: the next one at the site pages on its own.
    observe(store, point(14, device="dev-004"))
    assert store.get(key("dev-004", 14)).site_incident_key is None
    assert rows(store, "pager")[-1] == ("opened", key("dev-004", 14), key("dev-004", 14))
    assert len(store.site_incidents()) == 1


def test_site_window_and_minimum_devices_are_configurable(store_url):
    policy = CasePolicy(site_window=timedelta(minutes=5), site_min_devices=3)
    with CaseStore(store_url, sinks=[PAGER], policy=policy) as store:
        observe(store, point(0, device="dev-001"), point(4, device="dev-002"))
        assert store.site_incidents() == []  # two devices: not yet
        observe(store, point(8, device="dev-003"))  # 4 min after dev-002, 8 after dev-001
        [incident] = store.site_incidents()
        # The two pages already out stay; the first is the anchor, the others link to it.
        assert (incident.anchor_case_key, incident.devices) == (key("dev-001"), ("dev-001", "dev-002", "dev-003"))
        assert rows(store, "pager") == [
            ("opened", key("dev-001"), key("dev-001")),
            ("opened", key("dev-002", 4), key("dev-002", 4)),
            ("site_linked", key("dev-001"), key("dev-002", 4)),
            ("site_linked", key("dev-001"), key("dev-003", 8)),
        ]
        observe(store, point(14, device="dev-004"))  # 6 min after the latest start
        assert store.get(key("dev-004", 14)).site_incident_key is None


def test_a_late_case_starting_before_the_anchor_joins_it(store):
    observe(store, point(10, device="dev-001"), point(12, device="dev-002"), point(0, device="dev-003"))
    [incident] = store.site_incidents()
    assert incident.anchor_case_key == key("dev-001", 10)  # the first page, not the earliest start
    assert (incident.first_start, incident.last_start) == (T0, T0 + timedelta(minutes=12))
    assert incident.case_keys[0] == key("dev-003", 0)


def test_the_site_incidents_table_holds_one_row_per_incident(store):
    observe(store, *THREE)
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(site_incidents)).scalar_one() == 1


def test_false_positive_and_confirmed_periods_in_the_detectors_shape(store):
    """(device_id, metric, start, end), UTC timestamps, end exclusive as in cases/feedback."""
    for device in ("dev-001", "dev-002", "dev-003", "dev-004", "dev-005"):
        observe(store, point(0, device=device, site=None), point(4, device=device, site=None))
    for device in ("dev-001", "dev-002", "dev-003"):
        observe(store, point(5, anomalous=False, device=device, site=None))
        observe(store, point(35, anomalous=False, device=device, site=None))  # auto-resolved
    store.resolve(key("dev-001"), actor="ana", false_positive=True)  # in band again since minute 5
    store.resolve(key("dev-002"), actor="ana")  # confirms the auto-resolve
    store.resolve(key("dev-004"), actor="ana", false_positive=True)  # still out of band
    # dev-003 stays auto-resolved (nobody judged it), dev-005 open: in neither.

    false_positives = store.false_positive_periods()
    assert list(false_positives.columns) == ["device_id", "metric", "start", "end"]
    assert [str(false_positives[c].dtype) for c in ("start", "end")] == ["datetime64[us, UTC]"] * 2
    assert false_positives.to_dict("records") == [
        {"device_id": "dev-001", "metric": "temperature", "start": T0, "end": T0 + timedelta(minutes=5)},
        {
            "device_id": "dev-004",
            "metric": "temperature",
            "start": T0,
            "end": T0 + timedelta(minutes=4, microseconds=1),
        },
    ]
    assert store.confirmed_periods().to_dict("records") == [
        {"device_id": "dev-002", "metric": "temperature", "start": T0, "end": T0 + timedelta(minutes=5)}
    ]
    # since: the periods still going on at or after it (end exclusive).
    assert list(store.false_positive_periods(since=T0 + timedelta(minutes=4, microseconds=1))["device_id"]) == [
        "dev-001"
    ]
    assert list(store.false_positive_periods(since=T0 + timedelta(minutes=4))["device_id"]) == ["dev-001", "dev-004"]
    assert list(store.false_positive_periods(since=T0 + timedelta(minutes=5))["device_id"]) == []
    empty = store.confirmed_periods(since=T0 + timedelta(days=1))
    assert empty.empty and list(empty.columns) == ["device_id", "metric", "start", "end"]
    assert [str(empty[c].dtype) for c in ("start", "end")] == ["datetime64[us, UTC]"] * 2


def test_the_periods_are_the_feedback_tables_rows(store):
    """The store's periods and the mirrored cases/feedback contract agree on every case."""
    from iot_lake.cases.mirror import feedback_rows

    observe(store, point(0), point(3), point(4, anomalous=False), point(0, device="dev-002", site="site-2"))
    store.resolve(key("dev-001"), actor="ana", false_positive=True)
    store.resolve(key("dev-002"), actor="ana")
    feedback = {
        r["resolution"]: [(r["device_id"], r["metric"], r["start_ts"], r["end_ts"])]
        for r in feedback_rows(store.list_cases())
    }
    as_tuples = lambda frame: [tuple(r) for r in frame.itertuples(index=False)]  # noqa: E731
    assert as_tuples(store.false_positive_periods()) == feedback["false_positive"]
    assert as_tuples(store.confirmed_periods()) == feedback["confirmed"]
