"""From device events to delivered records: latency, late arrivals, retries and bad input.

A record's arrival time (``ingested_at``, when IoT Core received it) decides which Firehose
object it lands in; its event time (``ts``) is when the device sampled it. Everything about a
record is decided by the day its event belongs to, so any arrival window can be cut out later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from iot_lake.fleet import METRICS, Device, Fleet
from iot_lake.simulate import anomalies as anomaly_model
from iot_lake.simulate.faults import BAD_KINDS, corrupt
from iot_lake.simulate.signals import (
    STREAM_ANOMALY,
    STREAM_DELIVERY,
    STREAM_FAULT,
    clean_metric,
    rng_for,
    sample_times,
)
from iot_lake.units import from_canonical

MAX_LATE_MS = 6 * 3_600_000  # a device that was offline buffers up to six hours
MIN_LATE_MS = 10 * 60_000
MAX_RETRY_MS = 15 * 60_000  # a retried publish (QoS 1) reaches IoT Core again within 15 min
MAX_DELAY_MS = MAX_LATE_MS + MAX_RETRY_MS + 60_000


@dataclass(frozen=True)
class SimConfig:
    devices: int = 50
    seed: int = 42
    interval_s: int = 60
    buffer_s: int = 300  # Firehose buffering interval: one object per buffer (and per size cap)
    max_object_bytes: int = 5 * 1024 * 1024
    bad_rate: float = 0.01  # share of records sent with one of BAD_KINDS
    duplicate_rate: float = 0.01  # share of records delivered twice
    late_rate: float = 0.005  # share of records arriving 10 min to 6 h after their event
    anomaly_rate: float = 0.05  # labelled anomalies per device-metric-day
    truncated_rate: float = 0.005  # share of Firehose objects whose gzip stream is cut short
    bad_weather_rate: float = 0.05  # share of weather files with a defect
    history_days: int = 7  # days of past readings seeded into the historian
    stream_name: str = "iot-lake-telemetry"

    def __post_init__(self) -> None:
        for name in ("bad_rate", "duplicate_rate", "late_rate", "truncated_rate", "bad_weather_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.interval_s <= 0 or 86_400 % self.interval_s:
            raise ValueError("interval_s must divide a day (e.g. 1, 10, 60, 300)")
        if self.buffer_s < 60 or 3600 % self.buffer_s:
            raise ValueError("buffer_s must be at least 60 and divide an hour (Firehose allows 60-900 s)")
        if self.anomaly_rate < 0 or self.devices < 1 or self.history_days < 0:
            raise ValueError("anomaly_rate, devices and history_days must not be negative")


@dataclass(frozen=True)
class SeriesDay:
    """One device metric over one UTC day, anomalies applied, canonical units."""

    device: Device
    metric: str
    t_ms: np.ndarray
    values: np.ndarray
    keep: np.ndarray  # False where a dropout anomaly silenced the device
    anomalies: list[anomaly_model.Anomaly]


def series_day(fleet: Fleet, cfg: SimConfig, device: Device, metric: str, day: date) -> SeriesDay:
    t = sample_times(device, day, cfg.interval_s)
    values = clean_metric(fleet, device, metric, t, day)
    keep = np.ones(len(t), dtype=bool)
    found: list[anomaly_model.Anomaly] = []
    if cfg.anomaly_rate > 0:
        mi = list(device.metrics).index(metric)
        spec = METRICS[metric]
        values, keep, found = anomaly_model.inject(
            rng_for(fleet.seed, STREAM_ANOMALY, device.index, mi, day.toordinal()),
            t,
            values,
            rate_per_day=cfg.anomaly_rate,
            device_id=device.device_id,
            site_id=device.site_id,
            metric=metric,
            value_range=(spec.min_value, spec.max_value),
        )
    return SeriesDay(device, metric, t, values, keep, found)


def fleet_day(fleet: Fleet, cfg: SimConfig, day: date) -> list[SeriesDay]:
    return [series_day(fleet, cfg, d, m, day) for d in fleet.devices for m in d.metrics]


def _iso_ms(t_ms: np.ndarray) -> np.ndarray:
    return np.char.add(np.datetime_as_string(t_ms.astype("datetime64[ms]"), unit="ms"), "Z")


def _ts_tokens(device: Device, fleet: Fleet, t_ms: np.ndarray) -> np.ndarray:
    """The JSON token of the event time, in the format this device's firmware uses."""
    if device.ts_format == "epoch_ms":
        return t_ms.astype(str)
    if device.ts_format == "iso_offset":
        offset_h = fleet.site_by_id[device.site_id].utc_offset_hours
        local = np.datetime_as_string((t_ms + int(offset_h * 3_600_000)).astype("datetime64[ms]"), unit="ms")
        sign = "+" if offset_h >= 0 else "-"
        hh, mm = divmod(int(round(abs(offset_h) * 60)), 60)
        return np.char.add(np.char.add('"', local), f'{sign}{hh:02d}:{mm:02d}"')
    return np.char.add(np.char.add('"', _iso_ms(t_ms)), '"')


def _message_ids(rng: np.random.Generator, n: int) -> list[str]:
    raw = rng.bytes(16 * n).hex()
    out = []
    for i in range(n):
        h = raw[32 * i : 32 * i + 32]
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}")
    return out


