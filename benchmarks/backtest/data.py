"""The two datasets of the backtest benchmark, as training-data rows (iot_lake.forecast.training_data_job's shape).

- simulated: the simulator's fleet (iot_lake.simulate.training_rows), every device metric one series;
- real: NAB's realAWSCloudwatch development series (``$NAB_DATA`` or ../shared/datasets/nab-dev/data),
  every CSV one series, its timestamps floored to the 5-minute grid. They have no site, time zone or
  weather: the time zone is UTC and the temperature missing.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pandas as pd

from iot_lake.simulate.training_rows import training_rows

REPO = Path(__file__).resolve().parents[2]
NAB_DATA = Path(os.environ.get("NAB_DATA", REPO.parent / "shared" / "datasets" / "nab-dev" / "data"))
REAL_FOLDER = "realAWSCloudwatch"
START = date(2026, 11, 2)  # a Monday


def simulated_rows(workdir: Path, devices: int, days: int, seed: int) -> pd.DataFrame:
    path = workdir / f"rows-{devices}x{days}-{seed}.parquet"
    if not path.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        training_rows(devices=devices, days=days, start=START, seed=seed).to_parquet(path, index=False)
    return pd.read_parquet(path)


def real_rows(min_days: float, folder: Path | None = None) -> tuple[list[pd.DataFrame], dict[str, str]]:
    """The real series grouped by the span of time they cover (series recorded over the same days
    share origins and one global model, so no series is fitted on another's future), and the
    series left out with why."""
    folder = folder or NAB_DATA / REAL_FOLDER
    frames, left_out = [], {}
    for path in sorted(folder.glob("*.csv")):
        raw = pd.read_csv(path, parse_dates=["timestamp"])
        days = (raw["timestamp"].max() - raw["timestamp"].min()) / pd.Timedelta(days=1)
        if days < min_days:
            left_out[path.stem] = f"{days:.1f} days, fewer than {min_days:g}"
            continue
        metric = path.stem.rsplit("_", 1)[0] if path.stem.count("_") > 1 else path.stem
        bucket = raw["timestamp"].dt.floor("5min").dt.tz_localize("UTC")
        rows = (
            pd.DataFrame({"bucket_start": bucket, "y": raw["value"].astype(float)})
            .groupby("bucket_start", as_index=False)["y"]
            .mean()
        )
        frames.append(
            rows.assign(
                device_id=path.stem,
                metric=metric,
                site_id="aws",
                timezone="UTC",
                model=path.stem.split("_")[0],
                temperature_c=float("nan"),
                event_date=rows["bucket_start"].dt.date,
            )
        )
    groups: list[list[pd.DataFrame]] = []
    for frame in sorted(frames, key=lambda f: f["bucket_start"].max()):
        if groups and frame["bucket_start"].max() - groups[-1][-1]["bucket_start"].max() < pd.Timedelta(hours=12):
            groups[-1].append(frame)
        else:
            groups.append([frame])
    return [pd.concat(group, ignore_index=True) for group in groups], left_out
