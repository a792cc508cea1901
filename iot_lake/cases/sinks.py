"""Where case events (and alerts, iot_lake.cases.alerts) go, per environment: locally a log, a
JSON-lines file and optionally a webhook; in prod CloudWatch and SNS, optionally EventBridge,
Incident Manager and a webhook.

A sink's ``deliver`` raises when the event did not get through; the outbox then retries it later.
Delivery is at least once: every event carries ``event_id`` (the outbox row's id; for an alert,
its key), by which a consumer can drop a repeat. A sink may return a receipt (Incident Manager:
the incident's ARN), which the outbox keeps and hands to later events of the same stream. AWS
clients are created on first use, so building the sinks (at definitions load, in the CLI) needs
no credentials.

Sinks with ``pages = True`` (Incident Manager, SNS) page people: they get one page per site
incident, then site events instead of the other linked cases' events (iot_lake.cases.store).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from iot_lake.cases.model import (
    ACTIVE,
    ALERT,
    EVENTS,
    OPENED,
    REOPENED,
    SITE_EVENTS,
    SITE_LINKED,
    SITE_RESOLVED,
    CasePolicy,
)
from iot_lake.detect.metrics import alarm_name
from iot_lake.ids import validate_id
from iot_lake.settings import Settings

JSONL_KEY = "cases/_events/events.jsonl"  # under a local lake root
CLOUDWATCH_NAMESPACE = "IoTLake/Cases"
ALERTS_NAMESPACE = "IoTLake/Alerts"
# A case's max score: band standard deviations, so not named DeviationScore (iot_lake.detect.metrics).
CASE_SCORE_METRIC = "CaseMaxResidual"
CASE_ALARM_PREFIX = "iot-lake-case-"  # case_alarm_name
EVENT_SOURCE = "iot-lake.cases"
ALERT_SOURCE = "iot-lake.alerts"
# Incident Manager: 1 critical .. 5 no impact. Alerts: "error" (a failed run or ERROR check), "warning".
INCIDENT_IMPACT = {"critical": 1, "error": 2, "warning": 3, "info": 4}

logger = logging.getLogger("iot_lake.cases")


@dataclass(frozen=True)
class OutboxEvent:
    id: int
    case_key: str  # for an alert, its key
    event: str
    payload: dict[str, Any]
    kind: str = "case"  # or ALERT
    receipt: str | None = None  # of this sink's latest delivered event with one in the same stream

    @property
    def is_alert(self) -> bool:
        return self.kind == ALERT

    def document(self) -> dict[str, Any]:
        # An alert's key is its identity in every sink (alert outbox ids would repeat case ones).
        return {"event_id": self.case_key if self.is_alert else self.id, **self.payload}

    def json(self) -> str:
        return json.dumps(self.document(), sort_keys=True)


class Sink(ABC):
    name: str
    events: frozenset[str] = EVENTS | SITE_EVENTS | {ALERT}  # the outbox only gets rows for these
    pages = False  # True: one page per site incident (module docstring)

    @abstractmethod
    def deliver(self, event: OutboxEvent) -> str | None:
        """Send the event or raise; optionally return a receipt for the stream's later events."""


class LogSink(Sink):
    name = "log"

    def deliver(self, event: OutboxEvent) -> None:
        p = event.payload
        if event.is_alert:
            logger.error("alert %s: %s (%s) %s", p["alert_kind"], p["title"], p["url"], p["message"])
            return
        logger.info(
            "case %s %s: %s %s at %s, severity %s, status %s",
            event.event,
            event.case_key,
            p["device_id"],
            p["metric"],
            p["site_id"],
            p["severity"],
            p["status"],
        )


class JsonLinesSink(Sink):
    name = "jsonl"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def deliver(self, event: OutboxEvent) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(event.json() + "\n")


WEBHOOK_SECRET_VAR = "IOT_LAKE_CASES_WEBHOOK_SECRET"
SIGNATURE_HEADER = "X-IoT-Lake-Signature"


