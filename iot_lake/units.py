"""Reporting units and their conversion to the canonical unit the lake stores.

One table, used by the simulator (to report in a device's unit) and the curated layer (to
normalise back), so both directions can never drift apart.
"""

from __future__ import annotations

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


def to_canonical(value, unit: str, canonical_unit: str):
    """Works on floats and numpy arrays alike."""
    target, scale, offset = UNITS.get(unit, (None, 0.0, 0.0))
    if target != canonical_unit:
        raise UnitError(f"cannot convert {unit!r} to {canonical_unit!r}")
    return value * scale + offset


def from_canonical(value, canonical_unit: str, unit: str):
    target, scale, offset = UNITS.get(unit, (None, 0.0, 0.0))
    if target != canonical_unit:
        raise UnitError(f"cannot convert {canonical_unit!r} to {unit!r}")
    return (value - offset) / scale
