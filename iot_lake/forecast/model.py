"""Forecasting device metrics: series preparation, candidate models, backtest, persistence.

Every device metric is one series (``unique_id`` = ``device|metric``) on a regular grid of
``freq`` (5 minutes, or 1 minute where asked). Two candidates, both from well-kept libraries:

- ``seasonal_naive`` (statsforecast): the same time the day before. The baseline MASE is
  measured against, and what every other candidate has to beat.
- ``lightgbm`` (mlforecast + LightGBM): one global gradient-boosted model over all series, on
  per-series standardised values, with daily (and weekly, given the history) lags, the site's
  local calendar and its outdoor temperature the day before. Lags of a day or more keep the
  24-hour forecast free of fed-back predictions; intervals are conformal (mlforecast).

Exogenous features are things known 24 hours ahead: local hour and weekday (from the site's
time zone) and yesterday's weather at the same hour.
"""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

STEPS_PER_DAY = {"5min": 288, "1min": 1440}
CANDIDATES = ("seasonal_naive", "lightgbm")
STATICS = ["metric", "model"]
EXOGENOUS = ["local_hour", "local_weekday", "temperature_lag_1d"]
MODEL_FILE, META_FILE = "model.pkl", "model.json"


@dataclass(frozen=True)
class Hyperparameters:
    freq: str = "5min"
    horizon_hours: int = 24
    levels: tuple[int, ...] = (80, 95)
    candidates: tuple[str, ...] = CANDIDATES
    n_estimators: int = 150
    learning_rate: float = 0.05
    num_leaves: int = 31
    conformal_windows: int = 7  # days of conformal scores (with 2, a 95% interval covered 57% of a hold-out day)
    seed: int = 7

    def __post_init__(self) -> None:
        if self.freq not in STEPS_PER_DAY:
            raise ValueError(f"freq must be one of {', '.join(STEPS_PER_DAY)}, got {self.freq!r}")
        unknown = set(self.candidates) - set(CANDIDATES)
        if unknown or not self.candidates:
            raise ValueError(f"candidates must be among {', '.join(CANDIDATES)}, got {', '.join(self.candidates)}")
        if not 0 < self.horizon_hours <= 24 * 7:
            raise ValueError("horizon_hours must be between 1 and 168")

    @classmethod
    def from_strings(cls, values: dict[str, str]) -> Hyperparameters:
        """SageMaker hands hyperparameters over as strings (JSON for lists and numbers)."""
        known = {f.name: f for f in fields(cls)}
        unknown = set(values) - set(known)
        if unknown:
            raise ValueError(f"unknown hyperparameters: {', '.join(sorted(unknown))}")
        parsed = {}
        for name, raw in values.items():
            try:
                value = json.loads(raw)
            except (TypeError, ValueError):
                value = raw  # a bare string such as 5min
            if isinstance(value, str) and name in ("levels", "candidates"):
                value = [v.strip() for v in value.split(",") if v.strip()]
            parsed[name] = tuple(value) if isinstance(value, list) else value
        return cls(**parsed)

    @property
    def steps_per_day(self) -> int:
        return STEPS_PER_DAY[self.freq]

    @property
    def horizon(self) -> int:
        return self.horizon_hours * self.steps_per_day // 24


@dataclass
class Series:
    """Regular series for one model: the values, their static attributes, the sites' weather."""

    values: pd.DataFrame  # unique_id, ds (naive UTC), y, metric, model, *EXOGENOUS
    statics: pd.DataFrame  # unique_id -> device_id, metric, site_id, timezone, model
    weather: pd.DataFrame  # site_id, hour (naive UTC), temperature_c

    def until(self, end: pd.Timestamp) -> Series:
        return Series(self.values[self.values["ds"] < end], self.statics, self.weather)

    @property
    def last_ds(self) -> pd.Timestamp:
        return self.values["ds"].max()


