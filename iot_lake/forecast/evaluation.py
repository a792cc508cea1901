"""Rolling-origin backtest: every candidate judged on several days, each forecast made from the past only.

Origins are day boundaries counted back from the end of the data (``end - k days``, so each
scored day is a whole 24 hours; on the simulator's fleet they are midnights UTC). At every origin:

- the training part is the series before the origin, *then* interpolated (``Series.interpolated``),
  so a gap is never filled from a value at or after the origin;
- each candidate is refitted on that part alone and forecasts the next 24 hours (LightGBM: one
  plain fit per origin, no internal cross-validation: that is what keeps refitting cheap);
- its 80/95% intervals are split-conformal (``model.Calibration``): quantiles of the same
  candidate's errors on the up to ``conformal_windows`` days before the origin, each of those
  days forecast from an origin of its own. The scored day is never among them;
- MASE divides the day's mean absolute error by the in-sample MAE of the daily seasonal naive on
  the training part (``mean |y_t - y_{t-1 day}|`` over observed pairs before the origin), per
  series; coverage is the share of observed actuals inside each interval. Interpolated points
  are never scored.

Forecasts of the ``conformal_windows`` day boundaries before the first scored origin are made for
calibration only. Each candidate's figures are per origin (``per_origin``) and over all its scored
origins (``table``: MASE the mean over series and origins, coverage over every scored point).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from iot_lake.forecast.model import Calibration, Hyperparameters, Series, best_candidate, make, points

DAY = pd.Timedelta(days=1)


@dataclass
class RollingBacktest:
    table: pd.DataFrame  # one row per model over its scored origins
    per_origin: pd.DataFrame  # one row per model and scored origin
    forecasts: pd.DataFrame  # the scored forecasts with intervals beside the actuals, by model and origin
    origins: list[pd.Timestamp]  # the scored origins, oldest first
    errors: dict[str, pd.DataFrame] = field(default_factory=dict)  # model -> out-of-sample forecasts, every origin
    skipped: dict[str, str] = field(default_factory=dict)  # model -> why it did not run (at some origins)
    calibration_days: int = 7
    per_series: pd.DataFrame = field(default_factory=pd.DataFrame)  # model, origin, unique_id, mase

    @property
    def holdout_start(self) -> pd.Timestamp:
        return self.origins[0]

    @property
    def end(self) -> pd.Timestamp:
        """The end of the data: where the model training deploys forecasts from."""
        return self.origins[-1] + DAY

    def calibration(self, model: str, before: pd.Timestamp, levels) -> Calibration:
        """The intervals' calibration for forecasts from ``before``: ``model``'s out-of-sample errors
        on the ``calibration_days`` days before it."""
        return Calibration.from_errors(self._calibration_errors(model, before), levels)

    def calibrated_days(self, model: str, before: pd.Timestamp) -> int:
        """The days ``calibration(model, before)`` draws its errors from (its ``days``)."""
        errors = self._calibration_errors(model, before).dropna(subset=["y", "yhat"])
        return int(errors["origin"].nunique())

    def eligible(self, before: pd.Timestamp) -> list[str]:
        """The candidates that may be deployed for forecasts from ``before``: those whose intervals
        are calibrated on all ``calibration_days`` days before it. A quantile of one or two days of
        errors is not the interval's level: on the simulated fleet the weekly naive, a week old and
        calibrated on 1-3 days, won the selection on those days and its 80% interval covered 0.66 on
        the first (the deployed forecast 0.718 over 7 origins). Where no candidate has them all (a
        fleet of a few days), those calibrated on the most days."""
        days = {model: self.calibrated_days(model, before) for model in self.errors if model != "champion"}
        if not days or max(days.values()) == 0:
            return []
        enough = min(self.calibration_days, max(days.values()))
        return sorted(model for model, n in days.items() if n >= enough)

    def _calibration_errors(self, model: str, before: pd.Timestamp) -> pd.DataFrame:
        errors = self.errors[model]
        return errors[(errors["ds"] < before) & (errors["ds"] >= before - self.calibration_days * DAY)]


def day_origins(series: Series, n: int, freq: str) -> list[pd.Timestamp]:
    """The last ``n`` day boundaries counted back from the end of the data, oldest first."""
    end = series.last_ds + pd.Timedelta(freq)
    return [end - k * DAY for k in range(n, 0, -1)]


def naive_scale(raw: pd.DataFrame, steps_per_day: int) -> pd.DataFrame:
    """unique_id, ds, abs_diff: |y_t - y_{t-1 day}| on each series' regular grid (NaN where either is missing)."""
    lagged = raw.groupby("unique_id")["y"].shift(steps_per_day)
    return raw[["unique_id", "ds"]].assign(abs_diff=(raw["y"] - lagged).abs())


