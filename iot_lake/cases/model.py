"""What the case store speaks: deviations in, cases and events out, and the policy in between."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from iot_lake.ids import validate_id

OPEN, ACKNOWLEDGED, RESOLVED, FALSE_POSITIVE = "open", "acknowledged", "resolved", "false_positive"
STATUSES = (OPEN, ACKNOWLEDGED, RESOLVED, FALSE_POSITIVE)
# A history entry's to_status for an action a person attempted and the lifecycle refused (the case
# unchanged): two operators acting at once both leave a trace, the loser's as rejected.
REJECTED = "rejected"
ACTIVE = (OPEN, ACKNOWLEDGED)

SEVERITIES = ("info", "warning", "critical")  # in rising order: a case's severity only ever rises

# Outbox event types. "updated" is a severity escalation; new points that change nothing else
# only update the case row, so sinks are not paged once per reading.
OPENED, UPDATED, REOPENED = "opened", "updated", "reopened"
ACKNOWLEDGED_EVENT, RESOLVED_EVENT = "acknowledged", "resolved"
EVENTS = frozenset({OPENED, UPDATED, ACKNOWLEDGED_EVENT, RESOLVED_EVENT, REOPENED})

# Site incident events, written to the outbox stream of the site incident's anchor case (the case
# whose page is already out), so per sink they go out after that page and can refer to it.
SITE_LINKED, SITE_RESOLVED = "site_linked", "site_resolved"
SITE_EVENTS = frozenset({SITE_LINKED, SITE_RESOLVED})

# An alert about the platform (iot_lake.cases.alerts) rather than a case; sinks subscribe to it too.
ALERT = "alert"

DETECTOR = "detector"  # the actor of history rows written by observe()
AUTO_RESOLVE = "auto-resolve"


def utc(value: datetime) -> datetime:
    """An aware UTC datetime; naive ones are taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Deviation:
    """One scored point of a series, as a detector hands it to ``CaseStore.observe``."""

    device_id: str
    metric: str
    site_id: str | None
    ts: datetime
    actual: float | None  # None: the series fell silent (a mark of iot_lake.detect.silence)
    expected_lo: float | None  # None: no forecast band for the point (the detector's own channels)
    expected_hi: float | None
    score: float
    is_anomalous: bool


@dataclass(frozen=True)
class CasePolicy:
    resolve_after: timedelta = timedelta(minutes=30)  # back in band this long: auto-resolve
    reopen_within: timedelta = timedelta(hours=2)  # a relapse this soon after an auto-resolve reopens
    warning_score: float = 3.0  # severity thresholds on the case's max score
    critical_score: float = 6.0
    # Cases of one site starting this close together are one site incident (weather, a shared feed)
    # once they come from this many distinct devices.
    site_window: timedelta = timedelta(minutes=15)
    site_min_devices: int = 2

    def severity(self, score: float) -> str:
        if score >= self.critical_score:
            return "critical"
        return "warning" if score >= self.warning_score else "info"


@dataclass(frozen=True)
class Case:
    case_key: str
    device_id: str
    metric: str
    site_id: str | None
    incident_start: datetime
    last_seen: datetime
    back_in_band_since: datetime | None  # first in-band point after last_seen, once seen
    severity: str
    status: str
    auto_resolved: bool
    evidence: dict[str, Any]
    opened_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    reopen_count: int
    site_incident_key: str | None = None  # the site incident the case is linked to, if any

    def period(self) -> tuple[datetime, datetime]:
        """[start, end) of the excursion: the incident start to the first in-band point after the
        last anomalous one or, before one was seen, just after the last anomalous point."""
        return self.incident_start, self.back_in_band_since or self.last_seen + JUST_AFTER


JUST_AFTER = timedelta(microseconds=1)  # period ends are exclusive; Delta and pandas keep microseconds


