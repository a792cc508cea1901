"""Forecasting device metrics: series preparation, candidate models, backtest, persistence.

Every device metric is one series (``unique_id`` = ``device|metric``) on a regular grid of
``freq`` (5 minutes, or 1 minute where asked). Three candidates:

- ``seasonal_naive``: the same time the day before. The scale of MASE, and a baseline every
  other candidate has to beat.
- ``seasonal_naive_weekly``: the same time a week before, the other baseline.
- ``lightgbm`` (mlforecast + LightGBM): one global gradient-boosted model over all series, on
  per-series standardised values, with daily (and weekly, given the history) lags, the site's
  local calendar and its outdoor temperature the day before. Lags of a day or more keep the
  24-hour forecast free of fed-back predictions. It learns from the observed buckets only: the
  historian's 15-minute history is one bucket in three on the 5-minute grid, the rest interpolated
  for the lags to read (``Series.observed``).

Every candidate's intervals come from the same split-conformal calibration (``Calibration``):
per series, quantiles of the model's own out-of-sample errors of 24-hour forecasts made on the
days before (iot_lake.forecast.evaluation computes them with rolling origins).

Exogenous features are things known 24 hours ahead: local hour and weekday (from the site's
time zone) and yesterday's weather at the same hour.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from iot_lake.forecast.registry import sha256_of

# LightGBM's OpenMP threads spin while they wait: with every core busy elsewhere (a Spark job, the
# next run, CI) a 35-second training took over 300 s here, 41 s with passive waiting. libgomp reads
# this when LightGBM is loaded (inside fit), after this module.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

STEPS_PER_DAY = {"5min": 288, "1min": 1440}
CANDIDATES = ("seasonal_naive", "seasonal_naive_weekly", "lightgbm")
NAIVE_DAYS = {"seasonal_naive": 1, "seasonal_naive_weekly": 7}
STATICS = ["metric", "model"]
ATTRIBUTES = ["device_id", "metric", "site_id", "timezone", "model"]  # of a device metric
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
    # LightGBM's loss on the standardised target: absolute error, the error MASE measures. With
    # squared error the fit followed the spikes and level shifts of the real AWS CloudWatch series
    # (backtest MASE 1.54 against the daily naive's 1.49; 1.37 with L1, docs/forecasting.md).
    objective: str = "l1"
    # Days of out-of-sample errors the intervals are calibrated on (each day one 24-hour forecast
    # from a model fitted on the days before it); mlforecast's per-step quantile of 2 windows
    # covered 57% at 95%. A candidate is deployed only once it has errors on all of them
    # (evaluation.RollingBacktest.eligible).
    conformal_windows: int = 3
    backtest_origins: int = 3  # day boundaries scored by train.py's rolling-origin backtest
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
    # Per row of ``values``: whether y is a reading rather than filled in by ``interpolated``
    # (None: every row is). A historian's 15-minute history on the 5-minute grid is two thirds filled.
    observed: np.ndarray | None = None

    def until(self, end: pd.Timestamp) -> Series:
        keep = (self.values["ds"] < end).to_numpy()
        observed = None if self.observed is None else self.observed[keep]
        return Series(self.values[keep], self.statics, self.weather, observed)

    def interpolated(self) -> Series:
        """Gaps filled from this series' own values only: split first, then interpolate, so a
        training part never borrows a value from after its end. ``observed`` keeps which were readings."""
        values = self.values.copy()
        observed = values["y"].notna().to_numpy() if self.observed is None else self.observed
        values["y"] = values.groupby("unique_id")["y"].transform(lambda s: s.interpolate(limit_direction="both"))
        return Series(values, self.statics, self.weather, observed)

    @property
    def last_ds(self) -> pd.Timestamp:
        return self.values["ds"].max()


def prepare(rows: pd.DataFrame, freq: str, interpolate: bool = True) -> Series:
    """Training-data rows (iot_lake.forecast.training_data_job) -> regular series with features.

    Gaps (a device that went quiet, a quarantined hour) become rows on each series' own grid;
    lags and seasonal naive need one value per step, so they are interpolated unless
    ``interpolate`` is false: a backtest keeps them missing and interpolates each training part
    after the split (``Series.interpolated``).
    """
    from utilsforecast.preprocessing import fill_gaps

    if rows.empty:
        raise ValueError("no training rows: nothing to forecast from")
    rows = _keyed(rows)
    statics = rows.sort_values("ds").groupby("unique_id", as_index=False)[ATTRIBUTES].last()
    weather = _weather(rows)
    values = rows.groupby(["unique_id", "ds"], as_index=False)["y"].mean()
    values = fill_gaps(values, freq=freq, id_col="unique_id", time_col="ds")
    series = Series(with_features(values, statics, weather), statics, weather)
    return series.interpolated() if interpolate else series


def prepare_before(rows: pd.DataFrame, freq: str, ends: Sequence[pd.Timestamp]) -> list[Series]:
    """``prepare(rows before end, freq)`` for each of ``ends`` (UTC), the same frames, with the
    whole history prepared once (a backfilled range of 24 origins prepared its 4 days 24 times).

    Before an end, the whole history's grid, features and interpolation are the prefix's, up to the
    prefix's last bucket, but for one thing: after each series' last value before the end, the
    prefix repeats that value where the whole history draws a line to the next one. The device
    attributes a prefix sees must be the whole history's: if any changed, each prefix is prepared."""
    keyed = _keyed(rows)
    if keyed.drop_duplicates(["unique_id", *ATTRIBUTES])["unique_id"].duplicated().any():
        times = pd.to_datetime(rows["bucket_start"], utc=True)
        return [prepare(rows[times < pd.Timestamp(end)], freq) for end in ends]
    whole = prepare(rows, freq, interpolate=False)
    values, y = whole.values, whole.values["y"]
    values = values.assign(
        _line=whole.interpolated().values["y"],  # a gap between two values before the end: the whole history's
        _repeated=y.groupby(values["unique_id"]).ffill(),  # a gap after the last value before the end
        _next=values["ds"].where(y.notna()).groupby(values["unique_id"]).bfill(),  # the bucket of the next value
    )
    whole = Series(values, whole.statics, whole.weather)
    return [_before(whole, keyed, pd.Timestamp(end).tz_convert("UTC").tz_localize(None)) for end in ends]