def webhook_signature(secret: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the exact body, so a receiver can tell the event came from us."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class WebhookSink(Sink):
    """POSTs each event as JSON (``requests``). A redirect is a failure, never followed: it could carry
    the event to another host. The whole exchange has one deadline (requests' timeout bounds each
    socket wait, not the total, so the answer is read under our own clock). With a secret (from the
    environment only, never resource config) the body is signed in ``X-IoT-Lake-Signature``."""

    name = "webhook"

    def __init__(self, url: str, timeout_s: float = 10.0, secret: str | None = None, session: Any = None):
        self.url, self.timeout_s = url, timeout_s
        self.secret = secret if secret is not None else os.environ.get(WEBHOOK_SECRET_VAR) or None
        self._session = session

    @property
    def session(self) -> Any:
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def deliver(self, event: OutboxEvent) -> None:
        body = event.json().encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.secret:
            headers[SIGNATURE_HEADER] = webhook_signature(self.secret, body)
        deadline = time.monotonic() + self.timeout_s
        with self.session.post(
            self.url, data=body, headers=headers, timeout=self.timeout_s, allow_redirects=False, stream=True
        ) as response:
            # The answer is ignored, but must arrive in time: read1 returns what each socket read
            # brings (iter_content would wait for whole chunks), so a trickling answer meets the clock.
            while response.raw.read1(8192):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"webhook answer took longer than {self.timeout_s:g} s")
            if 300 <= response.status_code < 400:
                raise RuntimeError(f"webhook answered a redirect ({response.status_code}), which is not followed")
            response.raise_for_status()


class _AwsSink(Sink):
    service: str

    def __init__(self, region: str | None = None, client: Any = None):
        self.region = region
        self._clients: dict[str, Any] = {} if client is None else {self.service: client}

    @property
    def client(self) -> Any:
        return self.aws_client(self.service)

    def aws_client(self, service: str) -> Any:
        """The sink's client of a service, made on first use (a sink that is never used calls nothing)."""
        if service not in self._clients:
            from iot_lake.aws import client

            self._clients[service] = client(service, self.region)
        return self._clients[service]


class CloudWatchSink(_AwsSink):
    """Per series (``DeviceId``, ``Metric``): ``CaseMaxResidual``, the case's max score (the residual
    in band standard deviations; not ``IotLake/Deviations``' ``DeviationScore`` in [0, 1]), and
    ``ActiveCase``, 1 while a case is open or acknowledged; a new or reopened case (re)defines the
    series' alarm on the score."""

    name, service = "cloudwatch", "cloudwatch"
    events = EVENTS | {ALERT}  # per series: the device cases' own events carry everything it sends

    def __init__(
        self,
        region: str | None = None,
        client: Any = None,
        policy: CasePolicy = CasePolicy(),
        alarm_actions: tuple[str, ...] = (),
    ):
        super().__init__(region, client)
        self.policy, self.alarm_actions = policy, alarm_actions

    def deliver(self, event: OutboxEvent) -> None:
        p = event.payload
        if event.is_alert:
            # A count per kind and job, for dashboards and alarms on failure rates.
            self.client.put_metric_data(
                Namespace=ALERTS_NAMESPACE,
                MetricData=[
                    {
                        "MetricName": "RunFailures" if p["alert_kind"] == "run_failure" else "CheckFailures",
                        "Dimensions": [{"Name": "Job", "Value": p["job"] or "none"}],
                        "Timestamp": datetime.fromisoformat(p["at"]),
                        "Value": 1.0,
                        "Unit": "Count",
                    }
                ],
            )
            return
        at, dimensions = datetime.fromisoformat(p["at"]), _dimensions(p["device_id"], p["metric"])
        self.client.put_metric_data(
            Namespace=CLOUDWATCH_NAMESPACE,
            MetricData=[
                {
                    "MetricName": CASE_SCORE_METRIC,
                    "Dimensions": dimensions,
                    "Timestamp": at,
                    "Value": float(p["evidence"]["max_score"]),
                    "Unit": "None",
                },
                {
                    "MetricName": "ActiveCase",
                    "Dimensions": dimensions,
                    "Timestamp": at,
                    "Value": 1.0 if p["status"] in ACTIVE else 0.0,
                    "Unit": "Count",
                },
            ],
        )
        if event.event in (OPENED, REOPENED):
            self.ensure_alarm(p["device_id"], p["metric"])

    def alarm_definition(self, device_id: str, metric: str) -> dict[str, Any]:
        """The ``put_metric_alarm`` arguments of a series' alarm: critical score within 5 minutes."""
        return {
            "AlarmName": case_alarm_name(device_id, metric),
            "AlarmDescription": f"Case residual of {device_id} {metric} at or above {self.policy.critical_score}",
            "Namespace": CLOUDWATCH_NAMESPACE,
            "MetricName": CASE_SCORE_METRIC,
            "Dimensions": _dimensions(device_id, metric),
            "Statistic": "Maximum",
            "Period": 300,
            "EvaluationPeriods": 1,
            "Threshold": self.policy.critical_score,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",  # scores are only sent on case events
            "AlarmActions": list(self.alarm_actions),
            "ActionsEnabled": bool(self.alarm_actions),
        }

    def ensure_alarm(self, device_id: str, metric: str) -> dict[str, Any]:
        """Create or update the series' alarm (``put_metric_alarm`` replaces one of the same name)."""
        definition = self.alarm_definition(device_id, metric)
        self.client.put_metric_alarm(**definition)
        return definition