def score(fc: pd.DataFrame, scale: pd.Series, levels) -> tuple[pd.DataFrame, dict]:
    """Per-series MASE and the day's figures of forecasts ``fc`` (unique_id, ds, y, yhat[, intervals])."""
    fc = fc.dropna(subset=["y"])
    per_series = fc.assign(abs_error=(fc["y"] - fc["yhat"]).abs()).groupby("unique_id")["abs_error"].mean()
    mase = (per_series / scale.reindex(per_series.index)).replace([np.inf, -np.inf], np.nan)
    row = {
        "mase": float(mase.mean()),
        "mase_median": float(mase.median()),
        "mae": float(per_series.mean()),
        "series": int(per_series.size),
        "points": len(fc),
    }
    for level in levels:
        covered = coverage(fc, level)
        row[f"coverage_{level}"] = covered
    return mase.rename("mase").reset_index(), row


def coverage(fc: pd.DataFrame, level: int) -> float:
    """Share of actuals inside [lo, hi] of the ``level``% interval, over points that have both (NaN if none)."""
    lo, hi = fc.get(f"lo_{level}"), fc.get(f"hi_{level}")
    if lo is None or hi is None:
        return float("nan")
    known = fc["y"].notna() & lo.notna() & hi.notna()
    if not known.any():
        return float("nan")
    return float(((fc["y"] >= lo) & (fc["y"] <= hi))[known].mean())


def realised_coverage(forecasts: pd.DataFrame, actuals: pd.DataFrame, levels) -> tuple[dict[int, float], int]:
    """Share of the observed 5-minute means (``actuals``: device_id, metric, bucket_start, mean) inside
    the stored forecasts' intervals, over every (origin, bucket) pair that has an actual, and the
    number of such pairs: the served model's coverage out of sample, anomalies included."""
    keys = ["device_id", "metric", "bucket_start"]
    if forecasts.empty or actuals.empty:
        return {level: float("nan") for level in levels}, 0
    joined = forecasts.merge(actuals[[*keys, "mean"]].rename(columns={"mean": "y"}), on=keys, how="inner")
    return {level: coverage(joined, level) for level in levels}, int(joined["y"].notna().sum())


# Below this many rows of history the backtest forecasts each candidate's origins together: one
# recursive pass is mostly LightGBM's per-call overhead, so one pass for six origins wins on small
# fleets, and holding every origin's training part and model at once costs memory on large ones.
# Measured on 2 cores: 3 series x 30 days 7.2 s -> 4.4 s (+12 MiB at the peak); the main job's 80
# series x 14 days (322,560 rows) 17.4 s -> 15.3 s (+80 MiB); 800 series x 14 days (3.2M rows,
# LightGBM alone) 188 s -> 179 s (+950 MiB).
FORECAST_ORIGINS_TOGETHER_BELOW_ROWS = 1_000_000


