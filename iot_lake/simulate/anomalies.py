"""Labelled anomalies injected into a device-metric day, with their ground truth.

Magnitudes are relative to the series' own variability that day, so an anomaly is equally
(non-)obvious on a 4 mm/s vibration sensor and on a 600 kPa pressure sensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("spike", "level_shift", "drift", "stuck", "dropout")
MINUTE_MS = 60_000

# Duration range in minutes per kind (a spike is one to three samples).
_DURATION_MIN = {
    "spike": (1, 3),
    "level_shift": (60, 360),
    "drift": (120, 480),
    "stuck": (60, 240),
    "dropout": (30, 180),
}


@dataclass(frozen=True)
class Anomaly:
    device_id: str
    site_id: str
    metric: str
    kind: str
    start_ms: int
    end_ms: int  # exclusive
    magnitude: float  # in the device's canonical unit; 0 for stuck and dropout


def inject(
    rng: np.random.Generator,
    t_ms: np.ndarray,
    values: np.ndarray,
    *,
    rate_per_day: float,
    device_id: str,
    site_id: str,
    metric: str,
    value_range: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, list[Anomaly]]:
    """Return (values, keep mask, anomalies). ``values`` is not modified in place."""
    values = values.copy()
    keep = np.ones(len(values), dtype=bool)
    count = rng.poisson(rate_per_day)
    scale = max(float(np.std(values)), 1e-6)
    low, high = value_range
    taken: list[tuple[int, int]] = []
    anomalies: list[Anomaly] = []
    for _ in range(count):
        kind = KINDS[rng.integers(len(KINDS))]
        lo, hi = _DURATION_MIN[kind]
        duration_ms = int(rng.integers(lo, hi + 1)) * MINUTE_MS
        start_ms = int(rng.integers(t_ms[0], max(t_ms[0] + 1, t_ms[-1] - duration_ms // 2)))
        end_ms = min(start_ms + duration_ms, int(t_ms[-1]) + 1)
        window = (t_ms >= start_ms) & (t_ms < end_ms)
        if not window.any() or any(start_ms < b and a < end_ms for a, b in taken):
            continue  # no sample inside, or overlaps another anomaly of this series: skip it
        idx = np.flatnonzero(window)
        sign = 1.0 if rng.random() < 0.6 else -1.0
        magnitude = 0.0
        if kind == "spike":
            magnitude = sign * rng.uniform(5.0, 8.0) * scale
            values[idx] += magnitude
        elif kind == "level_shift":
            magnitude = sign * rng.uniform(2.0, 3.5) * scale
            values[idx] += magnitude
        elif kind == "drift":
            magnitude = sign * rng.uniform(2.5, 4.5) * scale
            values[idx] += magnitude * np.linspace(0.0, 1.0, len(idx))
        elif kind == "stuck":
            values[idx] = values[idx[0]]
        else:  # dropout: the device goes silent
            keep[idx] = False
        # Anomalies must be plausible readings, never physically impossible ones.
        values[idx] = np.clip(values[idx], low + 1e-3 * (high - low), high - 1e-3 * (high - low))
        taken.append((start_ms, end_ms))
        # The label spans the samples it touches, so a one-sample spike is not a zero-width window.
        anomalies.append(
            Anomaly(device_id, site_id, metric, kind, int(t_ms[idx[0]]), int(t_ms[idx[-1]]) + 1, float(magnitude))
        )
    return values, keep, anomalies
