"""Alerts on failed runs and failed data-quality checks, through the cases' sinks and outbox.

``run_failure_alerts`` (a run failure sensor) raises one alert per failed run, naming its failing
steps and their errors. ``check_failure_alerts`` reads the check evaluations of runs that ended
since its cursor and raises one alert per ERROR-severity failure (WARN failures, such as the
simulator's unreadable landing objects, are in the UI and not paged). Each alert links to its
run in the UI (``IOT_LAKE_UI_URL``). Its key names the run, or the run and the evaluation's event
storage id, so a re-evaluated tick, a reset cursor or a second daemon raises nothing twice
(iot_lake.cases.alerts). Both deliver the outbox: the check sensor ticks every 30 s whatever
happens, which is what retries an alert (or case event) a sink refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from dagster import (
    AssetCheckSeverity,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DefaultSensorStatus,
    RunFailureSensorContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from iot_lake.cases.alerts import (
    CHECK_FAILURE,
    ERROR,
    RUN_FAILURE,
    Alert,
    check_failure_key,
    raise_alert,
    run_failure_key,
)
from iot_lake.cases.outbox import DeliveryReport, deliver_pending
from lib.check_evaluations import ENDED, EndedRunsCursor, ended_runs, evaluations_of_run, plain, run_partition
from resources.cases import CasesResource

RUNS_PER_TICK = 100


def run_url(ui_url: str, run_id: str) -> str:
    return f"{ui_url.rstrip('/')}/runs/{run_id}"


def run_failure_alert(
    run: DagsterRun, failure: DagsterEvent, step_failures: Sequence[DagsterEvent], ui_url: str
) -> Alert:
    steps = [e.step_key for e in step_failures if e.step_key]
    errors = [f"{e.step_key}: {_error(e)}" for e in step_failures]
    partition = run_partition(run)
    where = f" ({partition})" if partition else ""
    return Alert(
        key=run_failure_key(run.run_id),
        kind=RUN_FAILURE,
        severity=ERROR,
        title=f"run failed: {run.job_name}{where}" + (f" at {', '.join(steps)}" if steps else ""),
        message="\n".join(errors) or (failure.message or "run failed"),
        run_id=run.run_id,
        job=run.job_name,
        url=run_url(ui_url, run.run_id),
        at=datetime.now(UTC),
        step=", ".join(steps) or None,
        partition=partition,
        details={"run_failure": failure.message, "steps": {e.step_key: _error(e) for e in step_failures}},
    )


def _error(event: DagsterEvent) -> str:
    error = getattr(event.event_specific_data, "error", None)
    if error is None:
        return event.message or "failed"
    while error.cause is not None:  # Dagster wraps user code's error: that one says what went wrong
        error = error.cause
    return error.message.strip()


def check_failure_alerts_of_run(instance: DagsterInstance, run: DagsterRun, ui_url: str) -> list[Alert]:
    alerts = []
    for found in evaluations_of_run(instance, run.run_id):
        record, evaluation = found.record, found.evaluation
        if evaluation.passed:
            continue
        if evaluation.severity != AssetCheckSeverity.ERROR:
            continue
        asset, check = evaluation.asset_key.to_user_string(), evaluation.check_name
        partition = evaluation.partition or run_partition(run)
        metadata = {k: plain(v) for k, v in evaluation.metadata.items()}
        alerts.append(
            Alert(
                key=check_failure_key(run.run_id, record.storage_id),
                kind=CHECK_FAILURE,
                severity=ERROR,
                title=f"check failed: {asset} {check}" + (f" ({partition})" if partition else ""),
                message=evaluation.description
                or _summary(metadata)
                or f"{check} on {asset} failed with ERROR severity",
                run_id=run.run_id,
                job=run.job_name,
                url=run_url(ui_url, run.run_id),
                at=datetime.fromtimestamp(record.event_log_entry.timestamp, UTC),
                step=record.event_log_entry.step_key,
                asset=asset,
                check=check,
                partition=partition,
                details={"metadata": metadata},
            )
        )
    return alerts


def _summary(metadata: dict) -> str:
    """The check's small metadata values, as a line (tables and Markdown stay in the UI)."""
    return ", ".join(f"{k}={v}" for k, v in metadata.items() if not (isinstance(v, str) and len(v) > 80))


def _raise_and_deliver(cases: CasesResource, alerts: Sequence[Alert], log) -> tuple[int, DeliveryReport]:
    with cases.store() as store:
        raised = 0
        for alert in alerts:
            if raise_alert(store, alert):
                raised += 1
                log.info(f"alert raised: {alert.title} ({alert.url})")
        report = deliver_pending(store, cases.sinks(), datetime.now(UTC))
    if report.failed:
        log.warning(f"{report.failed} alert or case deliveries failed, retried later: {report.errors[:5]}")
    return raised, report


@run_failure_sensor(
    name="run_failure_alerts",
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Every failed run -> one alert (job, failing steps, errors, link to the run) through the case sinks.",
)
def run_failure_alerts(context: RunFailureSensorContext, cases: CasesResource) -> None:
    alert = run_failure_alert(
        context.dagster_run, context.failure_event, context.get_step_failure_events(), cases.ui_url
    )
    _raise_and_deliver(cases, [alert], context.log)


def _latest(instance: DagsterInstance, event_type: DagsterEventType) -> int:
    records = instance.fetch_run_status_changes(event_type, limit=1, ascending=False).records
    return records[0].storage_id if records else -1


@sensor(
    name="check_failure_alerts",
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Every ERROR-severity asset check failure -> one alert through the case sinks; retries deliveries.",
)
def check_failure_alerts(context: SensorEvaluationContext, cases: CasesResource) -> SensorResult:
    instance = context.instance
    cursor = EndedRunsCursor.parse(context.cursor)
    if cursor is None:  # a new sensor starts from now, not from every failure in the instance's history
        cursor = EndedRunsCursor({t.value: _latest(instance, t) for t in ENDED})
    alerts, runs = [], 0
    for run in ended_runs(instance, cursor, limit=RUNS_PER_TICK):
        runs += 1
        alerts += check_failure_alerts_of_run(instance, run, cases.ui_url)
    raised, report = _raise_and_deliver(cases, alerts, context.log)
    summary = (
        f"{runs} ended runs, {raised} new check failure alerts, {report.delivered} deliveries, {report.failed} failed"
    )
    return SensorResult(cursor=str(cursor), skip_reason=None if raised else SkipReason(summary))