def prepare(rows: pd.DataFrame, freq: str) -> Series:
    """Training-data rows (iot_lake.forecast.training_data_job) -> regular series with features.

    Gaps (a device that went quiet, a quarantined hour) are filled on each series' own grid and
    interpolated, because lags and seasonal naive need one value per step.
    """
    from utilsforecast.preprocessing import fill_gaps

    if rows.empty:
        raise ValueError("no training rows: nothing to forecast from")
    rows = rows.assign(ds=_naive_utc(rows["bucket_start"]), unique_id=rows["device_id"] + "|" + rows["metric"])
    statics = (
        rows.sort_values("ds")
        .groupby("unique_id", as_index=False)[["device_id", "metric", "site_id", "timezone", "model"]]
        .last()
    )
    weather = (
        rows.dropna(subset=["temperature_c"])
        .assign(hour=lambda f: f["ds"].dt.floor("h"))
        .groupby(["site_id", "hour"], as_index=False)["temperature_c"]
        .mean()
    )
    values = rows.groupby(["unique_id", "ds"], as_index=False)["y"].mean()
    values = fill_gaps(values, freq=freq, id_col="unique_id", time_col="ds")
    values["y"] = values.groupby("unique_id")["y"].transform(lambda s: s.interpolate(limit_direction="both"))
    return Series(with_features(values, statics, weather), statics, weather)


def with_features(frame: pd.DataFrame, statics: pd.DataFrame, weather: pd.DataFrame) -> pd.DataFrame:
    """Add the static attributes and the exogenous features to rows of (unique_id, ds[, y])."""
    out = frame.merge(statics[["unique_id", "metric", "model", "site_id", "timezone"]], on="unique_id", how="left")
    local_hour = np.empty(len(out))
    local_weekday = np.empty(len(out))
    for tz, index in out.groupby("timezone", dropna=False).groups.items():
        local = out.loc[index, "ds"].dt.tz_localize("UTC").dt.tz_convert(tz if isinstance(tz, str) else "UTC")
        positions = out.index.get_indexer(index)
        local_hour[positions] = local.dt.hour + local.dt.minute / 60
        local_weekday[positions] = local.dt.dayofweek
    out["local_hour"], out["local_weekday"] = local_hour, local_weekday
    yesterday = weather.rename(columns={"temperature_c": "temperature_lag_1d"})
    yesterday = yesterday.assign(hour=yesterday["hour"] + pd.Timedelta(days=1))
    out = (
        out.assign(hour=out["ds"].dt.floor("h"))
        .merge(yesterday, on=["site_id", "hour"], how="left")
        .drop(columns=["hour", "site_id", "timezone"])
    )
    for column in STATICS:
        out[column] = out[column].astype("category")
    return out.sort_values(["unique_id", "ds"], ignore_index=True)


def future_features(series: Series, horizon: int, freq: str) -> pd.DataFrame:
    """The exogenous features of the ``horizon`` steps after each series' last value."""
    last = series.values.groupby("unique_id")["ds"].max()
    offsets = pd.to_timedelta(np.arange(1, horizon + 1) * pd.Timedelta(freq))
    grid = pd.DataFrame(
        {
            "unique_id": np.repeat(last.index.to_numpy(), horizon),
            "ds": np.repeat(last.to_numpy(), horizon) + np.tile(offsets, len(last)),
        }
    )
    return with_features(grid, series.statics, series.weather)


def _naive_utc(column: pd.Series) -> pd.Series:
    ts = pd.to_datetime(column, utc=True)
    return ts.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")


# --- candidates -----------------------------------------------------------------------------------


def _interval_columns(levels: Sequence[int]) -> list[str]:
    return [f"{side}_{level}" for level in levels for side in ("lo", "hi")]


