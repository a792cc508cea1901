"""One landing line -> a curated record, or a quarantine reason. Plain Python on purpose.

The same function runs inside Spark (mapInArrow, on Sail locally and on EMR/Glue) and in tests,
so what counts as valid never depends on an engine's JSON or timestamp parser: Python's json
accepts the NaN/Infinity tokens devices send (and we then reject them with a reason, instead
of an engine turning the whole line into nulls), and timestamps in ISO 8601 with any offset or
as epoch milliseconds all normalise to UTC.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from iot_lake.ids import id_problem
from iot_lake.units import UnitError, to_canonical

# Quarantine reason codes, in the order they are checked.
REASONS = (
    "line_too_long",  # over the reader's line limit (sources.telemetry.MAX_LINE_BYTES); only its head is kept
    "malformed_json",  # not a JSON object
    "missing_field",  # a required field is absent or null
    "mistyped_field",  # a field has the wrong JSON type
    "invalid_id",  # a device, site or metric id that may not reach a path, key or query (iot_lake.ids)
    "bad_timestamp",  # ts or ingested_at cannot be read as a time
    "non_finite_value",  # NaN or +-Infinity
    "unknown_device",  # not in the device registry
    "unknown_metric",  # the device has no such metric in the registry
    "unknown_unit",  # a unit that does not convert to the metric's canonical unit
    "out_of_range",  # outside the metric's physical range (canonical units)
    "clock_skew",  # event time after its arrival (beyond tolerance) or too long before it
    "parse_error",  # the parser itself failed on the line: a bug to fix, but never a failed hour
)
REQUIRED = ("device_id", "metric", "value", "ts", "message_id")
# Clock skew. A device's clock is judged against the arrival time, IoT Core's ingested_at (or, for
# a line without one, the landing hour it arrived in), which the platform trusts and keeps:
# - an event up to CLOCK_TOLERANCE after its arrival is a clock running slightly fast: kept, with
#   its own event time (curated rows are partitioned and aggregated by event time);
# - later than that, the event cannot have happened yet: quarantined as clock_skew;
# - more than MAX_LATENESS before its arrival is no buffered backlog (devices hold hours, not
#   weeks) but a clock that was reset or never set (1970, 2000): quarantined as clock_skew too, as
#   such rows would land in long-settled partitions and aggregates. The raw line stays in
#   quarantine, to be replayed once the device's offset is known.
CLOCK_TOLERANCE = timedelta(minutes=5)
MAX_LATENESS = timedelta(days=7)
# A historian reading is judged against when it was loaded into the historian (loaded_at) and when
# it was extracted: years of plant history are its purpose, so MAX_LATENESS does not apply, but a
# reading recorded after it was loaded (beyond CLOCK_TOLERANCE), or more than MAX_HISTORY_AGE
# before, is a clock that was wrong or never set (1970, 2000), not history: clock_skew.
MAX_HISTORY_AGE = timedelta(days=20 * 365)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class MetricRule:
    unit: str  # the unit the device reports in
    canonical_unit: str
    min_value: float
    max_value: float


@dataclass(frozen=True)
class Registry:
    sites: Mapping[str, str]  # device_id -> site_id
    rules: Mapping[tuple[str, str], MetricRule]  # (device_id, metric) -> rule

    @classmethod
    def from_rows(cls, devices: Iterable[Mapping], device_metrics: Iterable[Mapping]) -> Registry:
        return cls(
            sites={d["device_id"]: d["site_id"] for d in devices},
            rules={
                (m["device_id"], m["metric"]): MetricRule(
                    m["unit"], m["canonical_unit"], float(m["min_value"]), float(m["max_value"])
                )
                for m in device_metrics
            },
        )


@dataclass(frozen=True)
class Record:
    device_id: str
    site_id: str
    metric: str
    value: float  # canonical unit
    unit: str  # canonical unit
    reported_value: float
    reported_unit: str
    event_ts: datetime  # UTC
    message_id: str
    ingested_at: datetime | None  # UTC


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str
    device_id: str | None = None
    metric: str | None = None


def parse_time(value) -> datetime:
    """ISO 8601 (Z or offset; a naive time is taken as UTC), epoch milliseconds, or a datetime (a
    typed column; naive is UTC) -> aware UTC."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, int):
        return _EPOCH + timedelta(milliseconds=value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    raise ValueError(f"{type(value).__name__} is not a time")


def parse_line(line: str, registry: Registry, landing_hour: datetime | None = None) -> Record | Rejection:
    """``landing_hour``: the arrival hour of the line's object, judging the clock of a line without ingested_at.

    Total: whatever the line holds, the answer is a Record or a Rejection, never an exception, so
    one line can never fail the hour it landed in (tests/test_poison_input.py drives it with
    arbitrary JSON).
    """
    try:
        return _parse_line(line, registry, landing_hour)
    except Exception as exc:  # noqa: BLE001 - the line's verdict, whatever went wrong
        return Rejection("parse_error", f"{type(exc).__name__}: {exc}"[:200])


def parse_reading(fields: Mapping, registry: Registry, extracted_at: datetime) -> Record | Rejection:
    """A historian reading, already split into fields (``ts`` its recorded time, ``ingested_at``
    when it was loaded into the historian, None if unknown), judged by the same rules as a landing
    line, except for the clock: see MAX_HISTORY_AGE. ``extracted_at``: when the extract read it.

    Total like parse_line: a Record (``ingested_at`` = the load time) or a Rejection.
    """
    try:
        loaded = fields.get("ingested_at")
        result = _parse_fields({**fields, "ingested_at": None}, registry, None)
        if isinstance(result, Rejection):
            return result
        try:
            loaded_at = parse_time(loaded) if loaded is not None else None
        except (ValueError, OverflowError) as exc:
            return Rejection("bad_timestamp", f"loaded_at: {exc}"[:200], result.device_id, result.metric)
        if skew := _history_skew(result.event_ts, loaded_at, extracted_at):
            return Rejection("clock_skew", skew, result.device_id, result.metric)
        return replace(result, ingested_at=loaded_at)
    except Exception as exc:  # noqa: BLE001 - the reading's verdict, whatever went wrong
        return Rejection("parse_error", f"{type(exc).__name__}: {exc}"[:200])


def _parse_line(line: str, registry: Registry, landing_hour: datetime | None) -> Record | Rejection:
    try:
        raw = json.loads(line)
    except (ValueError, RecursionError) as exc:
        return Rejection("malformed_json", str(exc)[:200])
    if not isinstance(raw, dict):
        return Rejection("malformed_json", f"a JSON {type(raw).__name__}, not an object")
    return _parse_fields(raw, registry, landing_hour)


def _parse_fields(raw: Mapping, registry: Registry, landing_hour: datetime | None) -> Record | Rejection:
    device_id, metric = raw.get("device_id"), raw.get("metric")
    ids = {"device_id": _quarantine_id(device_id), "metric": _quarantine_id(metric)}
    missing = [f for f in REQUIRED if raw.get(f) is None]
    if missing:
        return Rejection("missing_field", ", ".join(missing), **ids)
    for name in ("device_id", "metric", "message_id"):
        if not isinstance(raw[name], str) or not raw[name]:
            return Rejection("mistyped_field", f"{name} is {type(raw[name]).__name__}, expected a string", **ids)
    if not _is_text(raw["message_id"]):  # JSON's \ud800 escapes decode to lone surrogates, which no table can hold
        return Rejection("mistyped_field", "message_id is not valid Unicode text (a lone surrogate)", **ids)
    for kind, name in (("device", "device_id"), ("metric", "metric")):
        if problem := id_problem(kind, raw[name]):
            return Rejection("invalid_id", problem, **ids)
    value = raw["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return Rejection("mistyped_field", f"value is {type(value).__name__}, expected a number", **ids)
    if isinstance(value, int) and not _fits_double(value):
        return Rejection("non_finite_value", f"an integer of {len(str(abs(value)))} digits, beyond a double", **ids)
    unit = raw.get("unit")
    if unit is not None and (not isinstance(unit, str) or not _is_text(unit)):
        return Rejection("mistyped_field", f"unit is {type(unit).__name__}, expected a string of valid text", **ids)
    try:
        event_ts = parse_time(raw["ts"])
        ingested_at = parse_time(raw["ingested_at"]) if raw.get("ingested_at") is not None else None
    except (ValueError, OverflowError) as exc:
        return Rejection("bad_timestamp", str(exc)[:200], **ids)
    if not math.isfinite(value):
        return Rejection("non_finite_value", repr(value), **ids)
    site_id = registry.sites.get(device_id)
    if site_id is None:
        return Rejection("unknown_device", device_id, **ids)
    if problem := id_problem("site", site_id):
        return Rejection("invalid_id", f"the registry's site of {device_id}: {problem}", **ids)
    rule = registry.rules.get((device_id, metric))
    if rule is None:
        return Rejection("unknown_metric", f"{device_id} has no metric {metric!r}", **ids)
    reported_unit = unit or rule.unit  # a device that omits the unit reports in its registered one
    try:
        canonical = float(to_canonical(float(value), reported_unit, rule.canonical_unit))
    except UnitError as exc:
        return Rejection("unknown_unit", str(exc), **ids)
    if not rule.min_value <= canonical <= rule.max_value:
        return Rejection(
            "out_of_range",
            f"{canonical:g} {rule.canonical_unit} outside [{rule.min_value:g}, {rule.max_value:g}]",
            **ids,
        )
    skew = _clock_skew(event_ts, ingested_at, landing_hour)
    if skew:
        return Rejection("clock_skew", skew, **ids)
    return Record(
        device_id,
        site_id,
        metric,
        canonical,
        rule.canonical_unit,
        float(value),
        reported_unit,
        event_ts,
        raw["message_id"],
        ingested_at,
    )


def _quarantine_id(value) -> str | None:
    """An id as the quarantine keeps it beside the raw line: a string that a table can hold, or None."""
    return value[:256] if isinstance(value, str) and _is_text(value) else None


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _fits_double(value: int) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _clock_skew(event_ts: datetime, ingested_at: datetime | None, landing_hour: datetime | None) -> str | None:
    if ingested_at is not None:
        earliest, latest, arrival = ingested_at, ingested_at, f"ingestion {ingested_at.isoformat()}"
    elif landing_hour is not None:
        earliest, latest = landing_hour, landing_hour + timedelta(hours=1)
        arrival = f"its landing hour {landing_hour.isoformat()}"
    else:
        return None
    if event_ts > latest + CLOCK_TOLERANCE:
        return f"event {event_ts.isoformat()} after {arrival}"
    if event_ts < earliest - MAX_LATENESS:
        return f"event {event_ts.isoformat()} more than {MAX_LATENESS.days} days before {arrival}"
    return None


def _history_skew(event_ts: datetime, loaded_at: datetime | None, extracted_at: datetime) -> str | None:
    latest, arrival = extracted_at, f"the extract at {extracted_at.isoformat()}"
    if loaded_at is not None and loaded_at < extracted_at:
        latest, arrival = loaded_at, f"its load {loaded_at.isoformat()}"
    if event_ts > latest + CLOCK_TOLERANCE:
        return f"recorded {event_ts.isoformat()} after {arrival}"
    if event_ts < latest - MAX_HISTORY_AGE:
        return f"recorded {event_ts.isoformat()} more than {MAX_HISTORY_AGE.days // 365} years before {arrival}"
    return None
