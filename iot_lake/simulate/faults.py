"""Bad input as it really reaches a landing bucket, one kind per corrupted record.

Each kind is something the curated layer must reject into quarantine with a reason, never
drop silently and never let through.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from iot_lake.fleet import METRICS

BAD_KINDS = (
    "malformed_json",
    "missing_field",
    "mistyped_field",
    "non_finite",
    "impossible_value",
    "unknown_device",
)
REQUIRED_FIELDS = ("device_id", "metric", "value", "ts", "message_id")


def corrupt(record: dict[str, Any], kind: str, rng: np.random.Generator) -> str:
    """Serialise ``record`` with the fault ``kind`` applied; returns one NDJSON line (no newline)."""
    rec = dict(record)
    if kind == "malformed_json":
        line = json.dumps(rec, separators=(",", ":"))
        cut = int(rng.integers(5, len(line) - 2))
        return line[:cut] if rng.random() < 0.7 else line.replace('"', "'", 2)
    if kind == "missing_field":
        del rec[REQUIRED_FIELDS[rng.integers(len(REQUIRED_FIELDS))]]
    elif kind == "mistyped_field":
        field = ("value", "ts", "device_id")[rng.integers(3)]
        rec[field] = {"value": "n/a", "ts": "yesterday 3pm", "device_id": 404}[field]
    elif kind == "non_finite":
        rec["value"] = (float("nan"), float("inf"), float("-inf"))[rng.integers(3)]
    elif kind == "impossible_value":
        spec = METRICS[rec["metric"]]
        span = spec.max_value - spec.min_value
        below = spec.min_value - rng.uniform(0.5, 3.0) * span
        above = spec.max_value + rng.uniform(0.5, 30.0) * span
        # Canonical units, and far enough out that no unit conversion brings it back in range.
        rec["value"] = round(below if rng.random() < 0.5 else above, 3)
        rec["unit"] = spec.unit
    elif kind == "unknown_device":
        rec["device_id"] = f"dev-9{rng.integers(0, 1000):03d}"
    else:
        raise ValueError(f"unknown fault kind {kind!r}")
    # json.dumps writes NaN/Infinity as bare tokens, exactly the non-standard JSON devices send.
    return json.dumps(rec, separators=(",", ":"))