class SeasonalNaive:
    name = "seasonal_naive"

    def __init__(self, hp: Hyperparameters):
        self.hp = hp

    def fit(self, series: Series) -> SeasonalNaive:
        return self  # nothing to learn: the forecast is the history's last day

    def predict(self, history: Series, horizon: int) -> pd.DataFrame:
        from statsforecast import StatsForecast
        from statsforecast.models import SeasonalNaive as Model

        sf = StatsForecast(models=[Model(season_length=self.hp.steps_per_day)], freq=self.hp.freq, n_jobs=1)
        fc = sf.forecast(df=history.values[["unique_id", "ds", "y"]], h=horizon, level=list(self.hp.levels))
        return _standard(fc, "SeasonalNaive", self.hp.levels)


class LightGBM:
    name = "lightgbm"

    def __init__(self, hp: Hyperparameters):
        self.hp = hp
        self.forecaster = None
        self.lags: list[int] = []

    def fit(self, series: Series) -> LightGBM:
        import lightgbm as lgb
        from mlforecast import MLForecast
        from mlforecast.target_transforms import LocalStandardScaler
        from mlforecast.utils import PredictionIntervals

        spd = self.hp.steps_per_day
        days = series.values.groupby("unique_id").size().min() / spd
        # The longest lag must leave at least two days of rows to learn from after it.
        self.lags = [spd * d for d in (1, 2, 7) if days >= d + 2 + self.hp.conformal_windows * self.hp.horizon / spd]
        if not self.lags:
            raise ValueError(f"lightgbm needs at least {3 + self.hp.conformal_windows} days of history, got {days:.1f}")
        model = lgb.LGBMRegressor(
            n_estimators=self.hp.n_estimators,
            learning_rate=self.hp.learning_rate,
            num_leaves=self.hp.num_leaves,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.9,
            random_state=self.hp.seed,
            n_jobs=0,
            verbose=-1,
        )
        self.forecaster = MLForecast(
            models={self.name: model}, freq=self.hp.freq, lags=self.lags, target_transforms=[LocalStandardScaler()]
        )
        self.forecaster.fit(
            series.values,
            static_features=STATICS,
            prediction_intervals=PredictionIntervals(n_windows=self.hp.conformal_windows, h=self.hp.horizon),
        )
        return self

    def predict(self, history: Series, horizon: int) -> pd.DataFrame:
        """Forecast from the end of ``history``. The model keeps the tail of the series it was fitted
        on; the history after that tail is appended first (mlforecast computes conformal intervals
        only for stored series, so new_df cannot be used). Series it never saw are left out."""
        seen = pd.Series(np.asarray(self.forecaster.ts.last_dates), index=np.asarray(self.forecaster.ts.uids))
        values = history.values[history.values["unique_id"].isin(seen.index)]
        if values.empty:
            raise ValueError("the model has seen none of these series")
        if (values.groupby("unique_id")["ds"].max() < seen.reindex(values["unique_id"].unique())).any():
            raise ValueError("the model was fitted on data after the end of this history")
        newer = values[values["ds"] > values["unique_id"].map(seen)]
        forecaster = self.forecaster
        if not newer.empty:
            forecaster = copy.deepcopy(forecaster)  # the saved model stays as it was fitted
            forecaster.update(newer[["unique_id", "ds", "y"]])
        future = future_features(Series(values, history.statics, history.weather), horizon, self.hp.freq)
        fc = forecaster.predict(horizon, X_df=future.drop(columns=STATICS), level=list(self.hp.levels))
        return _standard(fc, self.name, self.hp.levels)


def _standard(fc: pd.DataFrame, column: str, levels: Sequence[int]) -> pd.DataFrame:
    renames = {
        column: "yhat",
        **{f"{column}-{side}-{level}": f"{side}_{level}" for level in levels for side in ("lo", "hi")},
    }
    return fc.reset_index(drop="unique_id" in fc.columns).rename(columns=renames)[
        ["unique_id", "ds", "yhat", *_interval_columns(levels)]
    ]


def make(name: str, hp: Hyperparameters):
    return {"seasonal_naive": SeasonalNaive, "lightgbm": LightGBM}[name](hp)


# --- backtest -------------------------------------------------------------------------------------


