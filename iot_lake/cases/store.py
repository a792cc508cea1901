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
sink subscribed to the event, in the transaction that makes the change. An action a person attempts
that the lifecycle refuses (acknowledging a closed case; the loser of two operators acting at once)
writes a ``rejected`` history row (no outbox event) before ``CaseStateError`` is raised.

Site incidents (several devices of one site out of band together: weather, a shared feed):

- A new case of a site joins the site's open incident when its start lies within
  ``policy.site_window`` of the incident's linked starts (no earlier than the first start minus the
  window, no later than the latest plus it). Without one, it opens one with the site's active,
  unlinked cases starting within the window of it, if together they come from at least
  ``policy.site_min_devices`` distinct devices. Linking happens only when a case opens, so re-runs
  change nothing.
- The first of those cases (by opening) is the incident's *anchor*: its page is already out, and
  it stands for the incident. Paging sinks (``pages = True``: Incident Manager, SNS) get no events
  of the other linked cases while the incident is open; instead a ``site_linked`` event per linked
  case goes into the anchor's outbox stream (after the anchor's page, per sink), which Incident
  Manager adds to the anchor's incident as a timeline event. Operators are paged once, at once:
  holding the first page back for a grouping delay would delay every single-device page too, and
  a 15-minute window cannot be waited for.
- The incident resolves when all its linked cases are closed (``resolved_at`` the latest of
  theirs); a ``site_resolved`` event goes into the anchor's stream. A resolved incident takes no
  more cases; its cases page on their own again (a relapse after that is news).
- Every other sink (CloudWatch, the log, JSON lines, EventBridge, a webhook) and the lake mirror
  still see each device case's own events.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Collection, Iterable
from datetime import datetime
from typing import Any, Protocol

import pandas as pd
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
    REJECTED,
    REOPENED,
    RESOLVED,
    RESOLVED_EVENT,
    SEVERITIES,
    SITE_LINKED,
    SITE_RESOLVED,
    UPDATED,
    Case,
    CasePolicy,
    Deviation,
    HistoryEntry,
    Outcome,
    SiteIncident,
    case_key,
    merge_evidence,
    site_incident_key,
    start_evidence,
    utc,
    utcnow,
)
from iot_lake.cases.schema import (
    case_history,
    cases,
    create_engine,
    create_tables,
    outbox,
    reading,
    site_incidents,
)

_RACE_RETRIES = 5  # a lost race to open a case is retried on the winner's committed state
# PostgreSQL: a deadlock or serialization failure aborts one transaction, which is retried like a lost race.
_RETRIED_SQLSTATES = ("40P01", "40001")
_SITE_LOCK = 7_041_991  # pg_advisory_xact_lock(namespace, site): one case of a site links at a time
PERIOD_COLUMNS = ["device_id", "metric", "start", "end"]


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
    # Optional ``pages: bool``: a sink that pages people gets one page per site incident (module docstring).


# The two statements of every observed point, built once: constructing a SQLAlchemy statement per
# point cost more than executing it (a range of 20,000 points spent half its 17 s building them).
_LATEST_CASE = (
    sa.select(cases)
    .where(cases.c.device_id == sa.bindparam("b_device_id"), cases.c.metric == sa.bindparam("b_metric"))
    .order_by(cases.c.incident_start.desc())
    .limit(1)
    .with_for_update()
)
# What a list of cases shows: every column but the evidence, and the evidence's max_score.
_SUMMARY = (
    *(c for c in cases.c if c.name != "evidence"),
    cases.c.evidence["max_score"].as_float().label("max_score"),
)
# SET takes the columns the parameters name (each set of changed columns is compiled once, then cached).
_UPDATE_CASE = sa.update(cases).where(cases.c.case_key == sa.bindparam("b_case_key"))


