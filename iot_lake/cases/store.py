"""The case store: one case per incident of a series, its lifecycle, its history and its outbox.

Detectors call ``observe`` with every scored point; people call ``acknowledge`` and ``resolve``.
Lifecycle (times are the points' event times, so re-running a detector replays the same story):

- A series' *latest* case (by incident start) governs. An anomalous point opens a case
  (``device|metric|point time``) when the series has none, or when its latest case is closed and
  the point is a new excursion (below). At most one case per series is active (open or
  acknowledged), which a unique partial index enforces.
- Active case: anomalous points update ``last_seen`` and the evidence; one that arrives late,
  before the case's start but less than ``policy.resolve_after`` before it, moves the start back
  (older ones are ignored). The severity follows the max score and only rises (a rise is an
  ``updated`` event). An
  acknowledged case stays acknowledged. In-band points after ``last_seen`` start the in-band
  clock (``back_in_band_since``); an anomalous point at or after it stops the clock. In band for
  ``policy.resolve_after`` (to the point that shows it): auto-resolved, ``resolved_at`` = that point.
- Auto-resolved case: an anomalous point after ``last_seen`` and at most ``policy.reopen_within``
  after ``resolved_at`` reopens it (open, ``reopen_count`` + 1); a later one opens a new case.
- Case resolved or marked false positive by a person: never reopened. Anomalous points of the
  excursion it was closed during (before the series is next seen in band) extend its evidence
  quietly, so closing a case while the series is still out of band does not page again at once;
  the first anomalous point after an in-band one opens a new case.
- Points at or before the governing case's ``last_seen`` that add nothing change nothing: the
  same point twice, re-runs and restarts never open a second case.

Every status change (and severity rise) writes a ``case_history`` row and one ``outbox`` row per
sink subscribed to the event, in the transaction that makes the change.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from iot_lake.cases.model import (
    ACKNOWLEDGED,
    ACKNOWLEDGED_EVENT,
    ACTIVE,
    AUTO_RESOLVE,
    DETECTOR,
    FALSE_POSITIVE,
    OPEN,
    OPENED,
    REOPENED,
    RESOLVED,
    RESOLVED_EVENT,
    SEVERITIES,
    UPDATED,
    Case,
    CasePolicy,
    Deviation,
    HistoryEntry,
    Outcome,
    case_key,
    merge_evidence,
    start_evidence,
    utc,
    utcnow,
)
from iot_lake.cases.schema import case_history, cases, create_engine, create_tables, outbox

_RACE_RETRIES = 5  # a lost race to open a case is retried on the winner's committed state


class CaseError(Exception):
    pass


class CaseNotFound(CaseError, KeyError):
    pass


class CaseStateError(CaseError, ValueError):
    """A person's action that the case's status does not allow."""


class Subscriber(Protocol):
    """What the store needs of a sink: its name and the events it wants."""

    name: str
    events: Collection[str]


class CaseStore:
    def __init__(
        self,
        url: str,
        sinks: Iterable[Subscriber] = (),
        policy: CasePolicy = CasePolicy(),
        clock: Callable[[], datetime] = utcnow,
    ):
        _make_sqlite_directory(url)
        self.engine = create_engine(url)
        self.policy = policy
        self.subscriptions = {sink.name: frozenset(sink.events) for sink in sinks}
        self.clock = clock
        create_tables(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> CaseStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading

    def get(self, key: str) -> Case | None:
        with self.engine.connect() as conn:
            return _case(conn, key)

    def list_cases(self, status: str | None = None) -> list[Case]:
        query = sa.select(cases).order_by(cases.c.incident_start.desc(), cases.c.case_key)
        if status:
            query = query.where(cases.c.status == status)
        with self.engine.connect() as conn:
            return [Case(**row._mapping) for row in conn.execute(query)]

    def history(self, key: str | None = None) -> list[HistoryEntry]:
        query = sa.select(*(case_history.c[f] for f in HistoryEntry.__dataclass_fields__)).order_by(case_history.c.id)
        if key:
            query = query.where(case_history.c.case_key == key)
        with self.engine.connect() as conn:
            return [HistoryEntry(**row._mapping) for row in conn.execute(query)]

    # -- detectors

    def observe(self, deviation: Deviation) -> Outcome:
        """Apply one scored point to its series' cases (see the module docstring)."""
        for attempt in range(1, _RACE_RETRIES + 1):
            try:
                with self.engine.begin() as conn:
                    return self._observe(conn, deviation)
            except sa.exc.IntegrityError:
                # Another observer opened a case for the series since we looked: look again.
                if attempt == _RACE_RETRIES:
                    raise

    def _observe(self, conn: sa.Connection, d: Deviation) -> Outcome:
        latest = conn.execute(
            sa.select(cases)
            .where(cases.c.device_id == d.device_id, cases.c.metric == d.metric)
            .order_by(cases.c.incident_start.desc())
            .limit(1)
            .with_for_update()
        ).first()
        if latest is None:
            return self._open(conn, d) if d.is_anomalous else Outcome("unchanged")
        case = Case(**latest._mapping)
        if case.status in ACTIVE:
            return self._track(conn, case, d)
        return self._after_close(conn, case, d)

    def _track(self, conn: sa.Connection, case: Case, d: Deviation) -> Outcome:
        ts = utc(d.ts)
        if d.is_anomalous:
            if ts < case.incident_start - self.policy.resolve_after:
                return Outcome("unchanged", case.case_key)
            # A late point shortly before the start belongs to the same excursion: the start moves
            # back (the key keeps naming the case by the first point observed).
            changes: dict[str, Any] = {
                "incident_start": min(case.incident_start, ts),
                "last_seen": max(case.last_seen, ts),
                "evidence": merge_evidence(case.evidence, d),
            }
            if case.back_in_band_since and ts >= case.back_in_band_since:
                changes["back_in_band_since"] = None
            severity = self.policy.severity(changes["evidence"]["max_score"])
            if SEVERITIES.index(severity) > SEVERITIES.index(case.severity):
                changes["severity"] = severity
            if not self._update(conn, case, changes):
                return Outcome("unchanged", case.case_key)
            if "severity" in changes:
                self._record(
                    conn,
                    case.case_key,
                    case.status,
                    case.status,
                    DETECTOR,
                    f"severity {case.severity} -> {severity}",
                    UPDATED,
                )
            return Outcome("updated", case.case_key)
        if ts <= case.last_seen:
            return Outcome("unchanged", case.case_key)
        since = min(case.back_in_band_since or ts, ts)
        if ts - since < self.policy.resolve_after:
            changed = self._update(conn, case, {"back_in_band_since": since})
            return Outcome("updated" if changed else "unchanged", case.case_key)
        self._update(
            conn, case, {"status": RESOLVED, "auto_resolved": True, "resolved_at": ts, "back_in_band_since": since}
        )
        self._record(
            conn,
            case.case_key,
            case.status,
            RESOLVED,
            AUTO_RESOLVE,
            f"back in band since {since.isoformat()}",
            RESOLVED_EVENT,
        )
        return Outcome("resolved", case.case_key)

    def _after_close(self, conn: sa.Connection, case: Case, d: Deviation) -> Outcome:
        ts = utc(d.ts)
        if ts <= case.last_seen:
            return Outcome("unchanged", case.case_key)
        if not d.is_anomalous:
            # Where the excursion ended: the next anomalous point after it is a new incident.
            if case.back_in_band_since is None or ts < case.back_in_band_since:
                self._update(conn, case, {"back_in_band_since": ts})
                return Outcome("updated", case.case_key)
            return Outcome("unchanged", case.case_key)
        if case.auto_resolved:
            if ts - case.resolved_at <= self.policy.reopen_within:
                return self._reopen(conn, case, d)
            return self._open(conn, d)
        if case.back_in_band_since is None or ts < case.back_in_band_since:
            self._update(conn, case, {"last_seen": ts, "evidence": merge_evidence(case.evidence, d)})
            return Outcome("updated", case.case_key)
        return self._open(conn, d)

    def _open(self, conn: sa.Connection, d: Deviation) -> Outcome:
        now, start = self.clock(), utc(d.ts)
        key = case_key(d.device_id, d.metric, start)
        conn.execute(
            sa.insert(cases).values(
                case_key=key,
                device_id=d.device_id,
                metric=d.metric,
                site_id=d.site_id,
                incident_start=start,
                last_seen=start,
                back_in_band_since=None,
                severity=self.policy.severity(d.score),
                status=OPEN,
                auto_resolved=False,
                evidence=start_evidence(d),
                opened_at=now,
                updated_at=now,
                resolved_at=None,
                reopen_count=0,
            )
        )
        self._record(conn, key, None, OPEN, DETECTOR, None, OPENED)
        return Outcome("opened", key)

    def _reopen(self, conn: sa.Connection, case: Case, d: Deviation) -> Outcome:
        evidence = merge_evidence(case.evidence, d)
        severity = max(case.severity, self.policy.severity(evidence["max_score"]), key=SEVERITIES.index)
        self._update(
            conn,
            case,
            {
                "status": OPEN,
                "auto_resolved": False,
                "resolved_at": None,
                "back_in_band_since": None,
                "last_seen": utc(d.ts),
                "evidence": evidence,
                "severity": severity,
                "reopen_count": case.reopen_count + 1,
            },
        )
        self._record(
            conn,
            case.case_key,
            case.status,
            OPEN,
            DETECTOR,
            f"relapsed {utc(d.ts).isoformat()}, within {self.policy.reopen_within} of the auto-resolve",
            REOPENED,
        )
        return Outcome("reopened", case.case_key)

    # -- people

    def acknowledge(self, key: str, actor: str, note: str | None = None) -> Case:
        with self.engine.begin() as conn:
            case = _locked_case(conn, key)
            if case.status != OPEN:
                raise CaseStateError(f"case {key} is {case.status}: only an open case can be acknowledged")
            self._update(conn, case, {"status": ACKNOWLEDGED})
            self._record(conn, key, case.status, ACKNOWLEDGED, actor, note, ACKNOWLEDGED_EVENT)
            return _case(conn, key)

    def resolve(self, key: str, actor: str, note: str | None = None, false_positive: bool = False) -> Case:
        """Close a case as a real anomaly (resolved) or a false positive; also confirms an auto-resolved one."""
        with self.engine.begin() as conn:
            case = _locked_case(conn, key)
            if not (case.status in ACTIVE or case.auto_resolved):
                raise CaseStateError(f"case {key} was already closed as {case.status} by a person")
            status = FALSE_POSITIVE if false_positive else RESOLVED
            self._update(
                conn, case, {"status": status, "auto_resolved": False, "resolved_at": case.resolved_at or self.clock()}
            )
            self._record(conn, key, case.status, status, actor, note, RESOLVED_EVENT)
            return _case(conn, key)

    # -- writing

    def _update(self, conn: sa.Connection, case: Case, changes: dict[str, Any]) -> bool:
        """Write the fields that differ; False when none do."""
        changes = {k: v for k, v in changes.items() if getattr(case, k) != v}
        if not changes:
            return False
        conn.execute(
            sa.update(cases).where(cases.c.case_key == case.case_key).values(**changes, updated_at=self.clock())
        )
        return True

    def _record(
        self,
        conn: sa.Connection,
        key: str,
        from_status: str | None,
        to_status: str,
        actor: str,
        note: str | None,
        event: str,
    ) -> None:
        """The history row and the outbox rows of one change, in the change's transaction."""
        now = self.clock()
        conn.execute(
            sa.insert(case_history).values(
                case_key=key, at=now, from_status=from_status, to_status=to_status, actor=actor, note=note
            )
        )
        sinks = [name for name, events in self.subscriptions.items() if event in events]
        if not sinks:
            return
        payload = event_payload(_case(conn, key), event, actor, note, now)
        conn.execute(
            sa.insert(outbox),
            [
                {
                    "case_key": key,
                    "event": event,
                    "payload": payload,
                    "sink": sink,
                    "attempts": 0,
                    "next_attempt_at": now,
                }
                for sink in sinks
            ],
        )


def event_payload(case: Case, event: str, actor: str, note: str | None, at: datetime) -> dict[str, Any]:
    """What sinks receive: the case as the change left it (JSON-ready)."""
    return {
        "event": event,
        "case_key": case.case_key,
        "device_id": case.device_id,
        "metric": case.metric,
        "site_id": case.site_id,
        "status": case.status,
        "severity": case.severity,
        "auto_resolved": case.auto_resolved,
        "incident_start": case.incident_start.isoformat(),
        "last_seen": case.last_seen.isoformat(),
        "resolved_at": case.resolved_at.isoformat() if case.resolved_at else None,
        "reopen_count": case.reopen_count,
        "evidence": case.evidence,
        "actor": actor,
        "note": note,
        "at": at.isoformat(),
    }


def _case(conn: sa.Connection, key: str) -> Case | None:
    row = conn.execute(sa.select(cases).where(cases.c.case_key == key)).first()
    return Case(**row._mapping) if row else None


def _locked_case(conn: sa.Connection, key: str) -> Case:
    row = conn.execute(sa.select(cases).where(cases.c.case_key == key).with_for_update()).first()
    if row is None:
        raise CaseNotFound(key)
    return Case(**row._mapping)


def _make_sqlite_directory(url: str) -> None:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