@dataclass
class Backtest:
    table: pd.DataFrame  # one row per model: mase, mae, coverage_<level>, series, holdout start/end
    forecasts: pd.DataFrame  # every model's hold-out forecasts beside the actuals
    holdout_start: pd.Timestamp
    skipped: dict[str, str] = field(default_factory=dict)  # candidate -> why it did not run


def backtest(series: Series, hp: Hyperparameters, champion=None) -> Backtest:
    """Hold out the most recent ``horizon`` of every series; fit each candidate on the rest and
    score its forecast: MASE against the seasonal-naive scale of the training part, MAE, and
    the share of actuals inside each prediction interval. A champion model (already fitted) is
    scored on the same hold-out without refitting."""
    from utilsforecast.losses import mae, mase

    holdout_start = series.last_ds - pd.Timedelta(hp.freq) * (hp.horizon - 1)
    train = series.until(holdout_start)
    actual = series.values[series.values["ds"] >= holdout_start][["unique_id", "ds", "y"]]
    scored, skipped, forecasts = [], {}, []
    runs = [(name, lambda name=name: make(name, hp).fit(train)) for name in hp.candidates]
    if champion is not None:
        runs.append(("champion", lambda: champion))
    for label, fitted in runs:
        try:
            # Too little history for a candidate's lags; a champion that was fitted on the hold-out.
            fc = actual.merge(fitted().predict(train, hp.horizon), on=["unique_id", "ds"], how="inner")
        except ValueError as exc:
            skipped[label] = str(exc)
            continue
        per_series = mase(
            fc,
            models=["yhat"],
            seasonality=hp.steps_per_day,
            train_df=train.values[["unique_id", "ds", "y"]],
            target_col="y",
        )
        finite = per_series["yhat"].replace([np.inf, -np.inf], np.nan).dropna()
        row = {
            "model": label,
            "mase": float(finite.mean()),
            "mase_median": float(finite.median()),
            "mae": float(mae(fc, models=["yhat"], target_col="y")["yhat"].mean()),
            "series": int(fc["unique_id"].nunique()),
            "points": len(fc),
        }
        for level in hp.levels:
            row[f"coverage_{level}"] = float(((fc["y"] >= fc[f"lo_{level}"]) & (fc["y"] <= fc[f"hi_{level}"])).mean())
        scored.append(row)
        forecasts.append(fc.assign(model=label))
    table = pd.DataFrame(scored)
    return Backtest(
        table, pd.concat(forecasts, ignore_index=True) if forecasts else pd.DataFrame(), holdout_start, skipped
    )


def best_candidate(table: pd.DataFrame) -> str:
    """The candidate with the lowest MASE (the champion row is not a candidate)."""
    candidates = table[table["model"] != "champion"].dropna(subset=["mase"])
    if candidates.empty:
        raise ValueError("no candidate could be backtested")
    return str(candidates.sort_values(["mase", "model"]).iloc[0]["model"])


# --- persistence ----------------------------------------------------------------------------------


def save(model, directory: Path, metadata: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / MODEL_FILE, "wb") as f:
        pickle.dump(model, f)
    (directory / META_FILE).write_text(
        json.dumps({"method": model.name, "hyperparameters": asdict(model.hp), **metadata}, indent=2, default=str)
    )


def load(directory: Path):
    """A saved model from its directory, or from a SageMaker model.tar.gz found in it."""
    import tarfile

    directory = Path(directory)
    if not (directory / MODEL_FILE).exists():
        archives = sorted(directory.rglob("model.tar.gz"))
        if not archives:
            raise FileNotFoundError(f"no {MODEL_FILE} or model.tar.gz under {directory}")
        with tarfile.open(archives[0]) as tar:
            tar.extractall(directory / "extracted", filter="data")
        directory = directory / "extracted"
    with open(directory / MODEL_FILE, "rb") as f:
        model = pickle.load(f)  # our own artifact, written by train.py
    return model, json.loads((directory / META_FILE).read_text())
