"""Reporting units and their conversion to the canonical unit the lake stores.

One table, used by the simulator (to report in a device's unit) and the curated layer (to
normalise back), so both directions can never drift apart. A unit always converts to itself,
listed or not: a metric imported from a real series (``iot-lake import``) is registered with its
own unit (``%``, ``req/s``) as the canonical one, and needs no entry here.
"""

from __future__ import annotations

from collections.abc import Iterable

# unit -> (canonical unit, scale, offset) with canonical = reported * scale + offset
UNITS: dict[str, tuple[str, float, float]] = {
    "degC": ("degC", 1.0, 0.0),
    "degF": ("degC", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
    "mm/s": ("mm/s", 1.0, 0.0),
    "kPa": ("kPa", 1.0, 0.0),
    "psi": ("kPa", 6.894757, 0.0),
    "kW": ("kW", 1.0, 0.0),
}


class UnitError(ValueError):
    """A unit the registry cannot convert to the metric's canonical unit."""


def conversion(unit: str, canonical_unit: str) -> tuple[float, float]:
    """(scale, offset) with canonical = reported * scale + offset."""
    if unit == canonical_unit:
        return 1.0, 0.0
    target, scale, offset = UNITS.get(unit, (None, 0.0, 0.0))
    if target != canonical_unit:
        raise UnitError(f"cannot convert {unit!r} to {canonical_unit!r}")
    return scale, offset


def conversions(canonical_units: Iterable[str]) -> dict[tuple[str, str], tuple[float, float]]:
    """Every (unit, canonical unit) pair that converts, for these canonical units: what a lookup table needs."""
    pairs = {(unit, target): (scale, offset) for unit, (target, scale, offset) in UNITS.items()}
    pairs.update({(c, c): (1.0, 0.0) for c in canonical_units})
    return pairs


def to_canonical(value, unit: str, canonical_unit: str):
    """Works on floats and numpy arrays alike."""
    scale, offset = conversion(unit, canonical_unit)
    return value * scale + offset


def from_canonical(value, canonical_unit: str, unit: str):
    scale, offset = conversion(unit, canonical_unit)
    return (value - offset) / scale
