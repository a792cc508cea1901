"""Kinesis Data Firehose delivery: buffered, gzip-compressed NDJSON objects under an hour prefix.

Object keys follow Firehose's default naming,
``landing/telemetry/YYYY/MM/DD/HH/<stream>-1-YYYY-MM-DD-HH-MM-SS-<uuid>.gz``, where the hour is
the arrival hour. Names derive from the seed and the buffer window, so re-running the simulator
overwrites the same objects instead of adding copies.
"""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd

from iot_lake.lake import telemetry_hour_prefix
from iot_lake.simulate.deliveries import SimConfig
from iot_lake.simulate.signals import STREAM_OBJECT, rng_for


@dataclass
class LandingObject:
    key: str
    body: bytes
    truth: dict = field(default_factory=dict)


def split_by_size(lines: list[str], max_bytes: int) -> list[list[str]]:
    """Consecutive lines in parts of at most ``max_bytes`` (newlines included), as Firehose caps an object."""
    parts, current, size = [], [], 0
    for line in lines:
        n = len(line) + 1
        if current and size + n > max_bytes:
            parts.append(current)
            current, size = [], 0
        current.append(line)
        size += n
    if current:
        parts.append(current)
    return parts


def objects_for(deliveries: pd.DataFrame, cfg: SimConfig) -> Iterator[LandingObject]:
    """Group deliveries (sorted by arrival) into Firehose objects, one per buffer window and size cap."""
    if deliveries.empty:
        return
    window_ms = cfg.buffer_s * 1000
    windows = deliveries["arrival_ms"].to_numpy() // window_ms
    for window, group in deliveries.groupby(windows, sort=True):
        opened = datetime.fromtimestamp(int(window) * cfg.buffer_s, tz=UTC)
        offset = 0
        for part, lines in enumerate(split_by_size(group["line"].tolist(), cfg.max_object_bytes)):
            rows = group.iloc[offset : offset + len(lines)]
            offset += len(lines)
            rng = rng_for(cfg.seed, STREAM_OBJECT, int(window), part)
            name = f"{cfg.stream_name}-1-{opened:%Y-%m-%d-%H-%M-%S}-{uuid.UUID(bytes=rng.bytes(16), version=4)}.gz"
            body = gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), mtime=0)
            truncated_at = None
            if rng.random() < cfg.truncated_rate:
                truncated_at = int(len(body) * rng.uniform(0.3, 0.8))
                body = body[:truncated_at]
            bad = rows["bad_kind"][rows["bad_kind"] != ""].value_counts().to_dict()
            yield LandingObject(
                key=f"{telemetry_hour_prefix(opened)}/{name}",
                body=body,
                truth={
                    "lines": len(lines),
                    "duplicates": int(rows["duplicate"].sum()),
                    "late": int(rows["late"].sum()),
                    "bad": {k: int(v) for k, v in sorted(bad.items())},
                    "truncated_at_byte": truncated_at,
                },
            )