class CaseStore:
    def __init__(
        self,
        url: str,
        sinks: Iterable[Subscriber] = (),
        policy: CasePolicy = CasePolicy(),
        clock: Callable[[], datetime] = utcnow,
    ):
        self.engine = create_engine(url)
        self.policy = policy
        self.subscriptions = {sink.name: frozenset(sink.events) for sink in sinks}
        self.paging = frozenset(sink.name for sink in sinks if getattr(sink, "pages", False))
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
        with reading(self.engine).connect() as conn:
            return _case(conn, key)

    def list_cases(self, status: str | None = None, device_id: str | None = None) -> list[Case]:
        query = sa.select(cases).order_by(cases.c.incident_start.desc(), cases.c.case_key)
        if status:
            query = query.where(cases.c.status == status)
        if device_id:
            query = query.where(cases.c.device_id == device_id)
        with reading(self.engine).connect() as conn:
            return [Case(**row._mapping) for row in conn.execute(query)]

    def summaries(self, status: str | None = None, device_id: str | None = None) -> list[dict[str, Any]]:
        """``list_cases`` without the evidence: the case columns and the evidence's ``max_score``, read in
        the database. Lists need no more, and decoding every case's evidence was most of a list's time."""
        query = sa.select(*_SUMMARY).order_by(cases.c.incident_start.desc(), cases.c.case_key)
        if status:
            query = query.where(cases.c.status == status)
        if device_id:
            query = query.where(cases.c.device_id == device_id)
        with reading(self.engine).connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def history(self, key: str | None = None) -> list[HistoryEntry]:
        query = sa.select(*(case_history.c[f] for f in HistoryEntry.__dataclass_fields__)).order_by(case_history.c.id)
        if key:
            query = query.where(case_history.c.case_key == key)
        with reading(self.engine).connect() as conn:
            return [HistoryEntry(**row._mapping) for row in conn.execute(query)]

    def site_incident(self, key: str) -> SiteIncident | None:
        with self.engine.connect() as conn:
            return _site_incident(conn, key)

    def site_incidents(self, status: str | None = None, site_id: str | None = None) -> list[SiteIncident]:
        """Site incidents, newest first, with their linked cases."""
        query = sa.select(site_incidents).order_by(
            site_incidents.c.first_start.desc(), site_incidents.c.site_incident_key
        )
        if status:
            query = query.where(site_incidents.c.status == status)
        if site_id:
            query = query.where(site_incidents.c.site_id == site_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            linked = _linked(conn, [row.site_incident_key for row in rows])
        return [_with_cases(row, linked.get(row.site_incident_key, [])) for row in rows]

    def false_positive_periods(self, since: datetime | None = None) -> pd.DataFrame:
        """The periods of cases people marked false positive: normal behaviour after all, which a
        re-score may learn as such (``iot_lake.detect.deviations.score(..., normal=...)``)."""
        return self._periods(cases.c.status == FALSE_POSITIVE, since)

    def confirmed_periods(self, since: datetime | None = None) -> pd.DataFrame:
        """The periods of cases a person resolved as real anomalies (auto-resolved ones are not
        judged; ``resolve`` on one confirms it): what training data leaves out."""
        return self._periods((cases.c.status == RESOLVED) & ~cases.c.auto_resolved, since)

    def _periods(self, condition, since: datetime | None) -> pd.DataFrame:
        """(device_id, metric, start, end) per case, end exclusive (``Case.period``, as in cases/feedback),
        UTC timestamps; with ``since``, the periods ending after it. Sorted by series and start."""
        with self.engine.connect() as conn:
            found = [Case(**row._mapping) for row in conn.execute(sa.select(cases).where(condition))]
        rows = [(c.device_id, c.metric, *c.period()) for c in found]
        if since is not None:
            rows = [r for r in rows if r[3] > utc(since)]
        frame = pd.DataFrame(sorted(rows), columns=PERIOD_COLUMNS)
        for column in ("start", "end"):
            frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[us, UTC]")
        return frame.astype({"device_id": "str", "metric": "str"})  # the same dtype when empty

    # -- detectors

    def observe(self, deviation: Deviation) -> Outcome:
        """Apply one scored point to its series' cases (see the module docstring)."""
        for attempt in range(1, _RACE_RETRIES + 1):
            try:
                with self.engine.begin() as conn:
                    return self._observe(conn, deviation)
            except (sa.exc.IntegrityError, sa.exc.OperationalError) as exc:
                # Another observer opened a case for the series (or a site incident) since we looked,
                # or PostgreSQL picked this transaction to end a deadlock: look again.
                retried = isinstance(exc, sa.exc.IntegrityError) or (
                    getattr(exc.orig, "sqlstate", None) in _RETRIED_SQLSTATES
                )
                if attempt == _RACE_RETRIES or not retried:
                    raise

    def observe_many(self, deviations: Iterable[Deviation], chunk: int = 500) -> list[Outcome]:
        """``observe`` each point in order, ``chunk`` points per transaction (a commit per point is
        most of the cost of a long range on SQLite).  A chunk that meets a concurrent observer is
        rolled back whole and observed point by point, with ``observe``'s retries."""
        points, outcomes = list(deviations), []
        for i in range(0, len(points), chunk):
            batch = points[i : i + chunk]
            try:
                with self.engine.begin() as conn:
                    done = [self._observe(conn, d) for d in batch]
            except (sa.exc.IntegrityError, sa.exc.OperationalError):
                done = [self.observe(d) for d in batch]
            outcomes += done
        return outcomes

    def _observe(self, conn: sa.Connection, d: Deviation) -> Outcome:
        latest = conn.execute(_LATEST_CASE, {"b_device_id": d.device_id, "b_metric": d.metric}).first()
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
        self._settle_site(conn, case.case_key, AUTO_RESOLVE, None)
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
        linked = self._join_site(conn, _case(conn, key))
        self._record(conn, key, None, OPEN, DETECTOR, None, OPENED)
        if linked:
            self._enqueue_linked(conn, *linked)
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
                refused = f"case {key} is {case.status}: only an open case can be acknowledged"
                self._reject(conn, case, "acknowledge", actor, note, refused)
            else:
                self._update(conn, case, {"status": ACKNOWLEDGED})
                self._record(conn, key, case.status, ACKNOWLEDGED, actor, note, ACKNOWLEDGED_EVENT)
                return _case(conn, key)
        raise CaseStateError(refused)  # after the rejection's history row is committed

    def resolve(self, key: str, actor: str, note: str | None = None, false_positive: bool = False) -> Case:
        """Close a case as a real anomaly (resolved) or a false positive; also confirms an auto-resolved one."""
        with self.engine.begin() as conn:
            case = _locked_case(conn, key)
            status = FALSE_POSITIVE if false_positive else RESOLVED
            if not (case.status in ACTIVE or case.auto_resolved):
                refused = f"case {key} was already closed as {case.status} by a person"
                self._reject(conn, case, f"close as {status}", actor, note, refused)
            else:
                changes = {"status": status, "auto_resolved": False, "resolved_at": case.resolved_at or self.clock()}
                self._update(conn, case, changes)
                self._record(conn, key, case.status, status, actor, note, RESOLVED_EVENT)
                self._settle_site(conn, key, actor, note)
                return _case(conn, key)
        raise CaseStateError(refused)  # after the rejection's history row is committed

    # -- site incidents

    def _join_site(self, conn: sa.Connection, case: Case) -> tuple[SiteIncident, list[Case]] | None:
        """Link a new case to its site's open incident, or open one with the site's recent cases
        (module docstring). The incident and the cases newly linked besides its anchor, or None."""
        if case.site_id is None:
            return None
        if conn.dialect.name == "postgresql":
            # Serialise the site's linking: two cases opening at once would each miss the other.
            conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(:namespace, :site)"),
                {"namespace": _SITE_LOCK, "site": zlib.crc32(case.site_id.encode()) - 2**31},
            )
        window, start = self.policy.site_window, case.incident_start
        row = conn.execute(
            sa.select(site_incidents)
            .where(
                site_incidents.c.site_id == case.site_id,
                site_incidents.c.status == OPEN,
                site_incidents.c.first_start <= start + window,
                site_incidents.c.last_start >= start - window,
            )
            .order_by(site_incidents.c.last_start.desc())
            .limit(1)
            .with_for_update()
        ).first()
        if row is not None:
            return self._link(conn, row.site_incident_key, [case])
        # The site's active unlinked cases chained to this one by starts at most the window apart: the
        # same span rule as joining, so the grouping does not depend on which case opened last.
        candidates = [
            Case(**r._mapping)
            for r in conn.execute(
                sa.select(cases)
                .where(
                    cases.c.site_id == case.site_id,
                    cases.c.site_incident_key.is_(None),
                    cases.c.status.in_(ACTIVE),
                    cases.c.case_key != case.case_key,
                )
                .order_by(cases.c.opened_at, cases.c.incident_start, cases.c.case_key)
                .with_for_update()
            )
        ]
        others, first, last = [], start, start
        grew = True
        while grew:
            grew = False
            for other in candidates:
                if other not in others and first - window <= other.incident_start <= last + window:
                    others.append(other)
                    first, last = min(first, other.incident_start), max(last, other.incident_start)
                    grew = True
        others.sort(key=lambda c: (c.opened_at, c.incident_start, c.case_key))
        if not others or len({c.device_id for c in others} | {case.device_id}) < self.policy.site_min_devices:
            return None
        anchor, now = others[0], self.clock()
        key = site_incident_key(case.site_id, anchor)
        conn.execute(
            sa.insert(site_incidents).values(
                site_incident_key=key,
                site_id=case.site_id,
                anchor_case_key=anchor.case_key,
                status=OPEN,
                first_start=anchor.incident_start,
                last_start=anchor.incident_start,
                opened_at=now,
                updated_at=now,
                resolved_at=None,
            )
        )
        conn.execute(sa.update(cases).where(cases.c.case_key == anchor.case_key).values(site_incident_key=key))
        return self._link(conn, key, [*others[1:], case])

    def _link(self, conn: sa.Connection, key: str, linking: list[Case]) -> tuple[SiteIncident, list[Case]]:
        conn.execute(
            sa.update(cases).where(cases.c.case_key.in_([c.case_key for c in linking])).values(site_incident_key=key)
        )
        incident = _site_incident(conn, key)
        starts = [incident.first_start, incident.last_start, *(c.incident_start for c in linking)]
        conn.execute(
            sa.update(site_incidents)
            .where(site_incidents.c.site_incident_key == key)
            .values(first_start=min(starts), last_start=max(starts), updated_at=self.clock())
        )
        return _site_incident(conn, key), linking

    def _enqueue_linked(self, conn: sa.Connection, incident: SiteIncident, linked: list[Case]) -> None:
        now = self.clock()
        for case in linked:
            payload = site_payload(_case(conn, case.case_key), incident, SITE_LINKED, DETECTOR, None, now)
            self._enqueue(conn, incident.anchor_case_key, SITE_LINKED, payload, self._subscribed(SITE_LINKED))

    def _settle_site(self, conn: sa.Connection, key: str, actor: str, note: str | None) -> None:
        """Resolve the case's site incident once none of its cases is active (after a case closed)."""
        case = _case(conn, key)
        if case.site_incident_key is None:
            return
        incident = conn.execute(
            sa.select(site_incidents)
            .where(site_incidents.c.site_incident_key == case.site_incident_key)
            .with_for_update()
        ).first()
        if incident.status != OPEN:
            return
        linked = conn.execute(
            sa.select(cases.c.status, cases.c.resolved_at).where(cases.c.site_incident_key == case.site_incident_key)
        ).all()
        if any(status in ACTIVE for status, _ in linked):
            return
        now = self.clock()
        resolved_at = max(at for _, at in linked if at is not None)  # event times: a re-run ends it the same
        conn.execute(
            sa.update(site_incidents)
            .where(site_incidents.c.site_incident_key == case.site_incident_key)
            .values(status=RESOLVED, resolved_at=resolved_at, updated_at=now)
        )
        incident = _site_incident(conn, case.site_incident_key)
        payload = site_payload(_case(conn, incident.anchor_case_key), incident, SITE_RESOLVED, actor, note, now)
        self._enqueue(conn, incident.anchor_case_key, SITE_RESOLVED, payload, self._subscribed(SITE_RESOLVED))

    # -- writing

    def _reject(self, conn: sa.Connection, case: Case, attempted: str, actor: str, note: str | None, why: str) -> None:
        """A history row for an action the lifecycle refused: the case stays as it is (from and to the
        same status is not a change, so ``to_status`` says rejected), no outbox event goes out, and the
        note says what was attempted and why it was refused, with the operator's own note."""
        said = f" (note: {note})" if note else ""
        conn.execute(
            sa.insert(case_history).values(
                case_key=case.case_key,
                at=self.clock(),
                from_status=case.status,
                to_status=REJECTED,
                actor=actor,
                note=f"rejected {attempted}: {why}{said}",
            )
        )

    def _update(self, conn: sa.Connection, case: Case, changes: dict[str, Any]) -> bool:
        """Write the fields that differ; False when none do."""
        changes = {k: v for k, v in changes.items() if getattr(case, k) != v}
        if not changes:
            return False
        conn.execute(_UPDATE_CASE, {"b_case_key": case.case_key, **changes, "updated_at": self.clock()})
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
        sinks = self._subscribed(event)
        if not sinks:
            return
        case = _case(conn, key)
        if case.site_incident_key and self.paging & set(sinks):
            status, anchor = conn.execute(
                sa.select(site_incidents.c.status, site_incidents.c.anchor_case_key).where(
                    site_incidents.c.site_incident_key == case.site_incident_key
                )
            ).one()
            if status == OPEN and anchor != key:  # the anchor's page stands for the site incident
                sinks = [sink for sink in sinks if sink not in self.paging]
        self._enqueue(conn, key, event, event_payload(case, event, actor, note, now), sinks)

    def _subscribed(self, event: str) -> list[str]:
        return [name for name, events in self.subscriptions.items() if event in events]

    def _enqueue(self, conn: sa.Connection, key: str, event: str, payload: dict[str, Any], sinks: list[str]) -> None:
        """One outbox row per sink, in the stream of case ``key``."""
        if not sinks:
            return
        now = self.clock()
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
        "site_incident": case.site_incident_key,
        "actor": actor,
        "note": note,
        "at": at.isoformat(),
    }


