"""Cases as JSON, one shape for the CLI's ``--format json`` and the serving API; times ISO 8601, UTC."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from iot_lake.cases.model import Case, HistoryEntry, SiteIncident, utc


def iso(value: datetime | None) -> str | None:
    return utc(value).isoformat() if value else None


def case_json(case: Case) -> dict:
    """What scripts need of a case."""
    return {
        "key": case.case_key,
        "device_id": case.device_id,
        "metric": case.metric,
        "site_id": case.site_id,
        "start": iso(case.incident_start),
        "last_seen": iso(case.last_seen),
        "status": case.status,
        "auto_resolved": case.auto_resolved,
        "severity": case.severity,
        "max_score": case.evidence["max_score"],
        "reopen_count": case.reopen_count,
        "site_incident": case.site_incident_key,
    }


def summary_json(row: Mapping[str, Any]) -> dict:
    """``case_json`` of a row of ``CaseStore.summaries`` (no evidence)."""
    fields = {k: v for k, v in row.items() if k != "max_score"}
    return case_json(Case(**fields, evidence={"max_score": row["max_score"]}))


def history_json(entry: HistoryEntry) -> dict:
    return {
        "at": iso(entry.at),
        "from_status": entry.from_status,
        "to_status": entry.to_status,
        "actor": entry.actor,
        "note": entry.note,
    }


def incident_json(incident: SiteIncident) -> dict:
    return {
        "key": incident.site_incident_key,
        "site_id": incident.site_id,
        "status": incident.status,
        "anchor_case": incident.anchor_case_key,
        "first_start": iso(incident.first_start),
        "last_start": iso(incident.last_start),
        "opened_at": iso(incident.opened_at),
        "resolved_at": iso(incident.resolved_at),
        "devices": list(incident.devices),
        "cases": list(incident.case_keys),
    }
