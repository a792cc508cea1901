"""The fast path for typical landing lines: a block of lines at a time, in Arrow, no Python per line.

records.parse_line stays the one definition of what is valid. This path only *accepts*: a line
is curated here when it has the typical shape (sources.telemetry.TYPICAL_LINE: one JSON object,
known field order and types) and passes every check parse_line makes, computed column-wise with
the same arithmetic. Every other line, including every line that will be rejected, is handed
back to go through parse_line, so reasons and details come from one place. Lines are ~99% typical,
so the per-line Python cost is paid by the 1% that needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from iot_lake.curated.records import CLOCK_TOLERANCE, MAX_LATENESS, Registry
from iot_lake.ids import id_problem
from iot_lake.sources.telemetry import TYPICAL_LINE
from iot_lake.units import conversions

_SEP = "\x1f"  # joins key parts; TYPICAL_LINE's strings cannot contain it
_UTC_US = pa.timestamp("us", tz="UTC")
_TOLERANCE_US = CLOCK_TOLERANCE // timedelta(microseconds=1)
_LATENESS_US = MAX_LATENESS // timedelta(microseconds=1)


@dataclass(frozen=True)
class RegistryIndex:
    """The registry as Arrow lookup arrays: device -> site, (device, metric) -> rule, unit pair -> conversion."""

    device_ids: pa.Array
    site_ids: pa.Array
    rule_keys: pa.Array
    rule_canonical: pa.Array
    rule_min: pa.Array
    rule_max: pa.Array
    unit_keys: pa.Array
    unit_scale: pa.Array
    unit_offset: pa.Array

    @classmethod
    def of(cls, registry: Registry) -> RegistryIndex:
        # Devices whose ids may not be used are left out: their lines go to parse_line, which rejects them.
        sites = {d: s for d, s in registry.sites.items() if not id_problem("device", d) and not id_problem("site", s)}
        rules = [((d, m), r) for (d, m), r in registry.rules.items() if d in sites and not id_problem("metric", m)]
        units = conversions({r.canonical_unit for _, r in rules})
        return cls(
            device_ids=pa.array(list(sites), pa.string()),
            site_ids=pa.array(list(sites.values()), pa.string()),
            rule_keys=pa.array([f"{d}{_SEP}{m}" for (d, m), _ in rules], pa.string()),
            rule_canonical=pa.array([r.canonical_unit for _, r in rules], pa.string()),
            rule_min=pa.array([r.min_value for _, r in rules], pa.float64()),
            rule_max=pa.array([r.max_value for _, r in rules], pa.float64()),
            unit_keys=pa.array([f"{u}{_SEP}{c}" for u, c in units], pa.string()),
            unit_scale=pa.array([s for s, _ in units.values()], pa.float64()),
            unit_offset=pa.array([o for _, o in units.values()], pa.float64()),
        )


_EMPTY = pa.RecordBatch.from_pydict(
    {
        name: pa.array([], t)
        for name, t in [
            ("device_id", pa.string()),
            ("site_id", pa.string()),
            ("metric", pa.string()),
            ("value", pa.float64()),
            ("unit", pa.string()),
            ("reported_value", pa.float64()),
            ("reported_unit", pa.string()),
            ("event_ts", _UTC_US),
            ("message_id", pa.string()),
            ("ingested_at", _UTC_US),
            ("position", pa.int64()),
        ]
    }
)


@dataclass(frozen=True)
class Typical:
    records: pa.RecordBatch  # the accepted lines as curated columns, plus "position" in the block
    rest: np.ndarray  # positions of every other line, for parse_line


def _timestamps(iso: pa.Array, epoch_ms: pa.Array) -> pa.Array:
    """ts as TYPICAL_LINE captured it: either ISO 8601 with Z/offset, or epoch milliseconds."""
    is_ms = pc.greater(pc.binary_length(epoch_ms), 0)
    from_iso = pc.cast(pc.if_else(is_ms, "1970-01-01T00:00:00Z", iso), _UTC_US)
    from_ms = pc.cast(pc.multiply(pc.cast(pc.if_else(is_ms, epoch_ms, "0"), pa.int64()), 1000), _UTC_US)
    return pc.if_else(is_ms, from_ms, from_iso)


def parse_typical(lines: pa.Array, index: RegistryIndex) -> Typical:
    """Split a block's lines into curated records (what parse_line would return) and the rest."""
    everything = np.arange(len(lines))
    if not len(lines):
        return Typical(_EMPTY, everything)
    fields = pc.extract_regex(lines, TYPICAL_LINE)  # null where a line is not typical
    shaped = fields.is_valid()
    position = pa.array(everything).filter(shaped)
    fields = fields.filter(shaped)
    try:
        text = {
            name: pc.cast(fields.field(name), pa.string())
            for name in ("device_id", "metric", "value", "unit", "ts_ms", "ts_iso", "message_id", "ingested_at")
        }
        value = pc.cast(text["value"], pa.float64())
        event_ts = _timestamps(text["ts_iso"], text["ts_ms"])
        ingested_at = pc.cast(text["ingested_at"], _UTC_US)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # e.g. 30 February: a date the pattern lets through and only a calendar rejects.
        return Typical(_EMPTY, everything)

    device, metric, unit = text["device_id"], text["metric"], text["unit"]
    site_at = pc.index_in(device, value_set=index.device_ids)
    rule_at = pc.index_in(pc.binary_join_element_wise(device, metric, _SEP), value_set=index.rule_keys)
    canonical_unit = pc.take(index.rule_canonical, rule_at)
    unit_at = pc.index_in(pc.binary_join_element_wise(unit, canonical_unit, _SEP), value_set=index.unit_keys)
    # units.to_canonical: value * scale + offset, the same two roundings.
    canonical = pc.add(pc.multiply(value, pc.take(index.unit_scale, unit_at)), pc.take(index.unit_offset, unit_at))
    event_us, ingested_us = pc.cast(event_ts, pa.int64()), pc.cast(ingested_at, pa.int64())
    accepted = pc.and_kleene(
        pc.and_kleene(
            # "-0" is the integer 0 to Python's json (no sign), but -0.0 to a float cast.
            pc.not_equal(text["value"], "-0"),
            pc.and_kleene(
                pc.greater_equal(canonical, pc.take(index.rule_min, rule_at)),
                pc.less_equal(canonical, pc.take(index.rule_max, rule_at)),
            ),
        ),
        pc.and_kleene(
            site_at.is_valid(),
            pc.and_kleene(
                pc.less_equal(event_us, pc.add(ingested_us, _TOLERANCE_US)),  # records._clock_skew
                pc.greater_equal(event_us, pc.subtract(ingested_us, _LATENESS_US)),
            ),
        ),
    )
    accepted = pc.fill_null(accepted, False)  # an unknown device, metric or unit: parse_line says which
    ok = accepted.to_numpy(zero_copy_only=False)
    kept = accepted
    records = pa.RecordBatch.from_pydict(
        {
            "device_id": device.filter(kept),
            "site_id": pc.take(index.site_ids, site_at).filter(kept),
            "metric": metric.filter(kept),
            "value": canonical.filter(kept),
            "unit": canonical_unit.filter(kept),
            "reported_value": value.filter(kept),
            "reported_unit": unit.filter(kept),
            "event_ts": event_ts.filter(kept),
            "message_id": text["message_id"].filter(kept),
            "ingested_at": ingested_at.filter(kept),
            "position": position.filter(kept),
        }
    )
    taken = np.zeros(len(lines), bool)
    taken[np.asarray(position)[ok]] = True
    return Typical(records, everything[~taken])