def _before(whole: Series, keyed: pd.DataFrame, end: pd.Timestamp) -> Series:
    """``whole`` (prepared from ``keyed`` rows, with prepare_before's helper columns) as if prepared
    from its rows before ``end`` (naive UTC) only."""
    before = keyed[keyed["ds"] < end]
    if before.empty:
        raise ValueError("no training rows: nothing to forecast from")
    # fill_gaps extends every series to the last bucket of any series.
    values = whole.values[whole.values["ds"] <= before["ds"].max()]
    values = values.assign(y=np.where(values["_next"] < end, values["_line"], values["_repeated"]))
    values = values.drop(columns=["_line", "_repeated", "_next"]).reset_index(drop=True)
    for column in STATICS:  # with_features' categories are the values present
        values[column] = values[column].cat.remove_unused_categories()
    statics = whole.statics[whole.statics["unique_id"].isin(before["unique_id"].unique())].reset_index(drop=True)
    # Hours that ended by the end are averaged over the same rows as the whole history's; the hour
    # the end falls in (if it is not on the hour) over its rows before the end only.
    hour = end.floor("h")
    weather, partial = whole.weather[whole.weather["hour"] < hour], before[before["ds"] >= hour]
    if not partial.empty:
        weather = pd.concat([weather, _weather(partial)]).sort_values(["site_id", "hour"])
    return Series(values, statics, weather.reset_index(drop=True))


