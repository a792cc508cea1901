"""Forecast deviations: 1-minute actuals against the champion's forecast band, scored causally.

Each minute of a series is compared with the forecast of its 5-minute bucket (the latest forecast
made before the hour it is in): its residual, standardised by the 95% band's width, is turned
into a surprise against the series' own recent residuals (iot_lake.detect.nab's calibrators, the
code the NAB detector scores with), so a score means the same on every device and metric. An
incident starts at a minute outside the band whose score reaches ``alert_score`` and lasts while
the series stays outside it (SeriesScorer); the case store turns it into one case.

Causal and repeatable: a minute's score uses the residuals before it only, and an hour is scored
after warming the calibrators with the residuals stored for the hours before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from iot_lake.detect.nab import SignedCalibrator

Z = {80: 1.2815515655446004, 95: 1.959963984540054}
KEY = ["device_id", "metric"]
COLUMNS = [
    "device_id",
    "metric",
    "site_id",
    "ts",
    "actual",
    "expected",
    "expected_lo",
    "expected_hi",
    "residual",
    "score",
    "is_anomalous",
    "forecast_origin",
    "model_version",
    "event_date",
]


@dataclass(frozen=True)
class DeviationParams:
    band: int = 95  # the forecast interval that is the expected band
    history: int = 1440  # residuals per series the calibration looks back over (a day of minutes)
    min_history: int = 60  # fewer past residuals: the band's normal tail gives the surprise
    tail_frac: float = 0.05
    floor: float = 0.5  # the surprise's tail scale, in band half-widths, at least
    half_surprise: float = 8.0  # surprise (nats) that maps to score 0.5
    alert_score: float = 0.5


def with_forecasts(actuals: pd.DataFrame, forecasts: pd.DataFrame) -> pd.DataFrame:
    """Each 1-minute actual (device_id, metric, site_id, bucket_start, mean) beside the forecast of
    its 5-minute bucket from the latest origin at or before the minute; minutes without one are dropped."""
    actuals = actuals.assign(bucket_5min=actuals["bucket_start"].dt.floor("5min"))
    latest = (
        forecasts.sort_values("origin")
        .drop_duplicates(["device_id", "metric", "bucket_start"], keep="last")
        .rename(columns={"bucket_start": "bucket_5min"})
    )
    joined = actuals.merge(latest, on=["device_id", "metric", "bucket_5min"], how="inner")
    return joined[joined["origin"] <= joined["bucket_start"]]


def standardised(actual, expected, lo, hi, band: int) -> np.ndarray:
    """The residual in units of the band's implied standard deviation (its half-width / z)."""
    sigma = np.maximum((np.asarray(hi) - np.asarray(lo)) / (2 * Z[band]), 1e-9)
    return (np.asarray(actual) - np.asarray(expected)) / sigma


def gaussian_surprise(residual: float) -> float:
    """-ln P(|N(0, 1)| >= |residual|), without underflow far out in the tail."""
    r = abs(residual)
    p = math.erfc(r / math.sqrt(2))
    if p > 1e-300:
        return -math.log(p)
    return r * r / 2 + math.log(r * math.sqrt(math.pi / 2))  # Mills' ratio asymptote


class SeriesScorer:
    """One series' state: the calibration of its normal residuals and whether an incident is on.

    An incident starts at a minute outside the band whose score reaches ``alert_score`` and lasts
    while the series stays outside the band, whatever the later minutes score: a long excursion is
    one incident, and its minutes stay out of the calibration so that it does not become normal.
    """

    def __init__(self, params: DeviationParams):
        self.params = params
        self.calibrator = SignedCalibrator(params.history, params.min_history, params.tail_frac)
        self.in_incident = False

    def warm(self, residuals, anomalous) -> None:
        for r, a in zip(residuals, anomalous):
            self.in_incident = bool(a)
            if not a:
                self.calibrator.push(float(r))

    def update(self, residual: float, outside: bool) -> tuple[float, bool]:
        """(score in [0, 1], anomalous?) of the next minute."""
        if len(self.calibrator.up) < self.params.min_history:
            # Too little of its own history yet (the first hour of forecasts): trust the band's
            # own normal tail until there is.
            surprise = gaussian_surprise(residual)
        else:
            surprise = self.calibrator.surprise(residual, self.params.floor)
        score = surprise / (surprise + self.params.half_surprise) if surprise > 0 else 0.0
        self.in_incident = outside and (self.in_incident or score >= self.params.alert_score)
        if not self.in_incident:
            self.calibrator.push(residual)
        return score, self.in_incident


