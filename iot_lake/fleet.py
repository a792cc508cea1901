"""The simulated fleet: sites, devices and the metrics they report, derived from a seed.

This is also the device registry the historian is seeded with, so the simulator, the database
and (later) the curated validation agree on which devices exist and what is physically possible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str  # canonical unit the lake stores
    min_value: float  # physical range, canonical unit
    max_value: float


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("temperature", "degC", -40.0, 150.0),
        Metric("vibration", "mm/s", 0.0, 100.0),
        Metric("pressure", "kPa", 0.0, 2000.0),
        Metric("power", "kW", 0.0, 1000.0),
    )
}

# The unit a TX-200US (imperial) device reports each metric in; others report canonical units.
IMPERIAL_UNITS: dict[str, str] = {"temperature": "degF", "pressure": "psi"}


@dataclass(frozen=True)
class Site:
    site_id: str
    name: str
    latitude: float
    longitude: float
    timezone: str
    utc_offset_hours: float  # standard offset, for devices that stamp local time
    climate_mean_c: float  # annual mean outdoor temperature
    climate_swing_c: float  # summer/winter half-amplitude
    daily_swing_c: float


_SITE_CATALOGUE = [
    ("Rotterdam plant", 51.92, 4.48, "Europe/Amsterdam", 1.0, 11.0, 7.0, 4.0),
    ("Monterrey plant", 25.69, -100.32, "America/Monterrey", -6.0, 22.5, 7.5, 6.0),
    ("Pune plant", 18.52, 73.86, "Asia/Kolkata", 5.5, 25.0, 4.0, 7.0),
    ("Cleveland plant", 41.50, -81.69, "America/New_York", -5.0, 10.5, 12.0, 5.0),
    ("Nagoya plant", 35.18, 136.91, "Asia/Tokyo", 9.0, 16.0, 10.0, 4.5),
    ("Gdansk plant", 54.35, 18.65, "Europe/Warsaw", 1.0, 8.5, 9.0, 4.0),
    ("Campinas plant", -22.91, -47.06, "America/Sao_Paulo", -3.0, 21.5, 3.5, 6.0),
    ("Perth plant", -31.95, 115.86, "Australia/Perth", 8.0, 18.5, 5.5, 6.5),
]


@dataclass(frozen=True)
class DeviceMetric:
    metric: str
    unit: str  # unit the device reports in
    base: float  # per-device baseline, canonical unit
    trend_per_day: float  # slow ageing drift, canonical unit per day
    noise: float  # innovation scale of the AR(1) noise


@dataclass(frozen=True)
class Device:
    index: int
    device_id: str
    site_id: str
    model: str
    firmware: str
    installed_on: date
    sample_phase: float  # 0..1: devices sample on their own phase within the interval
    ts_format: str  # "iso_z" | "iso_offset" | "epoch_ms": how its firmware stamps events
    metrics: dict[str, DeviceMetric] = field(default_factory=dict)


@dataclass(frozen=True)
class Fleet:
    seed: int
    sites: list[Site]
    devices: list[Device]

    @property
    def site_by_id(self) -> dict[str, Site]:
        return {s.site_id: s for s in self.sites}


def build_fleet(n_devices: int = 50, seed: int = 42) -> Fleet:
    if n_devices < 1:
        raise ValueError("a fleet needs at least one device")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    n_sites = max(1, min(len(_SITE_CATALOGUE), -(-n_devices // 10)))
    sites = [Site(f"site-{i + 1:02d}", *_SITE_CATALOGUE[i]) for i in range(n_sites)]
    devices = []
    for i in range(n_devices):
        imperial = rng.random() < 0.12
        model = "TX-200US" if imperial else str(rng.choice(["TX-100", "TX-200", "VBX-9"]))
        ts_format = str(rng.choice(["iso_z", "iso_offset", "epoch_ms"], p=[0.8, 0.1, 0.1]))
        base = {
            "temperature": rng.uniform(38.0, 55.0),
            "vibration": rng.uniform(2.0, 6.0),
            "pressure": rng.uniform(420.0, 680.0),
            "power": rng.uniform(30.0, 120.0),
        }
        noise = {"temperature": 0.35, "vibration": 0.06, "pressure": 2.5, "power": 1.0}
        metrics = {}
        for name, b in base.items():
            unit = IMPERIAL_UNITS[name] if imperial and name in IMPERIAL_UNITS else METRICS[name].unit
            trend = b * rng.uniform(-0.0002, 0.0006)  # ageing: mostly upward, at most ~2%/month
            metrics[name] = DeviceMetric(name, unit, float(b), float(trend), noise[name])
        devices.append(
            Device(
                index=i,
                device_id=f"dev-{i + 1:04d}",
                site_id=sites[i % n_sites].site_id,
                model=model,
                firmware=f"{rng.integers(1, 4)}.{rng.integers(0, 10)}.{rng.integers(0, 20)}",
                installed_on=date(2021, 1, 1) + np.timedelta64(int(rng.integers(0, 1400)), "D").item(),
                sample_phase=float(rng.uniform(0, 1)),
                ts_format=ts_format,
                metrics=metrics,
            )
        )
    return Fleet(seed=seed, sites=sites, devices=devices)