def site_payload(
    case: Case, incident: SiteIncident, event: str, actor: str, note: str | None, at: datetime
) -> dict[str, Any]:
    """A site incident event: the case it is about (the linked one, or the anchor) and the incident."""
    return {
        **event_payload(case, event, actor, note, at),
        "site": {
            "key": incident.site_incident_key,
            "site_id": incident.site_id,
            "anchor_case_key": incident.anchor_case_key,
            "status": incident.status,
            "first_start": incident.first_start.isoformat(),
            "last_start": incident.last_start.isoformat(),
            "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
            "case_keys": list(incident.case_keys),
            "devices": list(incident.devices),
        },
    }


def _case(conn: sa.Connection, key: str) -> Case | None:
    row = conn.execute(sa.select(cases).where(cases.c.case_key == key)).first()
    return Case(**row._mapping) if row else None


def _linked(conn: sa.Connection, keys: list[str]) -> dict[str, list[tuple[str, str]]]:
    """(case key, device) of the cases linked to each site incident, by incident start."""
    linked: dict[str, list[tuple[str, str]]] = {}
    if not keys:
        return linked
    rows = conn.execute(
        sa.select(cases.c.site_incident_key, cases.c.case_key, cases.c.device_id)
        .where(cases.c.site_incident_key.in_(keys))
        .order_by(cases.c.incident_start, cases.c.case_key)
    )
    for incident, key, device in rows:
        linked.setdefault(incident, []).append((key, device))
    return linked


def _with_cases(row: sa.Row, linked: list[tuple[str, str]]) -> SiteIncident:
    devices = tuple(dict.fromkeys(device for _, device in linked))
    return SiteIncident(**row._mapping, case_keys=tuple(key for key, _ in linked), devices=devices)


def _site_incident(conn: sa.Connection, key: str) -> SiteIncident | None:
    row = conn.execute(sa.select(site_incidents).where(site_incidents.c.site_incident_key == key)).first()
    return _with_cases(row, _linked(conn, [key]).get(key, [])) if row else None


def _locked_case(conn: sa.Connection, key: str) -> Case:
    row = conn.execute(sa.select(cases).where(cases.c.case_key == key).with_for_update()).first()
    if row is None:
        raise CaseNotFound(key)
    return Case(**row._mapping)