def case_alarm_name(device_id: str, metric: str) -> str:
    """The case sink's own alarm of a series. Its prefix is not the stack's deviation alarms'
    (``alarm_name``): ``iot-lake-deviation-{device}-{metric}`` could be the name of one of those
    (device ``plant-a-pump-07`` = site ``plant-a``, device ``pump-07``), which ``put_metric_alarm``
    would replace, dropping its actions, and the Dagster role may only write this prefix."""
    return f"{CASE_ALARM_PREFIX}{validate_id('device', device_id)}-{validate_id('metric', metric)}"


def _dimensions(device_id: str, metric: str) -> list[dict[str, str]]:
    return [{"Name": "DeviceId", "Value": device_id}, {"Name": "Metric", "Value": metric}]


class IncidentManagerSink(_AwsSink):
    """A new or reopened case, or an alert, starts an incident; the client token makes a redelivery
    start none. A site incident's events become timeline events of its anchor case's incident.

    With ``link_alarm_incidents`` (the stack's deviation alarms, deploy/cdk), a case whose series has
    a stack alarm never starts an incident: it joins the open one the alarm started, or drives the
    alarm into ALARM so the alarm's action starts the one incident, and returns the alarm's ARN;
    ``iot_lake.cases.outbox.link_alarm_incidents`` later puts the case on that incident."""

    name, service = "incident-manager", "ssm-incidents"
    events = frozenset({OPENED, REOPENED, ALERT, *SITE_EVENTS})
    pages = True

    def __init__(
        self,
        response_plan_arn: str,
        region: str | None = None,
        client: Any = None,
        link_alarm_incidents: bool = False,
        cloudwatch: Any = None,
    ):
        super().__init__(region, client)
        self.response_plan_arn = response_plan_arn
        if cloudwatch is not None:
            self._clients["cloudwatch"] = cloudwatch
        # With the stack's deviation alarms (deploy/cdk): one incident per series whichever starts it.
        self.link_alarm_incidents = link_alarm_incidents

    def deliver(self, event: OutboxEvent) -> str | None:
        p = event.payload
        if event.event in SITE_EVENTS:
            return self._timeline_event(event)
        if self.link_alarm_incidents and not event.is_alert:
            return self._case_incident(event)
        if event.is_alert:
            return self.client.start_incident(
                clientToken=client_token(event.case_key, 0),
                responsePlanArn=self.response_plan_arn,
                title=p["title"][:200],
                impact=INCIDENT_IMPACT[p["severity"]],
                triggerDetails={
                    "source": ALERT_SOURCE,
                    "timestamp": datetime.fromisoformat(p["at"]),
                    "rawData": event.json()[:10_000],
                },
                relatedItems=[{"identifier": {"type": "OTHER", "value": {"url": p["url"]}}, "title": "Dagster run"}],
            )["incidentRecordArn"]
        return self._start_case_incident(event)

    @property
    def cloudwatch(self) -> Any:
        return self.aws_client("cloudwatch")

    def _start_case_incident(self, event: OutboxEvent, tag: str = "") -> str:
        p = event.payload
        title = f"{p['severity']}: {p['device_id']} {p['metric']} out of band at {p['site_id']}"
        return self.client.start_incident(
            clientToken=client_token(event.case_key, p["reopen_count"]),
            responsePlanArn=self.response_plan_arn,
            # The tag (the series' alarm name) ends the title, where fold_alarm_incidents reads it.
            title=title[: 200 - len(tag)] + tag,
            impact=INCIDENT_IMPACT[p["severity"]],
            triggerDetails={
                "source": EVENT_SOURCE,
                "timestamp": datetime.fromisoformat(p["at"]),
                "rawData": event.json()[:10_000],
            },
        )["incidentRecordArn"]

    def _case_incident(self, event: OutboxEvent) -> str:
        """The open incident the series' alarm started, with the case linked to it; else, when the
        stack has the series' alarm, that alarm set to ALARM (its action starts the one incident)
        and its ARN, for ``link_alarm_incidents``; else a new incident whose title carries the
        alarm's name (for the fold)."""
        p = event.payload
        alarm = alarm_name(p["site_id"], p["device_id"], p["metric"])
        started = self.alarm_incidents().get(alarm)
        if started is not None:
            self.link_case(event, started)
            return started
        stack_alarm = self.stack_alarm(alarm)
        # An alarm already in ALARM whose incident is closed acts again only after going back to
        # OK, so setting it would start nothing: the case starts its own (folded if it fires again).
        if stack_alarm is None or stack_alarm["StateValue"] == "ALARM":
            return self._start_case_incident(event, tag=f" [{alarm}]")
        self.cloudwatch.set_alarm_state(
            AlarmName=alarm,
            StateValue="ALARM",
            StateReason=f"iot-lake case {event.case_key} opened ({p['severity']})"[:1023],
        )
        return stack_alarm["AlarmArn"]

    def stack_alarm(self, alarm: str) -> dict[str, Any] | None:
        """The stack's alarm of that name if it starts incidents (one of its actions is a response
        plan); None if there is none, or it starts no incident."""
        for found in self.cloudwatch.describe_alarms(AlarmNames=[alarm], AlarmTypes=["MetricAlarm"])["MetricAlarms"]:
            actions = found.get("AlarmActions", []) if found.get("ActionsEnabled") else []
            if found["AlarmName"] == alarm and any(":ssm-incidents:" in a for a in actions):
                return found
        return None

    def alarm_incidents(self) -> dict[str, str]:
        """Alarm name -> ARN of the open incident that alarm started."""
        return {alarm: r["arn"] for r in self.open_incidents() if (alarm := _alarm_of(r))}

    def link_case(self, event: OutboxEvent, incident_arn: str) -> None:
        """The case's event on the incident the series' alarm started (the token: once per case)."""
        p = event.payload
        self.client.create_timeline_event(
            clientToken=client_token(event.case_key, p["reopen_count"]),
            incidentRecordArn=incident_arn,
            eventTime=datetime.fromisoformat(p["at"]),
            eventType="Custom Event",
            eventData=json.dumps(
                {
                    "summary": f"iot-lake case {event.event}: {p['device_id']} {p['metric']} ({p['severity']})",
                    "event_id": event.id,
                    "case_key": event.case_key,
                    "alarm": alarm_name(p["site_id"], p["device_id"], p["metric"]),
                },
                sort_keys=True,
            ),
        )

    def open_incidents(self) -> list[dict[str, Any]]:
        """Every open incident record's summary (all pages)."""
        records, kwargs = [], {"filters": [{"key": "status", "condition": {"equals": {"stringValues": ["OPEN"]}}}]}
        while True:
            page = self.client.list_incident_records(**kwargs)
            records += page.get("incidentRecordSummaries", [])
            if not page.get("nextToken"):
                return records
            kwargs["nextToken"] = page["nextToken"]

    def fold_alarm_incidents(self) -> list[str]:
        """Resolve each open incident a series' alarm started after the case sink had started that
        series' own (an alarm's action cannot be told of it), pointing to the case's incident.
        Since cases of series with a stack alarm start none, only incidents started before that
        (or before the stack defined the series' alarm) are folded. Returns the duplicates' ARNs."""
        records = self.open_incidents()
        cases = {m.group(1): r["arn"] for r in records if (m := _TAG.search(r.get("title", ""))) and not _alarm_of(r)}
        folded = []
        for record in records:
            kept = cases.get(_alarm_of(record) or "")
            if kept is None:
                continue
            self.client.create_timeline_event(
                clientToken=client_token(f"folded|{record['arn']}", 0),
                incidentRecordArn=kept,
                eventTime=record["creationTime"],
                eventType="Custom Event",
                eventData=json.dumps({"summary": f"alarm {_alarm_of(record)} fired", "duplicate": record["arn"]}),
            )
            self.client.update_incident_record(
                arn=record["arn"],
                status="RESOLVED",
                summary=f"Duplicate of {kept}: the iot-lake case of this series already has that incident.",
            )
            folded.append(record["arn"])
        return folded

    def _timeline_event(self, event: OutboxEvent) -> str:
        """A case linked to the site incident, or its resolution, on the anchor's incident."""
        p, site = event.payload, event.payload["site"]
        arn = event.receipt
        if arn is not None and _is_alarm(arn):
            # The anchor drove its alarm (link_alarm_incidents): its incident, once the alarm's action
            # started it; until then the event waits (raising: the outbox retries it).
            arn = self.alarm_incidents().get(arn.split(":alarm:", 1)[1])
            if arn is None:
                raise RuntimeError(f"the incident of alarm {event.receipt} has not started yet")
        if arn is None:
            # The anchor's page left before receipts were kept (a store migrated meanwhile): the
            # site incident gets an incident of its own, once (its key is the token).
            arn = self.client.start_incident(
                clientToken=client_token(site["key"], 0),
                responsePlanArn=self.response_plan_arn,
                title=f"{p['severity']}: {len(site['devices'])} devices out of band at {site['site_id']}"[:200],
                impact=INCIDENT_IMPACT[p["severity"]],
                triggerDetails={
                    "source": EVENT_SOURCE,
                    "timestamp": datetime.fromisoformat(p["at"]),
                    "rawData": event.json()[:10_000],
                },
            )["incidentRecordArn"]
        if event.event == SITE_LINKED:
            summary = f"{p['device_id']} {p['metric']} out of band too ({p['severity']}), since {p['incident_start']}"
        else:
            summary = f"all {len(site['case_keys'])} cases of site incident {site['key']} are closed"
        self.client.create_timeline_event(
            clientToken=client_token(f"{event.event}|{p['case_key']}|{site['key']}", 0),
            incidentRecordArn=arn,
            eventTime=datetime.fromisoformat(p["at"]),
            eventType="Custom Event",
            # Small: the whole event (with its evidence) could pass the API's 12,000 characters.
            eventData=json.dumps(
                {
                    "summary": summary,
                    "event_id": event.id,
                    "case_key": p["case_key"],
                    "site_incident": site["key"],
                    "devices": site["devices"],
                },
                sort_keys=True,
            ),
        )
        return arn