@dataclass(frozen=True)
class DayDeliveries:
    """Every delivery caused by events of one day, with the anomalies behind them.

    ``frame`` has one row per NDJSON line, any arrival time, with columns
    arrival_ms, line, device_id, bad_kind ('' when good), duplicate, late.
    """

    day: date
    frame: pd.DataFrame
    anomalies: list[anomaly_model.Anomaly]


def deliveries_for_day(fleet: Fleet, cfg: SimConfig, day: date) -> DayDeliveries:
    frames, found = [], []
    for s in fleet_day(fleet, cfg, day):
        found.extend(s.anomalies)
        d, mi = s.device, list(s.device.metrics).index(s.metric)
        n = len(s.t_ms)
        # Draw everything for all samples before masking, so dropouts never shift other draws.
        drng = rng_for(fleet.seed, STREAM_DELIVERY, d.index, mi, day.toordinal())
        latency = np.minimum(drng.lognormal(np.log(400), 0.6, n), 5_000).astype(np.int64)
        late = drng.random(n) < cfg.late_rate
        late_delay = drng.integers(MIN_LATE_MS, MAX_LATE_MS, n)
        dup = drng.random(n) < cfg.duplicate_rate
        retry_delay = drng.integers(2_000, MAX_RETRY_MS, n)
        message_ids = _message_ids(drng, n)
        frng = rng_for(fleet.seed, STREAM_FAULT, d.index, mi, day.toordinal())
        bad = frng.random(n) < cfg.bad_rate
        bad_kind_idx = frng.integers(0, len(BAD_KINDS), n)

        unit = d.metrics[s.metric].unit
        reported = np.round(
            from_canonical(s.values, METRICS[s.metric].unit, unit), 4
        ).tolist()  # Python floats: repr() is the JSON number
        arrival = s.t_ms + np.where(late, late_delay, latency)
        ts_tok = _ts_tokens(d, fleet, s.t_ms)
        ingested = _iso_ms(arrival)
        prefix = f'{{"device_id":"{d.device_id}","site_id":"{d.site_id}","metric":"{s.metric}","value":'
        lines = []
        kinds = []
        for i in np.flatnonzero(s.keep):
            if bad[i]:
                kind = BAD_KINDS[bad_kind_idx[i]]
                record = {
                    "device_id": d.device_id,
                    "site_id": d.site_id,
                    "metric": s.metric,
                    "value": reported[i],
                    "unit": unit,
                    "ts": int(s.t_ms[i]) if d.ts_format == "epoch_ms" else str(ts_tok[i]).strip('"'),
                    "message_id": message_ids[i],
                    "ingested_at": str(ingested[i]),
                }
                lines.append(
                    corrupt(record, kind, rng_for(fleet.seed, STREAM_FAULT, d.index, mi, day.toordinal(), int(i)))
                )
                kinds.append(kind)
            else:
                lines.append(
                    f'{prefix}{reported[i]!r},"unit":"{unit}","ts":{ts_tok[i]},'
                    f'"message_id":"{message_ids[i]}","ingested_at":"{ingested[i]}"}}'
                )
                kinds.append("")
        idx = np.flatnonzero(s.keep)
        frame = pd.DataFrame(
            {
                "arrival_ms": arrival[idx],
                "line": lines,
                "device_id": d.device_id,
                "bad_kind": kinds,
                "duplicate": False,
                "late": late[idx],
            }
        )
        # A retried publish: same message id and event, new ingestion time.
        redo = dup[idx]
        if redo.any():
            copies = frame[redo].copy()
            new_arrival = copies["arrival_ms"].to_numpy() + retry_delay[idx][redo]
            old_ing, new_ing = _iso_ms(copies["arrival_ms"].to_numpy()), _iso_ms(new_arrival)
            copies["line"] = [
                line.replace(f'"ingested_at":"{o}"', f'"ingested_at":"{n_}"')
                for line, o, n_ in zip(copies["line"], old_ing, new_ing)
            ]
            copies["arrival_ms"] = new_arrival
            copies["duplicate"] = True
            frame = pd.concat([frame, copies], ignore_index=True)
        frames.append(frame)
    return DayDeliveries(day, pd.concat(frames, ignore_index=True), found)


def days_between(start_ms: int, end_ms: int) -> list[date]:
    first = pd.Timestamp(start_ms, unit="ms", tz="UTC").date()
    last = pd.Timestamp(end_ms - 1, unit="ms", tz="UTC").date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


class DeliveryWindows:
    """Cuts arrival windows out of per-day deliveries, generating each event day once."""

    def __init__(self, fleet: Fleet, cfg: SimConfig):
        self.fleet, self.cfg = fleet, cfg
        self._cache: dict[date, DayDeliveries] = {}

    def day(self, day: date) -> DayDeliveries:
        if day not in self._cache:
            self._cache[day] = deliveries_for_day(self.fleet, self.cfg, day)
        return self._cache[day]

    def between(self, start_ms: int, end_ms: int) -> pd.DataFrame:
        days = days_between(start_ms - MAX_DELAY_MS, end_ms)
        for stale in [d for d in self._cache if d < days[0]]:
            del self._cache[stale]
        parts = []
        for day in days:
            df = self.day(day).frame
            parts.append(df[(df["arrival_ms"] >= start_ms) & (df["arrival_ms"] < end_ms)])
        out = pd.concat(parts, ignore_index=True)
        return out.sort_values("arrival_ms", kind="stable", ignore_index=True)