def score(
    joined: pd.DataFrame, history: pd.DataFrame | None, params: DeviationParams = DeviationParams()
) -> pd.DataFrame:
    """Scored deviations (COLUMNS) of the joined minutes; ``history`` holds earlier scored rows
    (device_id, metric, ts, residual, is_anomalous) that warm each series' state."""
    lo, hi = f"lo_{params.band}", f"hi_{params.band}"
    frame = joined.sort_values(["device_id", "metric", "bucket_start"]).reset_index(drop=True)
    residual = standardised(frame["mean"], frame["yhat"], frame[lo], frame[hi], params.band)
    outside = ((frame["mean"] < frame[lo]) | (frame["mean"] > frame[hi])).to_numpy()
    scores, anomalous = np.zeros(len(frame)), np.zeros(len(frame), bool)
    past = (
        {}
        if history is None or history.empty
        else {k: g.sort_values("ts").tail(params.history) for k, g in history.groupby(KEY)}
    )
    for key, index in frame.groupby(KEY).indices.items():
        scorer = SeriesScorer(params)
        if key in past:
            scorer.warm(past[key]["residual"].to_numpy(), past[key]["is_anomalous"].to_numpy())
        for i in index:
            scores[i], anomalous[i] = scorer.update(float(residual[i]), bool(outside[i]))
    return pd.DataFrame(
        {
            "device_id": frame["device_id"],
            "metric": frame["metric"],
            "site_id": frame["site_id"],
            "ts": frame["bucket_start"],
            "actual": frame["mean"],
            "expected": frame["yhat"],
            "expected_lo": frame[lo],
            "expected_hi": frame[hi],
            "residual": residual,
            "score": scores,
            "is_anomalous": anomalous,
            "forecast_origin": frame["origin"],
            "model_version": frame["model_version"],
            "event_date": frame["bucket_start"].dt.date,
        }
    )[COLUMNS]


@dataclass
class Accuracy:
    """Flagged minutes against the simulator's injected anomalies (its ground truth)."""

    anomalies: int = 0  # injected anomaly windows that overlap the scored minutes
    detected: int = 0  # of those, with a flagged minute inside (or within ``slack`` after)
    flagged: int = 0
    flagged_true: int = 0  # flagged minutes inside a window (or its slack)
    delays_s: list[float] | None = None

    @property
    def precision(self) -> float:
        return self.flagged_true / self.flagged if self.flagged else math.nan

    @property
    def recall(self) -> float:
        return self.detected / self.anomalies if self.anomalies else math.nan

    @property
    def median_delay_s(self) -> float:
        return float(np.median(self.delays_s)) if self.delays_s else math.nan


def accuracy(scored: pd.DataFrame, truth: pd.DataFrame, slack: pd.Timedelta = pd.Timedelta(minutes=5)) -> Accuracy:
    """``truth``: device_id, metric, start, end (UTC) of injected anomalies."""
    out = Accuracy(delays_s=[])
    if scored.empty:
        return out
    first, last = scored["ts"].min(), scored["ts"].max()
    windows = truth[(truth["end"] >= first) & (truth["start"] <= last)]
    flagged = scored[scored["is_anomalous"]]
    out.flagged = len(flagged)
    hit = np.zeros(len(flagged), bool)
    for w in windows.itertuples():
        series = flagged[(flagged["device_id"] == w.device_id) & (flagged["metric"] == w.metric)]
        inside = (series["ts"] >= w.start.floor("min")) & (series["ts"] <= w.end + slack)
        hit[flagged.index.get_indexer(series.index[inside])] = True
        out.anomalies += 1
        if inside.any():
            out.detected += 1
            out.delays_s.append(max(0.0, (series["ts"][inside].min() - w.start).total_seconds()))
    out.flagged_true = int(hit.sum())
    return out