@dataclass(frozen=True)
class SiteIncident:
    """Cases of several devices of one site that started within ``site_window`` of each other."""

    site_incident_key: str  # site_id|anchor start|anchor device|anchor metric
    site_id: str
    anchor_case_key: str  # the first case, whose page stands for the site incident
    status: str  # OPEN until every linked case is closed, then RESOLVED
    first_start: datetime  # earliest and latest incident start of the linked cases
    last_start: datetime
    opened_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    case_keys: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()


def site_incident_key(site_id: str, anchor: Case) -> str:
    # Named by its anchor: unique (a case is in one site incident at most) and it tells the page.
    # Not the case key as a substring, so searching for a case key finds the case, not its incident.
    start = utc(anchor.incident_start).isoformat()
    return f"{validate_id('site', site_id)}|{start}|{anchor.device_id}|{anchor.metric}"


@dataclass(frozen=True)
class HistoryEntry:
    case_key: str
    at: datetime
    from_status: str | None
    to_status: str
    actor: str
    note: str | None


@dataclass(frozen=True)
class Outcome:
    """What ``observe`` did with a point: opened, updated, reopened, resolved, unchanged or ignored."""

    action: str
    case_key: str | None = None


def case_key(device_id: str, metric: str, incident_start: datetime) -> str:
    # '|' separates the parts, and the ids end up in alarm names and incident titles.
    return f"{validate_id('device', device_id)}|{validate_id('metric', metric)}|{utc(incident_start).isoformat()}"


def start_evidence(d: Deviation) -> dict[str, Any]:
    ts = utc(d.ts).isoformat()
    return {
        "window_start": ts,
        "window_end": ts,
        "expected_lo": d.expected_lo,
        "expected_hi": d.expected_hi,
        "max_score": d.score,
        "actual_values": [[ts, d.actual]],
    }


MAX_EVIDENCE_VALUES = 100  # the latest anomalous values kept; a case can last days


def merge_evidence(evidence: dict[str, Any], d: Deviation) -> dict[str, Any]:
    """The evidence with one more anomalous point; merging the same point twice changes nothing."""
    ts = utc(d.ts).isoformat()
    values = dict(map(tuple, evidence["actual_values"]))
    values[ts] = d.actual
    by_time = datetime.fromisoformat  # ISO strings with and without microseconds do not sort as text
    latest = sorted(values, key=by_time)[-MAX_EVIDENCE_VALUES:]
    merged = {
        **evidence,
        "window_start": min(evidence["window_start"], ts, key=by_time),
        "window_end": max(evidence["window_end"], ts, key=by_time),
        "actual_values": [[t, values[t]] for t in latest],
    }
    if d.score > evidence["max_score"]:  # the band shown is the one the worst point broke
        merged.update(max_score=d.score, expected_lo=d.expected_lo, expected_hi=d.expected_hi)
    return merged


def points_to_observe(
    times: list[datetime],
    anomalous: list[bool],
    resolve_after: timedelta,
    active: bool = False,
    back_in_band_since: datetime | None = None,
) -> list[bool]:
    """Which of a series' scored points (in time order) can change its cases, so a detector need not
    hand the store every point of a long range: anomalous points, the series' first point, the
    first point back in band after an anomalous one (it starts the in-band clock, or marks where a
    closed excursion ended) and, while a case may be active (``active`` at the start of the range,
    or after an anomalous point), the first point ``resolve_after`` after the clock started (it
    auto-resolves).  ``back_in_band_since``: the active case's clock at the start, if running."""
    keep = [False] * len(times)
    tracking, since, previous = active, back_in_band_since if active else None, False
    for i, (t, flagged) in enumerate(zip(times, anomalous)):
        if flagged:
            keep[i], tracking, since = True, True, None
        elif i == 0 or previous or (tracking and since is None):
            keep[i] = True
            since = since or t
        elif tracking and t - since >= resolve_after:
            keep[i], tracking = True, False
        previous = flagged
    return keep
