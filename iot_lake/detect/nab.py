"""A streaming anomaly scorer for one metric series, tuned on the Numenta Anomaly Benchmark (NAB).

Pieces (each usable on its own, all causal: what they say about point t uses points 0..t only):

* `OnlineForecaster` -- per series, predicts the next value before seeing it: an exponentially
  weighted level, a seasonal (daily) profile from the same phase in past periods, and a fast/slow
  pair of weighted means for sustained shifts (fed values clipped around the level, so a spike does
  not register as a shift).
* `TailCalibrator` -- turns a residual into a surprise, -ln P(residual this large), against the
  series' own recent residuals: the empirical rank inside the observed range and a fitted
  exponential tail (peaks over threshold) beyond it, so an unprecedented deviation keeps scoring
  higher the larger it is.  Surprises are comparable across series whatever their scale.
* `DeviationScorer` -- the per-series state: forecaster + one calibrator per residual channel and
  direction; `update(timestamp, value) -> score in [0, 1]`.  It is quiet during a learning period
  and raises one alert per incident (after a score >= `alert_level` it stays quiet for
  `suppress` points unless something clearly bigger happens).
* `nab_detector(series)` -- runs a fresh scorer over a whole series (the NAB tool's interface).

The defaults of `NabParams` are the values tuned on the NAB development subset.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class NabParams:
    """All knobs of the scorer; the defaults are the tuned values."""

    # forecaster
    level_alpha: float = 0.1  # EW level: weight of the newest point
    fast_alpha: float = 0.1  # fast/slow EW means for sustained shifts
    slow_alpha: float = 0.005
    shift_clip: float = 6.0  # the fast/slow means see values clipped to level +- this many
    # spreads (robust: a spike does not move them, a lasting shift does)
    spread_alpha: float = 0.05  # EW mean of |level residual| (volatility changes)
    season_seconds: float = 86400.0  # seasonal period (0 disables the seasonal channel)
    season_halfwidth: int = 0  # ...and this many points either side of that phase
    season_count: int = 1  # past periods whose same-phase values give the seasonal forecast
    channels: str = "level,season,shift"  # residual channels in use (see CHANNELS)
    run: int = 4  # *_run channels: smallest deviation over the last `run` points
    agree_weight: float = 0.0  # weight of the other channels' surprises added to the largest
    # calibration
    history: int = 2000  # residuals kept per calibrator (points)
    min_history: int = 100  # fewer than this: no surprise yet
    tail_frac: float = 0.05  # share of the history used to fit the exponential tail
    rel_floor: float = 0.1  # the tail scale is at least this share of the largest past deviation
    tail_power: float = 0.0  # >0: beyond the max, surprise grows as power*ln(1+excess/beta)
    burst_window: int = 0  # points averaged for the burst stage (0: off)
    burst_weight: float = 1.0  # burst surprise counts this much in the combined surprise
    # scoring
    warmup: int = 150  # points scored 0 while the forecaster learns
    half_surprise: float = 12.0  # surprise (nats) that maps to score 0.5
    alert_level: float = 0.4  # a score >= this is an alert
    suppress: int = 425  # points after an alert that stay quiet (one alert per incident)
    rearm_factor: float = 1.3  # ...unless the surprise exceeds the alert's by this factor
    rearm_after: int = 0  # ...and that many points have passed (the same incident escalating)

    def with_(self, **kw) -> NabParams:
        return replace(self, **kw)


# ------------------------------------------------------------------------------------------------
# Calibration
# ------------------------------------------------------------------------------------------------
class TailCalibrator:
    """Surprise of a non-negative deviation against a sliding window of past deviations.

    Up to the largest past deviation: p = (#past >= x + 1) / (n + 1), the empirical tail (a spike
    like the ones the series has had before is only as surprising as it is rare).  Beyond it the
    tail is extrapolated exponentially, p = exp(-(x - max) / beta) / (n + 1), with beta the mean
    excess over the top `tail_frac` of the window (peaks over threshold), floored at `rel_floor`
    times the max so that a barely-new maximum of a very regular history is not infinitely
    surprising.  Surprise = -ln p, in nats."""

    __slots__ = ("history", "min_history", "tail_frac", "floor", "power", "rel_floor", "_window", "_sorted")

    def __init__(self, history: int, min_history: int, tail_frac: float, floor: float = 0.0):
        self.history = history
        self.min_history = min_history
        self.tail_frac = tail_frac
        self.floor = floor
        self.power = 0.0
        self.rel_floor = 0.0
        self._window: deque = deque()
        self._sorted: list = []

    def __len__(self) -> int:
        return len(self._window)

    def surprise(self, x: float, floor: float | None = None) -> float:
        """-ln of the tail probability of a deviation >= x (0 while the history is short)."""
        n = len(self._sorted)
        if n < self.min_history or x <= 0.0:
            return 0.0
        s = self._sorted
        top = s[-1]
        if x <= top:
            ge = n - bisect.bisect_left(s, x)
            return -math.log((ge + 1) / (n + 1))
        k = max(5, int(self.tail_frac * n))
        u = s[n - k]
        beta = (math.fsum(s[n - k :]) / k) - u
        fl = self.floor if floor is None else floor
        beta = max(beta, self.rel_floor * top, fl, 1e-12)
        z = (x - top) / beta
        if self.power > 0:
            z = self.power * math.log1p(z)
        return math.log(n + 1) + z

    def push(self, x: float) -> None:
        self._window.append(x)
        bisect.insort(self._sorted, x)
        if len(self._window) > self.history:
            old = self._window.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]


class SignedCalibrator:
    """Two `TailCalibrator`s, for positive and for negative residuals (spiky metrics are often
    one-sided: a spike up is routine where a dip is not)."""

    __slots__ = ("up", "down")

    def __init__(self, history: int, min_history: int, tail_frac: float):
        self.up = TailCalibrator(history, min_history, tail_frac)
        self.down = TailCalibrator(history, min_history, tail_frac)

    def surprise(self, r: float, floor: float) -> float:
        return self.up.surprise(r, floor) if r >= 0 else self.down.surprise(-r, floor)

    def push(self, r: float) -> None:
        self.up.push(max(r, 0.0))
        self.down.push(max(-r, 0.0))


# ------------------------------------------------------------------------------------------------
# Forecasting
# ------------------------------------------------------------------------------------------------
class OnlineForecaster:
    """Streaming one-step forecasts of one series.  `residuals(x)` compares x with the forecasts
    made before seeing it; `update(x)` then learns from x."""

    def __init__(self, p: NabParams):
        self.p = p
        self.n = 0
        self.level = math.nan
        self.fast = math.nan
        self.slow = math.nan
        self.spread = math.nan  # EW mean of |x - level|
        self.scale = math.nan  # EW mean of |x| (a floor for the calibrators' tail scale)
        self.period = 0  # seasonal period in points, 0 until known / disabled
        self._season: deque = deque()

    def set_period(self, period: int) -> None:
        self.period = period
        self._season = deque(maxlen=period * self.p.season_count) if period > 0 else deque()

    def seasonal_forecast(self) -> float:
        """Median of the values around the same phase in each of the last `season_count` periods
        (nan until that many periods are known): a one-off event on one day does not move it."""
        P, K, h = self.period, self.p.season_count, self.p.season_halfwidth
        if P <= 0 or len(self._season) < K * P:
            return math.nan
        buf = self._season
        m = len(buf)
        vals = [buf[m - j * P + d] for j in range(1, K + 1) for d in range(-h, h + 1) if 0 <= m - j * P + d < m]
        return float(np.median(vals))

    def residuals(self, x: float) -> dict:
        if self.n == 0:
            return {}
        xs = self._shift_input(x)
        r = {"level": x - self.level, "shift": (self.fast + self.p.fast_alpha * (xs - self.fast)) - self.slow}
        sf = self.seasonal_forecast()
        if not math.isnan(sf):
            r["season"] = x - sf
        new_spread = self.spread + self.p.spread_alpha * (abs(x - self.level) - self.spread)
        r["spread"] = new_spread - self.spread_ref if self.n > 1 else 0.0
        return r

    def _shift_input(self, x: float) -> float:
        """x as the fast/slow means see it: clipped to level +- shift_clip spreads (the larger of
        the fast and slow mean absolute deviation), a Huber-style robust update.  A one- or
        two-point spike then barely moves them, so it does not inflate the shift channel's history
        and mask a later level shift; a lasting shift still passes, since the level follows it."""
        c = self.p.shift_clip
        if c <= 0 or self.n < 2:
            return x
        b = c * max(self.spread, self._spread_slow)
        return min(max(x, self.level - b), self.level + b)

    @property
    def spread_ref(self) -> float:
        return self._spread_slow

    def update(self, x: float) -> None:
        p = self.p
        if self.n == 0:
            self.level = self.fast = self.slow = x
            self.spread = 0.0
            self._spread_slow = 0.0
            self.scale = abs(x)
        else:
            xs = self._shift_input(x)
            dev = abs(x - self.level)
            self.spread += p.spread_alpha * (dev - self.spread)
            self._spread_slow += p.slow_alpha * (dev - self._spread_slow)
            self.level += p.level_alpha * (x - self.level)
            self.fast += p.fast_alpha * (xs - self.fast)
            self.slow += p.slow_alpha * (xs - self.slow)
            self.scale += 0.01 * (abs(x) - self.scale)
        if self.period > 0:
            self._season.append(x)
        self.n += 1


# ------------------------------------------------------------------------------------------------
# The scorer
# ------------------------------------------------------------------------------------------------
CHANNELS = ("level", "season", "shift", "spread", "level_run", "season_run")
TWO_SIDED = {"level", "season", "shift", "level_run", "season_run"}  # "spread" counts increases of volatility only


class DeviationScorer:
    """Streaming anomaly score of one series: `update(timestamp, value) -> score in [0, 1]`."""

    def __init__(self, params: NabParams | None = None, **overrides):
        p = params or NabParams()
        if overrides:
            p = replace(p, **overrides)
        self.p = p
        self.forecaster = OnlineForecaster(p)
        self.calibrators = {c: SignedCalibrator(p.history, p.min_history, p.tail_frac) for c in CHANNELS}
        self._use = set(p.channels.split(","))
        self._recent = {b: deque(maxlen=p.run) for b in ("level", "season")}
        for cal in self.calibrators.values():
            cal.up.power = cal.down.power = p.tail_power
            cal.up.rel_floor = cal.down.rel_floor = p.rel_floor
        self.burst_cal = TailCalibrator(p.history, p.min_history, p.tail_frac)
        self.burst_cal.power = p.tail_power
        self.burst_cal.rel_floor = p.rel_floor
        self._burst: deque = deque(maxlen=max(p.burst_window, 1))
        self.n = 0
        self._dts: list = []
        self._last_t = None
        self._quiet_until = -1  # index of the last point an alert keeps quiet
        self._alert_surprise = 0.0
        self.last_surprises: dict = {}

    # -- timestamps: the sampling step (median of the first steps) fixes the seasonal period ----
    def _observe_time(self, timestamp) -> None:
        if self.forecaster.period or self.p.season_seconds <= 0 or timestamp is None:
            return
        t = pd.Timestamp(timestamp).value / 1e9
        if self._last_t is not None and t > self._last_t:
            self._dts.append(t - self._last_t)
        self._last_t = t
        if len(self._dts) >= 10:
            step = float(np.median(self._dts))
            period = int(round(self.p.season_seconds / step))
            self.forecaster.set_period(period if period >= 4 else -1)

    def surprise(self, value: float) -> float:
        """Combined surprise (nats) of `value`, without learning from it."""
        f = self.forecaster
        res = f.residuals(value)
        for base in ("level", "season"):
            if base in res:
                recent = self._recent[base]
                recent.append(res[base])
                if len(recent) == recent.maxlen:
                    pos = min(recent)
                    neg = max(recent)
                    res[base + "_run"] = pos if pos > 0 else (neg if neg < 0 else 0.0)
        floor = 1e-6 * (abs(f.scale) + 1e-9) if f.n else 0.0
        out = {
            c: self.calibrators[c].surprise(r, floor)
            for c, r in res.items()
            if c in self._use and (r >= 0 or c in TWO_SIDED)
        }
        self.last_surprises = out
        self._last_res = res
        if not out:
            return 0.0
        top = max(out.values())
        # channels agreeing is evidence too: the others add with weight `agree_weight`
        return top + self.p.agree_weight * (sum(out.values()) - top)

    def update(self, timestamp, value: float) -> float:
        """Score `value` observed at `timestamp` (then learn from it)."""
        x = float(value)
        if not math.isfinite(x):
            return 0.0
        self._observe_time(timestamp)
        p = self.p
        s = self.surprise(x)
        for c, r in self._last_res.items():
            self.calibrators[c].push(r)
        if p.burst_window > 0:
            self._burst.append(s)
            m = sum(self._burst) / len(self._burst)
            b = self.burst_cal.surprise(m)
            self.burst_cal.push(m)
            self.last_surprises["burst"] = b
            s = max(s, p.burst_weight * b)
        self.forecaster.update(x)
        i = self.n
        self.n += 1
        if i < p.warmup:
            return 0.0
        score = s / (s + p.half_surprise) if s > 0 else 0.0
        if i <= self._quiet_until:
            since = i - (self._quiet_until - p.suppress)
            if since < p.rearm_after or s <= p.rearm_factor * self._alert_surprise:
                return 0.0
        if score >= p.alert_level:
            self._quiet_until = i + p.suppress
            self._alert_surprise = s
        return score


def nab_detector(series: pd.Series, **params) -> np.ndarray:
    """NAB interface: anomaly scores in [0, 1] for every row of `series` (indexed by timestamp),
    each from the rows up to it only.  Keyword arguments override `NabParams` fields."""
    scorer = DeviationScorer(NabParams(**params) if params else None)
    values = np.asarray(series.to_numpy(), dtype=float)
    index = series.index
    times = index if isinstance(index, pd.DatetimeIndex) else [None] * len(values)
    out = np.empty(len(values))
    for i, (t, v) in enumerate(zip(times, values)):
        out[i] = scorer.update(t, v)
    return out


__all__ = [
    "NabParams",
    "TailCalibrator",
    "SignedCalibrator",
    "OnlineForecaster",
    "DeviationScorer",
    "nab_detector",
    "CHANNELS",
]