def rolling_backtest(
    series: Series,
    hp: Hyperparameters,
    origins: int | None = None,
    champion=None,
    candidates: tuple[str, ...] | None = None,
) -> RollingBacktest:
    """Backtest every candidate (and an already-fitted champion) on the last ``origins`` day
    boundaries (default ``hp.backtest_origins``). ``series`` should come from
    ``prepare(rows, freq, interpolate=False)``: its gaps are interpolated per training part here.
    A candidate that cannot fit at an origin (too little history) is left out there and says why
    in ``skipped``; a champion is scored only where it was fitted before the origin."""
    n = origins or hp.backtest_origins
    window = hp.conformal_windows
    candidates = candidates or hp.candidates
    scored = day_origins(series, n, hp.freq)
    first = series.values["ds"].min()
    fit_origins = [o for o in [scored[0] - k * DAY for k in range(window, 0, -1)] + scored if o > first]
    raw = series.values[["unique_id", "ds", "y"]]
    diffs = naive_scale(raw, hp.steps_per_day)
    horizon = min(hp.horizon, hp.steps_per_day)  # origins are a day apart: one day each

    # Out-of-sample forecasts of every candidate at every origin, each from the part before it. A
    # small fleet's models are all fitted first and each candidate's origins forecast in one pass
    # (`points`); a large fleet's are forecast as each origin is fitted, since holding every origin's
    # training part at once costs memory that the pass does not win back there.
    together = len(series.values) < FORECAST_ORIGINS_TOGETHER_BELOW_ROWS
    pending: dict[str, dict[pd.Timestamp, tuple]] = {name: {} for name in candidates}
    forecasts: dict[str, dict[pd.Timestamp, pd.DataFrame]] = {name: {} for name in candidates}
    failed: dict[str, list[tuple[pd.Timestamp, str]]] = {}
    for origin in fit_origins:
        train = series.until(origin)
        if train.values.empty:
            continue
        train = train.interpolated()
        for name in candidates:
            try:
                pending[name][origin] = (make(name, hp).fit(train), train)
            except ValueError as exc:
                failed.setdefault(name, []).append((origin, str(exc)))
        if not together:
            _forecast_pending(pending, forecasts, raw, horizon, hp.freq)
    _forecast_pending(pending, forecasts, raw, horizon, hp.freq)
    # Say at how many origins, so a candidate that missed only the first ones (a young fleet) does
    # not read as never trained.
    skipped = {
        name: f"{why[0][1]} (at {len(why)} of {len(fit_origins)} origins, the first {why[0][0].isoformat()})"
        for name, why in failed.items()
    }
    if champion is not None:
        forecasts["champion"] = {}
        for origin in scored:
            train = series.until(origin).interpolated()
            try:
                fc = champion.predict(train, horizon)
            except ValueError as exc:  # fitted on data at or after this origin
                skipped.setdefault("champion", f"{exc} (at {origin.isoformat()})")
                continue
            forecasts["champion"][origin] = _actual(raw, origin, horizon, hp.freq).merge(
                fc, on=["unique_id", "ds"], how="inner"
            )

    errors = {
        name: pd.concat([fc[["unique_id", "ds", "y", "yhat"]].assign(origin=o) for o, fc in by_origin.items()])
        for name, by_origin in forecasts.items()
        if by_origin and name != "champion"
    }
    result = RollingBacktest(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), scored, errors, skipped, window)
    per_origin, per_series, scored_fc = [], [], []
    for name, by_origin in forecasts.items():
        for origin in scored:
            if origin not in by_origin:
                continue
            fc = by_origin[origin]
            days = 0
            if name != "champion":
                calibration = result.calibration(name, origin, hp.levels)
                days = calibration.days
                fc = fc[["unique_id", "ds", "y"]].merge(calibration.apply(fc, hp.levels), on=["unique_id", "ds"])
            before = diffs[diffs["ds"] < origin]
            scale = before.groupby("unique_id")["abs_diff"].mean()
            mase, row = score(fc, scale, hp.levels)
            per_origin.append({"model": name, "origin": origin, **row, "calibration_days": days})
            per_series.append(mase.assign(model=name, origin=origin))
            scored_fc.append(fc.assign(model=name, origin=origin))
    if not per_origin:
        return result
    result.per_origin = pd.DataFrame(per_origin)
    result.forecasts = pd.concat(scored_fc, ignore_index=True)
    result.per_series = pd.concat(per_series, ignore_index=True)
    result.table = summarize(result.per_origin, result.per_series, result.forecasts, hp.levels)
    return result


def _forecast_pending(pending: dict, forecasts: dict, raw: pd.DataFrame, horizon: int, freq: str) -> None:
    """Each candidate's pending (model, training part) forecast from the part's end and joined with
    the readings, into ``forecasts``; the pending ones are let go."""
    for name, by_origin in pending.items():
        if not by_origin:
            continue
        models, trains = zip(*by_origin.values())
        for origin, fc in zip(by_origin, points(models, trains, horizon)):
            forecasts[name][origin] = _actual(raw, origin, horizon, freq).merge(fc, on=["unique_id", "ds"], how="inner")
        by_origin.clear()


def _actual(raw: pd.DataFrame, origin: pd.Timestamp, horizon: int, freq: str) -> pd.DataFrame:
    """The readings of the ``horizon`` steps from ``origin``."""
    return raw[(raw["ds"] >= origin) & (raw["ds"] < origin + horizon * pd.Timedelta(freq))]


def series_mase(errors: pd.DataFrame, diffs: pd.DataFrame) -> pd.DataFrame:
    """origin, unique_id, mase of out-of-sample forecasts ``errors`` (unique_id, ds, y, yhat, origin),
    each scaled as ``rolling_backtest`` scales it (the daily naive's MAE before its origin)."""
    frames = []
    for origin, fc in errors.dropna(subset=["y"]).groupby("origin"):
        scale = diffs[diffs["ds"] < origin].groupby("unique_id")["abs_diff"].mean()
        mae = (fc["y"] - fc["yhat"]).abs().groupby(fc["unique_id"]).mean()
        mase = (mae / scale.reindex(mae.index)).replace([np.inf, -np.inf], np.nan)
        frames.append(mase.rename("mase").reset_index().assign(origin=origin))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["unique_id", "mase", "origin"])


