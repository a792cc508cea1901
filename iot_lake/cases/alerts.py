"""Alerts about the platform itself: a failed run, a failed data-quality check.

They reach people through the cases' sinks and outbox (SNS, EventBridge, Incident Manager and
CloudWatch in prod, the log and JSON-lines file locally, a webhook in either), with the same
retries and backoff. An alert has a key naming what it is about (the run, the check evaluation);
raising the same key again changes nothing, so whoever raises alerts may see the same failure
any number of times and people are told once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from iot_lake.cases.model import ALERT, utc
from iot_lake.cases.schema import alert_outbox, alerts
from iot_lake.cases.store import CaseStore

RUN_FAILURE, CHECK_FAILURE = "run_failure", "check_failure"
ERROR, WARNING = "error", "warning"
MAX_MESSAGE = 4000  # an error message with its stack can be long; sinks have size limits


@dataclass(frozen=True)
class Alert:
    key: str  # e.g. run_failure|<run id>, check_failure|<run id>|<event storage id>
    kind: str  # RUN_FAILURE or CHECK_FAILURE
    severity: str  # ERROR or WARNING
    title: str
    message: str
    run_id: str
    job: str
    url: str  # the run in the Dagster UI
    at: datetime
    step: str | None = None  # the failing step(s) of a run
    asset: str | None = None
    check: str | None = None
    partition: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """What sinks receive (JSON-ready); ``kind`` "alert" tells it from a case event."""
        body = {k: v for k, v in asdict(self).items() if k not in ("key", "kind", "at")}
        return {
            "kind": ALERT,
            "event": ALERT,
            "alert_key": self.key,
            "alert_kind": self.kind,
            **body,
            "message": self.message[:MAX_MESSAGE],
            "at": utc(self.at).isoformat(),
        }


def run_failure_key(run_id: str) -> str:
    return f"{RUN_FAILURE}|{run_id}"


def check_failure_key(run_id: str, storage_id: int) -> str:
    return f"{CHECK_FAILURE}|{run_id}|{storage_id}"


def raise_alert(store: CaseStore, alert: Alert) -> bool:
    """Record the alert and one outbox row per subscribed sink, in one transaction; False (and
    nothing written) when an alert of the same key was raised before."""
    now = store.clock()
    payload = alert.payload()
    sinks = [name for name, events in store.subscriptions.items() if ALERT in events]
    try:
        with store.engine.begin() as conn:
            if conn.execute(sa.select(alerts.c.alert_key).where(alerts.c.alert_key == alert.key)).first():
                return False
            conn.execute(
                sa.insert(alerts).values(
                    alert_key=alert.key,
                    kind=alert.kind,
                    severity=alert.severity,
                    title=alert.title[:300],
                    payload=payload,
                    raised_at=now,
                )
            )
            if sinks:
                conn.execute(
                    sa.insert(alert_outbox),
                    [
                        {
                            "alert_key": alert.key,
                            "event": ALERT,
                            "payload": payload,
                            "sink": sink,
                            "attempts": 0,
                            "next_attempt_at": now,
                        }
                        for sink in sinks
                    ],
                )
    except sa.exc.IntegrityError:
        return False  # raised concurrently by another process: the primary key let one of them in
    return True


def list_alerts(store: CaseStore) -> list[dict[str, Any]]:
    """Every alert raised, oldest first, as its payload."""
    with store.engine.connect() as conn:
        return [
            row.payload
            for row in conn.execute(sa.select(alerts.c.payload).order_by(alerts.c.raised_at, alerts.c.alert_key))
        ]