ALARM_SOURCE = "aws.cloudwatch"  # incidentRecordSource.source of an incident an alarm started
_TAG = re.compile(r"\[(iot-lake-deviation-[^\]]+)\]$")


def _alarm_of(record: dict[str, Any]) -> str | None:
    """The alarm's name, for an incident a CloudWatch alarm started (resourceArn is the alarm's)."""
    source = record.get("incidentRecordSource") or {}
    if source.get("source") != ALARM_SOURCE or ":alarm:" not in source.get("resourceArn", ""):
        return None
    return source["resourceArn"].split(":alarm:", 1)[1]


def _is_alarm(arn: str) -> bool:
    return arn.startswith("arn:aws:cloudwatch:") and ":alarm:" in arn


def fold_alarm_incidents(sinks: list[Sink]) -> dict[str, Any]:
    """``IncidentManagerSink.fold_alarm_incidents`` of the sinks that link alarm incidents: the
    duplicates resolved, and the error when Incident Manager refused (the next run folds again;
    like a sink's, its failure does not fail the caller)."""
    result: dict[str, Any] = {"folded": [], "error": None}
    for sink in sinks:
        if isinstance(sink, IncidentManagerSink) and sink.link_alarm_incidents:
            try:
                result["folded"] += sink.fold_alarm_incidents()
            except Exception as e:  # noqa: BLE001 - reported, retried by the next run
                logger.warning("folding alarm incidents failed: %s", e)
                result["error"] = f"{type(e).__name__}: {e}"[:500]
    return result


