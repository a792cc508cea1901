"""Benchmark inputs, made by the project's simulator and cached between runs.

- ``throughput_source``: one landing hour holding ``records`` simulator lines (a day of events of
  a fleet sized for it, 10 s sampling, 2% duplicate deliveries and the simulator's usual bad
  input) re-packed into ``objects`` Firehose-named gzip objects, plus the registry snapshot.
- ``incremental_source``: a smaller fleet's days exactly as the simulator lands them (one object
  per 5-minute buffer window), for the first-hour vs 24th-hour comparison.

Each source is built once under the work directory; every measured run gets a fresh lake whose
landing objects are hard links to it, so no run sees another's curated tables.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from iot_lake.lake import Lake, telemetry_hour_prefix
from iot_lake.settings import local_historian_url
from iot_lake.simulate.deliveries import SimConfig
from iot_lake.simulate.runner import Simulator
from iot_lake.simulate.signals import rng_for
from iot_lake.sources.historian import create_engine, land_registry

EVENT_DAY = date(2026, 11, 20)
METRICS_PER_DEVICE = 4
SAMPLE_S = 10
DUPLICATE_RATE = 0.02
_READY = ".ready"


@dataclass(frozen=True)
class Source:
    root: Path  # a lake directory: landing objects + the registry snapshot
    hours: list[datetime]  # landing hours holding the data, in order
    lines: int


def _land_registry(sim: Simulator, lake: Lake, day: date) -> None:
    url = local_historian_url(lake.url)
    sim.seed_historian(url, day)
    engine = create_engine(url)
    try:
        land_registry(lake, engine, day)
    finally:
        engine.dispose()


def _cached(root: Path) -> bool:
    return (root / _READY).exists()


def _fresh(root: Path) -> Lake:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return Lake(str(root))


def throughput_source(workdir: Path, records: int, objects: int = 20, seed: int = 42) -> Source:
    hour = datetime.combine(EVENT_DAY + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    root = workdir / "sources" / f"throughput-{records}-{objects}-{seed}"
    if _cached(root):
        return Source(root, [hour], records)
    lake = _fresh(root)
    per_device = METRICS_PER_DEVICE * 86_400 // SAMPLE_S
    cfg = SimConfig(
        devices=max(1, math.ceil(records / per_device)),
        seed=seed,
        interval_s=SAMPLE_S,
        duplicate_rate=DUPLICATE_RATE,
        truncated_rate=0.0,
        history_days=0,
    )
    sim = Simulator(cfg, lake)
    start = datetime.combine(EVENT_DAY, datetime.min.time(), tzinfo=UTC)
    # Everything that arrived during the event day (late records of the day before included), in
    # arrival order, cut to the requested count: one landing hour that is a day's backlog.
    frame = sim.windows.between(int(start.timestamp() * 1000), int(hour.timestamp() * 1000))
    lines = frame["line"].tolist()[:records]
    if len(lines) < records:
        raise RuntimeError(f"the simulated day has {len(lines)} lines, fewer than {records}")
    per_object = math.ceil(len(lines) / objects)
    for part in range(objects):
        chunk = lines[part * per_object : (part + 1) * per_object]
        if not chunk:
            break
        opened = hour + timedelta(seconds=part * 3600 // objects)
        object_id = uuid.UUID(bytes=rng_for(seed, 99, part).bytes(16), version=4)
        name = f"{cfg.stream_name}-1-{opened:%Y-%m-%d-%H-%M-%S}-{object_id}.gz"
        body = gzip.compress(("\n".join(chunk) + "\n").encode(), compresslevel=6, mtime=0)
        lake.write_bytes(f"{telemetry_hour_prefix(hour)}/{name}", body)
    _land_registry(sim, lake, hour.date())
    (root / _READY).touch()
    return Source(root, [hour], len(lines))


def incremental_source(workdir: Path, devices: int, seed: int = 42, days: int = 2) -> Source:
    """``days`` days as the simulator lands them: the first warms the tables up, the last is measured."""
    start = datetime.combine(EVENT_DAY, datetime.min.time(), tzinfo=UTC)
    hours = [start + timedelta(hours=h) for h in range(24 * days)]
    root = workdir / "sources" / f"incremental-{devices}-{seed}-{days}"
    lines_file = root / ".lines"
    if _cached(root):
        return Source(root, hours, int(lines_file.read_text()))
    lake = _fresh(root)
    cfg = SimConfig(devices=devices, seed=seed, interval_s=SAMPLE_S, duplicate_rate=DUPLICATE_RATE, history_days=0)
    sim = Simulator(cfg, lake)
    report = sim.backfill(start, start + timedelta(days=days))
    _land_registry(sim, lake, EVENT_DAY)
    lines_file.write_text(str(report.lines))
    (root / _READY).touch()
    return Source(root, hours, report.lines)


def fresh_lake(source: Source, root: Path) -> Path:
    """A new lake with the source's landing data and registry (hard links: instant, no extra space)."""
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(source.root / "landing", root / "landing", copy_function=_link)
    return root


def _link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem
        shutil.copy2(src, dst)