def on_common_origins(mase: pd.DataFrame) -> pd.DataFrame:
    """model, mase, origins: each candidate's mean per-series MASE (``mase``: model, origin,
    unique_id, mase) over the origins at which every candidate was scored. A candidate that could
    not run at some origins (the weekly naive before a week of history) is otherwise judged on fewer,
    different days than the others: on the simulated fleet the weekly naive, scored on a Monday
    only, won against LightGBM's three days and was deployed for the next day. The champion's
    promotion compares on the same origins for the same reason."""
    if mase.empty:
        return pd.DataFrame(columns=["model", "mase", "origins"])
    mase = mase[mase["model"] != "champion"].dropna(subset=["mase"])
    if mase.empty:
        return pd.DataFrame(columns=["model", "mase", "origins"])
    common = set.intersection(*(set(origins) for _, origins in mase.groupby("model")["origin"]))
    if common:
        mase = mase[mase["origin"].isin(common)]
    return mase.groupby("model", as_index=False).agg(mase=("mase", "mean"), origins=("origin", "nunique"))


def chosen_candidate(result: RollingBacktest) -> tuple[str, int]:
    """The candidate train.py deploys from its backtest, and the number of origins it was judged on:
    the lowest MASE on common origins among the candidates whose intervals for the next day are
    calibrated on every calibration day (``RollingBacktest.eligible``)."""
    per_series = result.per_series
    if len(per_series):
        per_series = per_series[per_series["model"].isin(result.eligible(result.end))]
    table = on_common_origins(per_series)
    chosen = best_candidate(table)
    return chosen, int(table.set_index("model").loc[chosen, "origins"])


def deployed_choices(result: RollingBacktest, series: Series, hp: Hyperparameters) -> dict[pd.Timestamp, str]:
    """Scored origin -> the candidate train.py would have deployed there (``chosen_candidate`` of its
    own backtest on the data before the origin: the ``hp.backtest_origins`` origins before it, each
    forecast by a fit on the days before its own origin, as this backtest already made them, among
    the candidates calibrated on every calibration day before the origin)."""
    diffs = naive_scale(series.values[["unique_id", "ds", "y"]], hp.steps_per_day)
    mase = pd.concat([series_mase(e, diffs).assign(model=m) for m, e in result.errors.items()], ignore_index=True)
    choices = {}
    for origin in result.origins:
        inner = mase[(mase["origin"] < origin) & (mase["origin"] >= origin - hp.backtest_origins * DAY)]
        inner = inner[inner["model"].isin(result.eligible(origin))]
        try:
            choices[origin] = best_candidate(on_common_origins(inner))
        except ValueError:  # nothing scored before this origin: training's fallback
            choices[origin] = "seasonal_naive"
    return choices


def with_deployed(result: RollingBacktest, series: Series, hp: Hyperparameters) -> RollingBacktest:
    """``result`` with a ``deployed`` model: at each scored origin the forecasts (intervals included)
    of the candidate training would have chosen from the data before it (``deployed_choices``)."""
    choices = deployed_choices(result, series, hp)
    picked = [(o, m) for o, m in choices.items() if m in set(result.per_origin.get("model", []))]
    rows = [
        result.per_origin[(result.per_origin["model"] == m) & (result.per_origin["origin"] == o)].assign(
            model="deployed", chosen=m
        )
        for o, m in picked
    ]
    fc = [result.forecasts[(result.forecasts["model"] == m) & (result.forecasts["origin"] == o)] for o, m in picked]
    if rows:
        result.per_origin = pd.concat([result.per_origin, *rows], ignore_index=True)
        result.forecasts = pd.concat([result.forecasts, *(f.assign(model="deployed") for f in fc)], ignore_index=True)
    return result


def summarize(per_origin: pd.DataFrame, per_series: pd.DataFrame, forecasts: pd.DataFrame, levels) -> pd.DataFrame:
    """Per model over its origins: MASE the mean (and median) over series and origins, its spread
    over origins, coverage over every scored point with an interval."""
    rows = []
    for name, origin_rows in per_origin.groupby("model", sort=False):
        mase = per_series.loc[per_series["model"] == name, "mase"].dropna()
        fc = forecasts[forecasts["model"] == name]
        row = {
            "model": name,
            "mase": float(mase.mean()),
            "mase_median": float(mase.median()),
            "mae": float(origin_rows["mae"].mean()),
            "series": int(origin_rows["series"].max()),
            "points": int(origin_rows["points"].sum()),
            "origins": len(origin_rows),
            "mase_origin_min": float(origin_rows["mase"].min()),
            "mase_origin_max": float(origin_rows["mase"].max()),
            "calibration_days_min": int(origin_rows["calibration_days"].min()),
        }
        for level in levels:
            row[f"coverage_{level}"] = coverage(fc, level)
        rows.append(row)
    return pd.DataFrame(rows)