def client_token(case_key: str, reopen_count: int) -> str:
    """The case key (one incident per case and reopening), hashed if over the API's 128 characters."""
    token = case_key if reopen_count == 0 else f"{case_key}|reopened-{reopen_count}"
    return token if len(token) <= 128 else hashlib.sha256(token.encode()).hexdigest()


class SnsSink(_AwsSink):
    """Every event of a standalone case or a site incident's anchor; of a site incident, its
    resolution (a case joining one is no new page)."""

    name, service = "sns", "sns"
    events = EVENTS | {ALERT, SITE_RESOLVED}
    pages = True

    def __init__(self, topic_arn: str, region: str | None = None, client: Any = None):
        super().__init__(region, client)
        self.topic_arn = topic_arn

    def deliver(self, event: OutboxEvent) -> None:
        p = event.payload
        if event.is_alert:
            attributes = {
                "kind": ALERT,
                "event": ALERT,
                "alert_kind": p["alert_kind"],
                "severity": p["severity"],
                "job": p["job"] or "none",
            }
            self.client.publish(
                TopicArn=self.topic_arn,
                Message=event.json(),
                Subject=f"[iot-lake] {p['title']}"[:100],
                MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
            )
            return
        # Subscription filter policies match on these.
        attributes = {"case_key": event.case_key, "event": event.event, "severity": p["severity"]}
        if p["site_id"]:
            attributes["site_id"] = p["site_id"]
        if p.get("site_incident"):
            attributes["site_incident"] = p["site_incident"]
        if event.event == SITE_RESOLVED:
            devices = len(p["site"]["devices"])
            subject = f"[iot-lake] site incident resolved: {p['site_id']} ({devices} devices)"
        else:
            subject = f"[iot-lake] case {event.event}: {p['device_id']} {p['metric']} ({p['severity']})"
        self.client.publish(
            TopicArn=self.topic_arn,
            Message=event.json(),
            Subject=subject[:100],
            MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
        )