def _keyed(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.assign(ds=_naive_utc(rows["bucket_start"]), unique_id=rows["device_id"] + "|" + rows["metric"])


def _weather(rows: pd.DataFrame) -> pd.DataFrame:
    """The sites' hourly mean outdoor temperature from keyed rows."""
    return (
        rows.dropna(subset=["temperature_c"])
        .assign(hour=lambda f: f["ds"].dt.floor("h"))
        .groupby(["site_id", "hour"], as_index=False)["temperature_c"]
        .mean()
    )


def with_features(frame: pd.DataFrame, statics: pd.DataFrame, weather: pd.DataFrame) -> pd.DataFrame:
    """Add the static attributes and the exogenous features to rows of (unique_id, ds[, y])."""
    out = frame.merge(statics[["unique_id", "metric", "model", "site_id", "timezone"]], on="unique_id", how="left")
    local_hour = np.empty(len(out))
    local_weekday = np.empty(len(out))
    for tz, index in out.groupby("timezone", dropna=False).groups.items():
        local = out.loc[index, "ds"].dt.tz_localize("UTC").dt.tz_convert(tz if isinstance(tz, str) else "UTC")
        positions = out.index.get_indexer(index)
        local_hour[positions] = local.dt.hour + local.dt.minute / 60
        local_weekday[positions] = local.dt.day_of_week
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


@dataclass
class Calibration:
    """Split-conformal intervals: per series, the signed errors' quantiles at (1 - level) / 2 and
    (1 + level) / 2 of a model's out-of-sample 24-hour forecasts on the days before, added to its
    point forecast. One quantile per series over every step of the day: a horizon step alone has
    only one error a day, too few to calibrate a 95% interval."""

    offsets: pd.DataFrame  # index unique_id; lo_<level>, hi_<level> offsets from yhat
    days: int  # distinct forecast days the errors came from

    @classmethod
    def from_errors(cls, errors: pd.DataFrame, levels: Sequence[int]) -> Calibration:
        """``errors``: unique_id, ds, y, yhat of out-of-sample forecasts (missing actuals dropped)."""
        e = errors.dropna(subset=["y", "yhat"])
        e = e.assign(error=e["y"] - e["yhat"])
        grouped = e.groupby("unique_id")["error"]
        offsets = pd.DataFrame(index=pd.Index(sorted(e["unique_id"].unique()), name="unique_id"))
        for level in levels:
            alpha = 1 - level / 100
            # Clipped at 0: after biased days the band still holds the point forecast (deviations
            # are scored by the distance from it in band widths); that only ever widens it.
            offsets[f"lo_{level}"] = grouped.quantile(alpha / 2, interpolation="lower").clip(upper=0)
            offsets[f"hi_{level}"] = grouped.quantile(1 - alpha / 2, interpolation="higher").clip(lower=0)
        days = e["origin"].nunique() if "origin" in e else e["ds"].dt.floor("D").nunique()
        return cls(offsets, int(days))

    def apply(self, fc: pd.DataFrame, levels: Sequence[int]) -> pd.DataFrame:
        """Point forecasts (unique_id, ds, yhat) -> with intervals; NaN for a series never calibrated."""
        offsets = self.offsets.reindex(fc["unique_id"]).to_numpy()
        out = fc[["unique_id", "ds", "yhat"]].reset_index(drop=True)
        for i, column in enumerate(_interval_columns(levels)):
            out[column] = out["yhat"].to_numpy() + offsets[:, i]
        return out


def naive_errors(series: Series, season_days: int, days: int, steps_per_day: int) -> pd.DataFrame:
    """In-sample errors of a seasonal naive on the last ``days`` days of ``series``: for a model
    with nothing to fit these are its out-of-sample errors of 24-hour forecasts made on those days."""
    season = season_days * steps_per_day
    frame = series.values[["unique_id", "ds", "y"]]
    lagged = frame.groupby("unique_id")["y"].shift(season)
    out = frame.assign(yhat=lagged).dropna(subset=["yhat"])
    since = out.groupby("unique_id")["ds"].transform("max") - pd.Timedelta(days=days)
    return out[out["ds"] > since]


class SeasonalNaive:
    """The value one season (a day, or a week) before. Nothing to fit; its intervals are calibrated
    on its errors over the history's last ``conformal_windows`` days."""

    name = "seasonal_naive"
    season_days = 1

    def __init__(self, hp: Hyperparameters):
        self.hp = hp

    def fit(self, series: Series) -> SeasonalNaive:
        self.min_history(series)
        return self

    def min_history(self, series: Series) -> None:
        days = series.values.groupby("unique_id").size().max() / self.hp.steps_per_day
        if days < self.season_days:
            raise ValueError(f"{self.name} needs at least {self.season_days} days of history, got {days:.1f}")

    def point(self, history: Series, horizon: int) -> pd.DataFrame:
        """The forecast without intervals: each step the value ``k`` seasons before, the smallest
        ``k`` that reaches into the history."""
        self.min_history(history)
        season = self.season_days * self.hp.steps_per_day
        step = pd.Timedelta(self.hp.freq)
        frames = []
        for uid, group in history.values.groupby("unique_id", sort=True):
            y = group["y"].to_numpy()
            if len(y) < season:
                continue  # a series younger than the season has no value to repeat
            h = np.arange(horizon)
            yhat = y[len(y) - season + h % season]
            frames.append(pd.DataFrame({"unique_id": uid, "ds": group["ds"].iloc[-1] + step * (h + 1), "yhat": yhat}))
        if not frames:
            raise ValueError(f"{self.name}: no series with {self.season_days} days of history")
        return pd.concat(frames, ignore_index=True)

    def predict_many(self, histories: Sequence[Series], horizon: int) -> list[pd.DataFrame]:
        return [self.predict(history, horizon) for history in histories]  # nothing fitted to share

    def predict(self, history: Series, horizon: int) -> pd.DataFrame:
        errors = naive_errors(history, self.season_days, self.hp.conformal_windows, self.hp.steps_per_day)
        return Calibration.from_errors(errors, self.hp.levels).apply(self.point(history, horizon), self.hp.levels)


class SeasonalNaiveWeekly(SeasonalNaive):
    name = "seasonal_naive_weekly"
    season_days = 7


class LightGBM:
    name = "lightgbm"

    def __init__(self, hp: Hyperparameters):
        self.hp = hp
        self.forecaster = None
        self.lags: list[int] = []
        self.calibration: Calibration | None = None  # set from the backtest's out-of-sample errors

    def fit(self, series: Series) -> LightGBM:
        from mlforecast import MLForecast
        from mlforecast.lag_transforms import RollingMean, SeasonalRollingMean
        from mlforecast.target_transforms import LocalStandardScaler

        from iot_lake.forecast import lgbm

        spd = self.hp.steps_per_day
        days = series.values.groupby("unique_id").size().max() / spd
        # The longest lag must leave at least two days of rows to learn from after it.
        self.lags = [spd * d for d in (1, 2, 7) if days >= d + 2]
        if not self.lags:
            raise ValueError(f"lightgbm needs at least 3 days of history, got {days:.1f}")
        model = lgbm.LGBMRegressor(
            n_estimators=self.hp.n_estimators,
            learning_rate=self.hp.learning_rate,
            num_leaves=self.hp.num_leaves,
            objective=self.hp.objective,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.9,
            random_state=self.hp.seed,
            n_jobs=lgbm.threads(len(series.values)),
            verbose=-1,
        )
        # Smoothed versions of the day-old values, for series whose single value a day back is mostly
        # noise: the hour around it, the whole day before it, the same time over the past week.
        smoothed = [
            RollingMean(window_size=spd // 24, min_samples=1),
            RollingMean(window_size=spd, min_samples=spd // 24),
            SeasonalRollingMean(season_length=spd, window_size=7, min_samples=1),
        ]
        self.forecaster = MLForecast(
            models={self.name: model},
            freq=self.hp.freq,
            lags=self.lags,
            lag_transforms={spd: smoothed},
            target_transforms=[LocalStandardScaler()],
        )
        if series.observed is None or series.observed.all():
            self.forecaster.fit(series.values, static_features=STATICS, dropna=False)
            return self
        # Lags and rolling means read the interpolated series (a lag must have a value), but the rows
        # learnt from are the readings only: a line drawn between two 15-minute historian means is no
        # target to learn (and skipping those rows makes history cheap to fit).
        prep = self.forecaster.preprocess(series.values, static_features=STATICS, dropna=False)
        observed = series.values.loc[series.observed, ["unique_id", "ds"]]
        prep = prep.merge(observed, on=["unique_id", "ds"], how="inner")
        self.forecaster.fit_models(prep[self.forecaster.ts.features_order_], prep["y"].to_numpy())
        return self

    def point(self, history: Series, horizon: int) -> pd.DataFrame:
        """Forecast from the end of ``history`` without intervals. The model keeps the tail of the
        series it was fitted on; the history after that tail is appended first. Series it never saw
        are left out."""
        return self._forecast(history, horizon, levels=None)

    def predict(self, history: Series, horizon: int) -> pd.DataFrame:
        if self.calibration is None:
            if self.forecaster is not None and getattr(self.forecaster, "_cs_df", None) is not None:
                return self._forecast(history, horizon, levels=self.hp.levels)  # a model of mlforecast's conformal
            raise ValueError("lightgbm has no calibration for its intervals (train.py sets it from the backtest)")
        return self.calibration.apply(self.point(history, horizon), self.hp.levels)

    def predict_many(self, histories: Sequence[Series], horizon: int) -> list[pd.DataFrame]:
        """``predict`` from the end of each history, in one recursive pass over all of them (see
        ``points``): a backfilled range of 24 origins cost 24 passes of 288 LightGBM calls on 80
        rows, mostly per-call overhead."""
        if self.calibration is None or len(histories) < 2 or not _stackable(self.forecaster.ts):
            return [self.predict(history, horizon) for history in histories]
        return [
            self.calibration.apply(fc, self.hp.levels) for fc in points([self] * len(histories), histories, horizon)
        ]

    def _forecast(self, history: Series, horizon: int, levels) -> pd.DataFrame:
        forecaster, future = self._caught_up(history, horizon)
        fc = forecaster.predict(horizon, X_df=future, level=list(levels) if levels else None)
        return _standard(fc, self.name, levels or ())

    def _caught_up(self, history: Series, horizon: int):
        """The forecaster with the history after its fitted tail appended, and the exogenous features
        of the ``horizon`` steps after the history's end."""
        seen = pd.Series(np.asarray(self.forecaster.ts.last_dates), index=np.asarray(self.forecaster.ts.uids))
        values = history.values[history.values["unique_id"].isin(seen.index)]
        if values.empty:
            raise ValueError("the model has seen none of these series")
        if (values.groupby("unique_id")["ds"].max() < seen.reindex(values["unique_id"].unique())).any():
            raise ValueError("the model was fitted on data after the end of this history")
        newer = values[values["ds"] > values["unique_id"].map(seen)]
        # mlforecast forecasts every series it keeps and updates them all or none: a series the model
        # was fitted on but the history no longer holds (its device stopped sending) is left out, and
        # so is one the history has not moved on (it stopped before the others: its forecast would
        # start in the past). The real data's ended files failed 4 of 20 days on this.
        keep = (newer if not newer.empty else values)["unique_id"].unique()
        values = values[values["unique_id"].isin(keep)]
        forecaster = self.forecaster
        if not newer.empty or len(keep) < len(seen):
            # The saved model stays as it was fitted: the series' state is copied, the fitted model shared.
            forecaster = copy.copy(forecaster)
            forecaster.ts = _subset(copy.deepcopy(forecaster.ts), keep)
            if not newer.empty:
                forecaster.update(newer[["unique_id", "ds", "y"]])
        future = future_features(Series(values, history.statics, history.weather), horizon, self.hp.freq)
        return forecaster, future.drop(columns=STATICS)


def points(models: Sequence, histories: Sequence[Series], horizon: int) -> list[pd.DataFrame]:
    """``model.point(history, horizon)`` for each pair, the same numbers, with the LightGBM pairs that
    share a feature layout forecast in one recursive pass. mlforecast forecasts recursively, one
    LightGBM call per step whatever the number of series, so the per-call overhead, not the rows,
    is the cost: the nightly backtest's six origins were six passes of 288 calls, half of a
    30-day training. Every (history, series) pair is a series of its own in the stacked
    forecaster; mlforecast's features, scaling and LightGBM's prediction are per series and per
    row, and each pair's rows go to its own fitted model (``_RowsByModel``)."""
    out: list[pd.DataFrame | None] = [None] * len(models)
    groups: dict[tuple, list[int]] = {}
    for i, model in enumerate(models):
        if isinstance(model, LightGBM) and _stackable(model.forecaster.ts):
            groups.setdefault(tuple(model.forecaster.ts.features_order_), []).append(i)
        else:
            out[i] = model.point(histories[i], horizon)
    for members in groups.values():
        if len(members) == 1:
            out[members[0]] = models[members[0]].point(histories[members[0]], horizon)
            continue
        for i, fc in zip(
            members, _stacked_points([models[i] for i in members], [histories[i] for i in members], horizon)
        ):
            out[i] = fc
    return out


def _stacked_points(models: Sequence[LightGBM], histories: Sequence[Series], horizon: int) -> list[pd.DataFrame]:
    caught_up = [model._caught_up(history, horizon) for model, history in zip(models, histories)]
    forecaster, offsets = _stacked([f for f, _ in caught_up])
    name = models[0].name
    fitted = [f.models_[name] for f, _ in caught_up]
    if any(m is not fitted[0] for m in fitted[1:]):
        forecaster.models_ = {name: _RowsByModel(fitted, [len(f.ts.uids) for f, _ in caught_up])}
    futures = [
        future.assign(unique_id=_renumbered(f, future["unique_id"], o)) for (f, future), o in zip(caught_up, offsets)
    ]
    fc = _standard(forecaster.predict(horizon, X_df=pd.concat(futures, ignore_index=True)), name, ())
    out = []
    for (f, _), start in zip(caught_up, offsets):
        mine = fc[(fc["unique_id"] >= start) & (fc["unique_id"] < start + len(f.ts.uids))]
        out.append(mine.assign(unique_id=f.ts.uids[mine["unique_id"].to_numpy() - start]).reset_index(drop=True))
    return out


class _RowsByModel:
    """One estimator over stacked series fitted by different models: mlforecast hands it one row per
    series per step, in the stacked order, and each block of rows goes to the model that was fitted
    on those series."""

    def __init__(self, models: Sequence, sizes: Sequence[int]):
        self.models = list(models)
        self.bounds = np.cumsum([0, *sizes])

    def predict(self, X):
        return np.concatenate(
            [
                m.predict(X.iloc[a:b] if hasattr(X, "iloc") else X[a:b])
                for m, a, b in zip(self.models, self.bounds[:-1], self.bounds[1:])
            ]
        )


def _stackable(ts) -> bool:
    """Whether ``_stacked`` and ``_subset`` know all the per-series state of this forecaster's ``ts``:
    per-series scalers (or none), lag transforms, one model for every step."""
    from mlforecast.lag_transforms import _BaseLagTransform
    from mlforecast.target_transforms import _BaseLocalScaler

    return (
        ts.max_horizon is None
        and all(isinstance(t, _BaseLocalScaler) for t in ts.target_transforms or [])
        and all(isinstance(t, _BaseLagTransform) for t in ts.transforms.values())
    )


def _subset(ts, uids) -> object:
    """mlforecast's per-series state (``ts``, changed in place) kept for ``uids`` only, in its order.
    What it keeps per series is what ``_stacked`` stacks; mlforecast's own ``predict(ids=...)`` takes
    the same but does not put the lag transforms back, and ``update`` needs rows for every series."""
    idxs = np.flatnonzero(np.asarray(ts.uids.isin(uids)))
    if len(idxs) == len(ts.uids):
        return ts
    if not _stackable(ts):
        missing = sorted(set(ts.uids) - set(uids))
        raise ValueError(f"the history has no rows of {', '.join(map(str, missing))}, which this model forecasts")
    ts.ga, ts.uids, ts.last_dates = ts.ga.take(idxs), ts.uids[idxs], ts.last_dates[idxs]
    ts.static_features_ = ts.static_features_.iloc[idxs].reset_index(drop=True)
    if ts.target_transforms:
        ts.target_transforms = [t.take(idxs) for t in ts.target_transforms]
    ts.transforms = type(ts.transforms)((name, t.take(idxs)) for name, t in ts.transforms.items())
    return ts


def _stacked(forecasters: list) -> tuple:
    """One forecaster whose series are those of all ``forecasters`` side by side, numbered 0, 1, ...
    in order (integers: mlforecast sorts series by id, and their order must stay the order here),
    and the first number of each one's series. What mlforecast keeps per series (values, last dates,
    static features, scaler statistics, lag transforms' state) is concatenated in the same order."""
    from mlforecast.grouped_array import GroupedArray

    series = [f.ts for f in forecasters]
    sizes = [len(ts.uids) for ts in series]
    offsets = np.cumsum([0, *sizes[:-1]])
    ts = copy.copy(series[0])
    ts.uids = pd.Index(np.arange(sum(sizes)), name=ts.uids.name)
    ts.last_dates = series[0].last_dates.append([t.last_dates for t in series[1:]])
    lengths = np.concatenate([np.diff(t.ga.indptr) for t in series])
    indptr = np.append(0, np.cumsum(lengths)).astype(series[0].ga.indptr.dtype)
    ts.ga = GroupedArray(np.concatenate([t.ga.data for t in series]), indptr)
    ts.static_features_ = pd.concat(
        [t.static_features_.assign(**{ts.id_col: np.arange(n) + o}) for t, n, o in zip(series, sizes, offsets)],
        ignore_index=True,
    )
    if ts.target_transforms:
        ts.target_transforms = [type(g[0]).stack(list(g)) for g in zip(*(t.target_transforms for t in series))]
    ts.transforms = type(ts.transforms)(
        (name, type(tfm).stack([t.transforms[name] for t in series])) for name, tfm in ts.transforms.items()
    )
    stacked = copy.copy(forecasters[0])
    stacked.ts = ts
    return stacked, offsets


def _renumbered(forecaster, uids: pd.Series, offset: int) -> np.ndarray:
    """``uids`` as numbers of the stacked forecaster: ``offset`` + the position among the forecaster's
    series (all of them are among those: ``_caught_up`` keeps only series the model has seen)."""
    return forecaster.ts.uids.get_indexer(uids) + offset


def _standard(fc: pd.DataFrame, column: str, levels: Sequence[int]) -> pd.DataFrame:
    renames = {
        column: "yhat",
        **{f"{column}-{side}-{level}": f"{side}_{level}" for level in levels for side in ("lo", "hi")},
    }
    return fc.reset_index(drop="unique_id" in fc.columns).rename(columns=renames)[
        ["unique_id", "ds", "yhat", *_interval_columns(levels)]
    ]


def make(name: str, hp: Hyperparameters):
    return {"seasonal_naive": SeasonalNaive, "seasonal_naive_weekly": SeasonalNaiveWeekly, "lightgbm": LightGBM}[name](
        hp
    )


def best_candidate(table: pd.DataFrame) -> str:
    """The candidate with the lowest MASE (the champion row is not a candidate)."""
    candidates = table[table["model"] != "champion"].dropna(subset=["mase"]) if len(table) else table
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


class ModelIntegrityError(ValueError):
    """A model archive is not the one the registry recorded: it is never unpickled."""


def load(directory: Path, sha256: str | None = None):
    """A saved model from its directory, or from a SageMaker model.tar.gz found in it. With ``sha256``
    (what the registry recorded when the version was registered) the archive must match it before
    anything in it is unpickled: a pickle runs code, and the archive sits in a bucket other roles write."""
    import tarfile

    directory = Path(directory)
    if sha256 is not None or not (directory / MODEL_FILE).exists():
        archives = sorted(directory.rglob("model.tar.gz"))
        if not archives:
            raise FileNotFoundError(f"no {MODEL_FILE} or model.tar.gz under {directory}")
        if sha256 is not None:
            with open(archives[0], "rb") as f:
                if (found := sha256_of(f)) != sha256:
                    raise ModelIntegrityError(
                        f"{archives[0].name}: sha256 {found} is not the registered {sha256}; refusing to load it"
                    )
        with tarfile.open(archives[0]) as tar:
            tar.extractall(directory / "extracted", filter="data")
        directory = directory / "extracted"
    with open(directory / MODEL_FILE, "rb") as f:
        model = pickle.load(f)  # our own artifact, written by train.py
    return model, json.loads((directory / META_FILE).read_text())
