"""Delivering the outbox: each due row to its sink, with exponential backoff for failures.

A row is never dropped: a failure records the attempt, the error and when to try next, and the
row waits. Per sink, a case's events go out in order: while one waits, the case's later events
for that sink wait behind it. A row is claimed (its next attempt pushed a lease ahead) before
its sink is called, so two deliverers never send it at once, and one that dies mid-delivery
only delays it by the lease. Alerts (iot_lake.cases.alerts) have an outbox of their own, delivered
the same way.

What a sink returns on delivery (a receipt: Incident Manager's incident ARN) is kept on the row; a
site incident event, written to its anchor case's stream, is handed the latest receipt of that
sink and stream, which the stream's order guarantees is there once the anchor's page went out.

Incident Manager with ``link_alarm_incidents`` may instead return the ARN of the series' alarm it
drove into ALARM (iot_lake.cases.sinks): each delivery first puts such cases on the incident the
alarm's action started, once it is open, and keeps that incident's ARN as the row's receipt.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from iot_lake.cases.model import ALERT, SITE_EVENTS, utc
from iot_lake.cases.schema import alert_outbox, outbox
from iot_lake.cases.sinks import IncidentManagerSink, OutboxEvent, Sink
from iot_lake.cases.store import CaseStore

FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY = timedelta(hours=1)
LEASE = timedelta(minutes=5)


def retry_delay(attempts: int) -> timedelta:
    """After the n-th failed attempt: 30 s, 1 min, 2 min, ... capped at an hour."""
    return min(FIRST_RETRY * 2 ** (attempts - 1), MAX_RETRY)


@dataclass
class DeliveryReport:
    delivered: int = 0
    failed: int = 0
    waiting: int = 0  # not due yet, or behind an earlier event of the same case and sink
    linked: int = 0  # cases put on the incident their series' alarm started (link_alarm_incidents)
    errors: list[str] = field(default_factory=list)


def deliver_pending(store: CaseStore, sinks: Iterable[Sink], now: datetime) -> DeliveryReport:
    """Send the due rows of the case outbox and of the alert outbox (iot_lake.cases.alerts)."""
    by_name = {sink.name: sink for sink in sinks}
    now = utc(now)
    report = DeliveryReport()
    for sink in by_name.values():
        if isinstance(sink, IncidentManagerSink) and sink.link_alarm_incidents:
            link_alarm_incidents(store, sink, report)
    for table, key_column, kind in ((outbox, "case_key", "case"), (alert_outbox, "alert_key", ALERT)):
        _deliver(store, by_name, now, report, table, key_column, kind)
    return report


def _deliver(
    store: CaseStore,
    by_name: dict[str, Sink],
    now: datetime,
    report: DeliveryReport,
    table: sa.Table,
    key_column: str,
    kind: str,
) -> None:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                table.c.id,
                table.c[key_column].label("key"),
                table.c.event,
                table.c.payload,
                table.c.sink,
                table.c.attempts,
                table.c.next_attempt_at,
            )
            .where(table.c.delivered_at.is_(None), table.c.sink.in_(by_name))
            .order_by(table.c.id)
        ).all()
    held: set[tuple[str, str]] = set()  # (sink, case) whose earlier event has not gone out
    for row in rows:
        stream = (row.sink, row.key)
        if stream in held or row.next_attempt_at > now or not _claim(store, table, row.id, now):
            held.add(stream)
            report.waiting += 1
            continue
        receipt = _receipt(store, table, key_column, row) if row.event in SITE_EVENTS else None
        event = OutboxEvent(
            id=row.id, case_key=row.key, event=row.event, payload=row.payload, kind=kind, receipt=receipt
        )
        try:
            answer = by_name[row.sink].deliver(event)
        except Exception as exc:  # any failure of a sink is retried, whatever raised it
            held.add(stream)
            report.failed += 1
            report.errors.append(f"{row.sink} {row.event} {row.key}: {exc}")
            _finish(
                store,
                table,
                row.id,
                attempts=row.attempts + 1,
                next_attempt_at=now + retry_delay(row.attempts + 1),
                last_error=f"{type(exc).__name__}: {exc}"[:2000],
            )
        else:
            report.delivered += 1
            answer = answer if isinstance(answer, str) else None  # a receipt, or nothing to keep
            _finish(store, table, row.id, attempts=row.attempts + 1, delivered_at=now, last_error=None, receipt=answer)


ALARM_RECEIPT = "arn:aws:cloudwatch:%:alarm:%"


def link_alarm_incidents(store: CaseStore, sink: IncidentManagerSink, report: DeliveryReport) -> None:
    """Each delivered case event whose receipt is an alarm's ARN, on the open incident that alarm
    started, if it has: the receipt becomes the incident's ARN, so the case is linked once. A
    failure is reported and retried by the next delivery, like a sink's."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(outbox.c.id, outbox.c.case_key, outbox.c.event, outbox.c.payload, outbox.c.receipt).where(
                outbox.c.sink == sink.name,
                outbox.c.delivered_at.is_not(None),
                outbox.c.receipt.like(ALARM_RECEIPT),
            )
        ).all()
    if not rows:
        return  # no call to Incident Manager
    try:
        incidents = sink.alarm_incidents()
        for row in rows:
            incident = incidents.get(row.receipt.split(":alarm:", 1)[1])
            if incident is None:
                continue  # the alarm's incident has not started yet
            sink.link_case(
                OutboxEvent(id=row.id, case_key=row.case_key, event=row.event, payload=row.payload), incident
            )
            _finish(store, outbox, row.id, receipt=incident)
            report.linked += 1
    except Exception as exc:  # noqa: BLE001 - reported, retried by the next delivery
        report.errors.append(f"{sink.name} linking alarm incidents: {exc}")


def _receipt(store: CaseStore, table: sa.Table, key_column: str, row: sa.Row) -> str | None:
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(table.c.receipt)
            .where(
                table.c.sink == row.sink,
                table.c[key_column] == row.key,
                table.c.id < row.id,
                table.c.delivered_at.is_not(None),
                table.c.receipt.is_not(None),
            )
            .order_by(table.c.id.desc())
            .limit(1)
        ).scalar()


def _claim(store: CaseStore, table: sa.Table, row_id: int, now: datetime) -> bool:
    with store.engine.begin() as conn:
        claimed = conn.execute(
            sa.update(table)
            .where(table.c.id == row_id, table.c.delivered_at.is_(None), table.c.next_attempt_at <= now)
            .values(next_attempt_at=now + LEASE)
        )
    return claimed.rowcount == 1


def _finish(store: CaseStore, table: sa.Table, row_id: int, **values) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.id == row_id).values(**values))