class EventBridgeSink(_AwsSink):
    name, service = "eventbridge", "events"

    def __init__(self, bus_name: str, region: str | None = None, client: Any = None):
        super().__init__(region, client)
        self.bus_name = bus_name

    def deliver(self, event: OutboxEvent) -> None:
        if event.is_alert:
            entry = {"Source": ALERT_SOURCE, "DetailType": event.payload["alert_kind"].replace("_", " ").capitalize()}
        elif event.event in SITE_EVENTS:
            detail = "Site incident case linked" if event.event == SITE_LINKED else "Site incident resolved"
            entry = {"Source": EVENT_SOURCE, "DetailType": detail}
        else:
            entry = {"Source": EVENT_SOURCE, "DetailType": f"Case {event.event}"}
        response = self.client.put_events(Entries=[{**entry, "Detail": event.json(), "EventBusName": self.bus_name}])
        # PutEvents reports a rejected entry in its response, not as an error.
        if response.get("FailedEntryCount"):
            entry = response["Entries"][0]
            raise RuntimeError(f"EventBridge rejected the event: {entry.get('ErrorCode')} {entry.get('ErrorMessage')}")


def build_sinks(
    env: str,
    *,
    lake_root: str,
    region: str | None = None,
    webhook_url: str | None = None,
    sns_topic_arn: str | None = None,
    event_bus_name: str | None = None,
    incident_response_plan_arn: str | None = None,
    policy: CasePolicy = CasePolicy(),
) -> list[Sink]:
    if env == "prod":
        sinks: list[Sink] = [CloudWatchSink(region, policy=policy), SnsSink(sns_topic_arn, region)]
        if event_bus_name:
            sinks.append(EventBridgeSink(event_bus_name, region))
        if incident_response_plan_arn:
            sinks.append(IncidentManagerSink(incident_response_plan_arn, region, link_alarm_incidents=True))
    else:
        sinks = [LogSink(), JsonLinesSink(Path(lake_root) / JSONL_KEY)]
    if webhook_url:
        sinks.append(WebhookSink(webhook_url))
    return sinks


def sinks_for(settings: Settings, policy: CasePolicy = CasePolicy()) -> list[Sink]:
    return build_sinks(
        settings.env,
        lake_root=settings.lake_root,
        region=settings.aws_region,
        webhook_url=settings.cases_webhook_url,
        sns_topic_arn=settings.sns_topic_arn,
        event_bus_name=settings.event_bus_name,
        incident_response_plan_arn=settings.incident_response_plan_arn,
        policy=policy,
    )
