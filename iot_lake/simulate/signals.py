"""Clean signals: site weather, plant load, and each device metric as a function of time.

Everything is a deterministic function of (seed, site/device, metric, UTC day), so any window
of time can be generated on its own and backfill, follow mode and re-runs agree to the byte.
Time is carried as int64 epoch milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd

from iot_lake.fleet import Device, Fleet, Site

MS_PER_DAY = 86_400_000
_TREND_REF = datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000.0
_SYNOPTIC_PERIODS_DAYS = np.array([2.7, 4.3, 6.1, 9.7])

# Stream ids for SeedSequence, so switching one feature off never shifts another's randomness.
STREAM_FLEET, STREAM_WEATHER, STREAM_NOISE, STREAM_ANOMALY, STREAM_DELIVERY, STREAM_FAULT = range(1, 7)
STREAM_OBJECT, STREAM_WEATHER_FILE = 7, 8


def day_start_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def rng_for(seed: int, stream: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, *keys]))


def _site_phases(seed: int, site_index: int) -> np.ndarray:
    return rng_for(seed, STREAM_WEATHER, site_index).uniform(0, 2 * np.pi, size=(3, len(_SYNOPTIC_PERIODS_DAYS)))


def _local_time(site: Site, t_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local hour of day (fractional), weekday (0=Mon) and day of year, DST included."""
    local = pd.DatetimeIndex(pd.to_datetime(t_ms, unit="ms", utc=True)).tz_convert(site.timezone)
    hour = local.hour.to_numpy() + local.minute.to_numpy() / 60.0 + local.second.to_numpy() / 3600.0
    return hour, local.day_of_week.to_numpy(), local.day_of_year.to_numpy()


@dataclass(frozen=True)
class Weather:
    temperature_c: np.ndarray
    humidity_pct: np.ndarray
    wind_speed_ms: np.ndarray
    precipitation_mm: np.ndarray


def weather_at(fleet: Fleet, site: Site, t_ms: np.ndarray) -> Weather:
    """Outdoor weather at a site: climate, daily cycle and multi-day weather systems."""
    site_index = fleet.sites.index(site)
    phases = _site_phases(fleet.seed, site_index)
    days = t_ms / MS_PER_DAY
    hour, _, doy = _local_time(site, t_ms)
    hemisphere = 1.0 if site.latitude >= 0 else -1.0
    seasonal = -hemisphere * site.climate_swing_c * np.cos(2 * np.pi * (doy - 15) / 365.25)
    diurnal = site.daily_swing_c * np.cos(2 * np.pi * (hour - 15.0) / 24.0)
    waves = np.sin(2 * np.pi * days[:, None] / _SYNOPTIC_PERIODS_DAYS + phases[None, 0])
    synoptic = 3.0 * waves.mean(axis=1) * 2.0
    temperature = site.climate_mean_c + seasonal + diurnal + synoptic
    moist = np.sin(2 * np.pi * days[:, None] / _SYNOPTIC_PERIODS_DAYS + phases[None, 1]).mean(axis=1)
    humidity = np.clip(65 - 1.2 * diurnal + 25 * moist, 5, 100)
    wind = np.abs(4 + 3 * np.sin(2 * np.pi * days[:, None] / _SYNOPTIC_PERIODS_DAYS + phases[None, 2]).sum(axis=1))
    precipitation = np.where(moist > 0.35, (moist - 0.35) * 6.0, 0.0)
    return Weather(temperature, humidity, wind, precipitation)


def plant_load(site: Site, t_ms: np.ndarray) -> np.ndarray:
    """Share of machines running (0..1): two shifts on weekdays, a short Saturday, idle Sunday."""
    hour, weekday, _ = _local_time(site, t_ms)

    def ramp(h, start, end):  # smooth 30-minute edges
        return 1 / (1 + np.exp(-(h - start) * 8)) * 1 / (1 + np.exp((h - end) * 8))

    weekday_load = 0.25 + 0.7 * ramp(hour, 6.0, 22.0)
    saturday_load = 0.2 + 0.45 * ramp(hour, 6.0, 14.0)
    sunday_load = np.full_like(hour, 0.15)
    return np.where(weekday < 5, weekday_load, np.where(weekday == 5, saturday_load, sunday_load))


JITTER_MS = 250  # a device clock's jitter: [0, 250) ms late


def sample_times(device: Device, day: date, interval_s: int) -> np.ndarray:
    """Event times of a device on one UTC day: its own sampling phase plus clock jitter.

    Every time stays within the day. The phase is capped so that phase + jitter < the interval: a
    device with a phase near 1 would otherwise put its last sample of a day into the next day, in
    the same minute (and historian 15-minute reading) as that day's first sample.
    """
    n = 86_400 // interval_s
    phase_ms = min(int(device.sample_phase * interval_s * 1000), interval_s * 1000 - JITTER_MS)
    jitter = rng_for(0, STREAM_NOISE, device.index, day.toordinal(), 99).integers(0, JITTER_MS, size=n)
    return day_start_ms(day) + phase_ms + np.arange(n, dtype=np.int64) * interval_s * 1000 + jitter


def clean_metric(fleet: Fleet, device: Device, metric: str, t_ms: np.ndarray, day: date) -> np.ndarray:
    """A device metric in canonical units without anomalies."""
    site = fleet.site_by_id[device.site_id]
    spec = device.metrics[metric]
    weather = weather_at(fleet, site, t_ms)
    load = plant_load(site, t_ms)
    outdoor = weather.temperature_c
    trend = spec.trend_per_day * (t_ms - _TREND_REF) / MS_PER_DAY
    if metric == "temperature":
        value = spec.base + 9.0 * load + 0.35 * (outdoor - 15.0)
    elif metric == "vibration":
        value = spec.base * (0.12 + 0.88 * load)
    elif metric == "pressure":
        value = spec.base + 55.0 * load + 0.9 * (outdoor - 15.0)
    elif metric == "power":
        value = (
            spec.base * (0.1 + 0.9 * load) + 1.3 * np.maximum(outdoor - 20.0, 0) + 0.7 * np.maximum(12.0 - outdoor, 0)
        )
    else:  # pragma: no cover - METRICS is closed
        raise ValueError(metric)
    metric_index = list(device.metrics).index(metric)
    noise = _ar1(rng_for(fleet.seed, STREAM_NOISE, device.index, metric_index, day.toordinal()), len(t_ms), spec.noise)
    value = value + trend + noise
    if metric in ("vibration", "power"):
        value = np.maximum(value, 0.02 * spec.base)
    return value


def _ar1(rng: np.random.Generator, n: int, scale: float, phi: float = 0.85) -> np.ndarray:
    shocks = rng.normal(0.0, scale, size=n)
    out = np.empty(n)
    state = rng.normal(0.0, scale / np.sqrt(1 - phi**2))
    for i in range(n):  # n is at most a day of samples; a Python loop over 1440 is ~0.2 ms
        state = phi * state + shocks[i]
        out[i] = state
    return out
