"""Forecast training rows straight from the simulator's signals, without a lake.

The rows have the shape of iot_lake.forecast.training_data_job's output (5-minute means with the
site's time zone, device model and outdoor temperature), for tests and benchmarks/forecast that
need many days quickly.
"""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd

from iot_lake.fleet import build_fleet
from iot_lake.simulate.deliveries import SimConfig, series_day
from iot_lake.simulate.signals import weather_at


def training_rows(
    devices: int, days: int, start: date, interval_s: int = 60, grain: str = "5min", seed: int = 42
) -> pd.DataFrame:
    fleet = build_fleet(devices, seed=seed)
    cfg = SimConfig(devices=devices, interval_s=interval_s)
    frames = []
    for offset in range(days):
        day = start + timedelta(days=offset)
        for device in fleet.devices:
            site = fleet.site_by_id[device.site_id]
            for metric in device.metrics:
                s = series_day(fleet, cfg, device, metric, day)
                t = s.t_ms[s.keep]
                frames.append(
                    pd.DataFrame(
                        {
                            "device_id": device.device_id,
                            "metric": metric,
                            "site_id": device.site_id,
                            "timezone": site.timezone,
                            "model": device.model,
                            "ts": t,
                            "value": s.values[s.keep],
                            "temperature_c": weather_at(fleet, site, t).temperature_c,
                        }
                    )
                )
    readings = pd.concat(frames, ignore_index=True)
    readings["bucket_start"] = pd.to_datetime(readings["ts"], unit="ms", utc=True).dt.floor(grain)
    rows = readings.groupby(
        ["device_id", "metric", "site_id", "timezone", "model", "bucket_start"], as_index=False
    ).agg(y=("value", "mean"), readings=("value", "size"), temperature_c=("temperature_c", "mean"))
    rows["event_date"] = rows["bucket_start"].dt.date
    return rows
