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
  direction; `update(timestamp, value, band=None) -> score in [0, 1]`.  It is quiet during a
  learning period and raises one alert per incident (after a score >= `alert_level` it stays quiet
  for `suppress` seconds unless something clearly bigger happens).  An external forecast's band
  (expected, lo, hi), when given, is one more residual channel, heard only while it beats the own
  moving level (`band_skill`); while it beats the daily season, that channel yields to it
  (`season_yield`).  Without a band (NAB) neither rule acts.
* `nab_detector(series)` -- runs a fresh scorer over a whole series (the NAB tool's interface).

Time, not rows: every span is in seconds and every exponential mean is a half-life in seconds,
applied with the actual gap since the previous point, so the scorer means the same at a 1-minute,
5-minute or hourly cadence and on irregular timestamps with gaps.  What stays a count is
statistical (`min_history`: residuals needed before a tail rank means anything).  The defaults of
`NabParams` are the values tuned on the NAB development subset (5-minute points), expressed in time.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections import deque
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

Z95 = 1.959963984540054  # a 95% band's half-width in standard deviations
LN2 = math.log(2.0)


@dataclass(frozen=True)
class NabParams:
    """All knobs of the scorer; the defaults are the tuned values.  Half-lives and spans are in
    seconds (the comments give the per-point equivalent at NAB's 5-minute cadence, where the
    values were tuned)."""

    # forecaster: an EW mean weighs a point that comes dt seconds after the previous one by
    # 1 - 2**(-dt / half_life)
    level_half_life: float = 1973.6  # EW level (~33 min; weight 0.1 per 5-min point)
    fast_half_life: float = 1973.6  # fast/slow EW means for sustained shifts (0.1 ...
    slow_half_life: float = 41484.8  # ... and 0.005 per 5-min point, ~11.5 h)
    shift_clip: float = 6.0  # the fast/slow means see values clipped to level +- this many
    # spreads (robust: a spike does not move them, a lasting shift does)
    warm_means: bool = False  # the slow EW means start as the running mean of the first points
    # (weight max(EW weight, 1/n)) rather than anchored on the first point for hours
    spread_half_life: float = 4054.0  # EW mean of |level residual| (volatility changes; 0.05)
    season_seconds: float = 86400.0  # seasonal period (0 disables the seasonal channel)
    season_halfwidth: float = 0.0  # seconds either side of that phase (0: the nearest point)
    season_count: int = 1  # past periods whose same-phase values give the seasonal forecast
    channels: str = "level,season,shift,band"  # residual channels in use (see CHANNELS); "band"
    # exists only where an external forecast band is given, so NAB is scored without it
    run: float = 1200.0  # *_run channels: smallest deviation over the last `run` seconds (4 points)
    agree_weight: float = 0.0  # weight of the other channels' surprises added to the largest
    band_z: float = Z95  # the external band's half-width in standard deviations (a 95% band)
    band_floor: float = 0.5  # the band channel's tail scale is at least this many band sigmas
    band_mean_half_life: float = 600.0  # "band_mean": EW mean of the band residual (10 min), so a
    # small shift, drift or stuck value that the band sees minute after minute adds up
    band_after: float = 86400.0  # the band channels speak once calibrated on this many seconds of
    # bands (a day holds every hour's bias: a forecast's errors persist for hours, so they have no
    # normal tail to trust); before, only while the own channels warm up, the band's normal tail
    band_skill: float = 0.0  # > 0: the band channels speak only while the forecast's mean absolute
    # error is below this times the detector's own level's (both EW over slow_half_life, ~11.5 h): a
    # forecast no better than a 33-minute moving level has nothing to add but its own false alarms
    season_yield: float = 0.0  # > 0: with a band, the own daily-season channel is silent while the
    # forecast's mean absolute error is below this times the daily-season forecast's (both EW over
    # slow_half_life, on the same minutes): a forecast that knows the week (a short Saturday after
    # two-shift weekdays) makes yesterday-at-this-time the worse reference, whose misses on such a
    # day are the forecast's knowledge, not news.  Without a band (NAB) it never acts
    band_detrend: bool = False  # with a band: the own channels follow value - expected (what the
    # external forecast leaves unexplained), not the raw value
    # calibration
    history: float = 600000.0  # seconds of residuals kept per calibrator (~6.9 days: 2000 points)
    min_history: int = 100  # fewer residuals than this: no surprise yet.  A count, not a span: a
    # tail rank needs that many samples to mean anything whatever time they cover
    lag: float = 0.0  # residuals join the calibration this many seconds late, so that a developing
    # shift or drift is judged against the time before it began, not against its own last minutes
    tail_frac: float = 0.05  # share of the history used to fit the exponential tail
    rel_floor: float = 0.1  # the tail scale is at least this share of the largest past deviation
    tail_power: float = 0.0  # >0: beyond the max, surprise grows as power*ln(1+excess/beta)
    burst: float = 0.0  # seconds of surprises averaged for the burst stage (0: off)
    burst_weight: float = 1.0  # burst surprise counts this much in the combined surprise
    # scoring
    rate_seconds: float = 300.0  # surprises are per this much time: a point's tail probability p
    # counts as p * rate_seconds / step, so a finer cadence (more points, more chances for a noise
    # maximum) is not more alarming per hour.  At NAB's 5-minute step: no change
    warmup: float = 45000.0  # seconds scored 0 while the forecaster learns (12.5 h: 150 points)
    half_surprise: float = 12.0  # surprise (nats) that maps to score 0.5
    alert_level: float = 0.4  # a score >= this is an alert
    suppress: float = 63750.0  # seconds after an alert that stay quiet (one alert per incident;
    # ~17.7 h: 212.5 points)
    rearm_factor: float = 1.3  # ...unless the surprise exceeds the alert's by this factor
    rearm_after: float = 0.0  # ...and that many seconds have passed (the same incident escalating)
    season_forget: bool = True  # the values of an alert's quiet period stay out of the seasonal
    # memory: the next day's same phase has no daily-season reference there rather than the
    # incident's values (whose echo would otherwise be tomorrow's alert).  `update` only: the
    # deviations path keeps its own incidents (iot_lake.detect.deviations)

    def with_(self, **kw) -> NabParams:
        return replace(self, **kw)


def ew_weight(dt: float, half_life: float) -> float:
    """Weight of a point dt seconds after the previous one in an EW mean of this half-life."""
    return -math.expm1(-dt * LN2 / half_life) if half_life > 0 else 1.0


def _ew(mean: float, x: float, a: float) -> float:
    """An EW mean's next value (x itself while the mean is unset)."""
    return x if mean != mean else mean + a * (x - mean)


def gaussian_surprise(residual: float) -> float:
    """-ln P(|N(0, 1)| >= |residual|), without underflow far out in the tail."""
    r = abs(residual)
    p = math.erfc(r / math.sqrt(2))
    if p > 1e-300:
        return -math.log(p)
    return r * r / 2 + math.log(r * math.sqrt(math.pi / 2))  # Mills' ratio asymptote


# ------------------------------------------------------------------------------------------------
# Calibration
# ------------------------------------------------------------------------------------------------
# The calibrators' windows and the forecaster's season memory are arrays of doubles, not lists or
# deques of floats: a week of 1-minute residuals is ~180,000 floats a series, which as Python
# objects took 4x the memory, was walked by every full garbage collection, and had to be converted
# element by element whenever a series' state was pickled (the deviations' kept states, the
# streaming scorer's copies). An array pickles and copies as one block. A window's oldest entries
# are dropped by moving its start (``_head``) and cutting the dead prefix now and then.
COMPACT_AFTER = 64  # dropped entries before the prefix is cut (a memmove of the live window)


class TailCalibrator:
    """Surprise of a non-negative deviation against a sliding window of past deviations.

    The window holds the deviations of the last `history` seconds (`push(x, t)`).  Up to the
    largest past deviation: p = (#past >= x + 1) / (n + 1), the empirical tail (a spike like the
    ones the series has had before is only as surprising as it is rare).  Beyond it the tail is
    extrapolated exponentially, p = exp(-(x - max) / beta) / (n + 1), with beta the mean excess
    over the top `tail_frac` of the window (peaks over threshold), floored at `rel_floor` times the
    max so that a barely-new maximum of a very regular history is not infinitely surprising.
    Surprise = -ln p, in nats."""

    __slots__ = (
        "history",
        "min_history",
        "tail_frac",
        "floor",
        "power",
        "rel_floor",
        "_times",
        "_window",
        "_head",
        "_sorted",
    )

    def __init__(self, history: float, min_history: int, tail_frac: float, floor: float = 0.0):
        self.history = history
        self.min_history = min_history
        self.tail_frac = tail_frac
        self.floor = floor
        self.power = 0.0
        self.rel_floor = 0.0
        self._times = array("d")  # the window's times and deviations from _head on, oldest first
        self._window = array("d")
        self._head = 0
        self._sorted = array("d")

    def __len__(self) -> int:
        return len(self._window) - self._head

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

    def push(self, x: float, t: float) -> None:
        """Add deviation x observed at t (seconds); forget those `history` seconds older."""
        self._times.append(t)
        self._window.append(x)
        bisect.insort(self._sorted, x)
        old_before = t - self.history
        times, window, srt, h = self._times, self._window, self._sorted, self._head
        while times[h] <= old_before:
            del srt[bisect.bisect_left(srt, window[h])]
            h += 1
        self._head = _compact(times, window, h)


class SignedCalibrator:
    """Two tails, of positive and of negative residuals (spiky metrics are often one-sided: a spike
    up is routine where a dip is not), over one window of the last `history` seconds.  Each tail is
    a `TailCalibrator` of max(r, 0) resp. max(-r, 0) -- the same numbers -- but the zeros (the
    other side's residuals) are only counted, not sorted: half the work per push."""

    __slots__ = (
        "history",
        "min_history",
        "tail_frac",
        "power",
        "rel_floor",
        "_times",
        "_window",
        "_head",
        "_pos",
        "_neg",
    )

    def __init__(self, history: float, min_history: int, tail_frac: float):
        self.history = history
        self.min_history = min_history
        self.tail_frac = tail_frac
        self.power = 0.0
        self.rel_floor = 0.0
        self._times = array("d")  # the window's times and residuals from _head on, oldest first
        self._window = array("d")
        self._head = 0
        self._pos = array("d")  # sorted positive residuals
        self._neg = array("d")  # sorted magnitudes of negative residuals

    def __len__(self) -> int:
        return len(self._window) - self._head

    def surprise(self, r: float, floor: float) -> float:
        """As `TailCalibrator.surprise` of |r| against the residuals of r's sign."""
        n = len(self._window) - self._head
        if n < self.min_history or r == 0.0:
            return 0.0
        s, x = (self._pos, r) if r > 0 else (self._neg, -r)
        m = len(s)
        top = s[-1] if m else 0.0
        if x <= top:
            return -math.log((m - bisect.bisect_left(s, x) + 1) / (n + 1))
        k = max(5, int(self.tail_frac * n))
        if m >= k:
            u = s[m - k]
            beta = math.fsum(s[m - k :]) / k - u
        else:  # the top k reach into the zeros
            beta = math.fsum(s) / k
        beta = max(beta, self.rel_floor * top, floor, 1e-12)
        z = (x - top) / beta
        if self.power > 0:
            z = self.power * math.log1p(z)
        return math.log(n + 1) + z

    def push(self, r: float, t: float) -> None:
        self._times.append(t)
        self._window.append(r)
        if r > 0.0:
            bisect.insort(self._pos, r)
        elif r < 0.0:
            bisect.insort(self._neg, -r)
        old_before = t - self.history
        times, window, h = self._times, self._window, self._head
        while times[h] <= old_before:
            o = window[h]
            if o > 0.0:
                del self._pos[bisect.bisect_left(self._pos, o)]
            elif o < 0.0:
                del self._neg[bisect.bisect_left(self._neg, -o)]
            h += 1
        self._head = _compact(times, window, h)


def _compact(times: array, window: array, head: int) -> int:
    """The window's start after cutting its dead prefix, when it has grown long enough to be worth a memmove."""
    if head < COMPACT_AFTER:
        return head
    del times[:head], window[:head]
    return 0


# ------------------------------------------------------------------------------------------------
# Forecasting
# ------------------------------------------------------------------------------------------------
class OnlineForecaster:
    """Streaming one-step forecasts of one series.  `residuals(x, t)` compares x at t with the
    forecasts made before seeing it; `update(x, t)` then learns from x.  `set_step(dt)` gives the
    weights of the EW means for a point dt seconds after the previous one (the scorer sets it
    before each point)."""

    def __init__(self, p: NabParams):
        self.p = p
        self.n = 0
        self.level = math.nan
        self.fast = math.nan
        self.slow = math.nan
        self.spread = math.nan  # EW mean of |x - level|
        self._spread_slow = math.nan
        self.scale = math.nan  # EW mean of |x| (a floor for the calibrators' tail scale)
        self.period = 0.0  # seasonal period in seconds, 0 until the step is known / disabled
        self.tolerance = 0.0  # seconds a past point may be off the exact phase
        self._st = array("d")  # times and values of the last season_count periods
        self._sv = array("d")
        self._dt = math.nan
        self._xs = self._xs_of = math.nan
        self.a_level = self.a_fast = self.a_slow = self.a_spread = self.a_scale = 0.0

    def set_step(self, dt: float) -> None:
        if dt == self._dt:
            return
        p = self.p
        self._dt = dt
        self.a_level = ew_weight(dt, p.level_half_life)
        self.a_fast = ew_weight(dt, p.fast_half_life)
        self.a_slow = ew_weight(dt, p.slow_half_life)
        self.a_spread = ew_weight(dt, p.spread_half_life)
        self.a_scale = ew_weight(dt, 20690.3)  # |x| scale: 0.01 per 5-min point, ~5.7 h

    def set_period(self, period: float, step: float) -> None:
        """Seasonal period (seconds, <= 0 disables) for a series sampled every `step` seconds."""
        self.period = period
        # the phase is matched to the nearest point (half a step), or the window asked for
        self.tolerance = max(self.p.season_halfwidth, step / 2)

    def seasonal_forecast(self, t: float) -> float:
        """Median of the values around the same phase (t - j * period +- tolerance) in each of the
        last `season_count` periods (nan until that many periods are known): a one-off event on
        one day does not move it."""
        P, K, tol = self.period, self.p.season_count, self.tolerance
        st = self._st
        if P <= 0 or not st or st[0] > t - K * P + tol:
            return math.nan
        vals = []
        for j in range(1, K + 1):
            vals.extend(self._at_phase(t - j * P))
        if not vals:
            return math.nan  # a gap where the phase should be
        return vals[0] if len(vals) == 1 else float(np.median(vals))

    def _at_phase(self, target: float) -> list:
        """The remembered values within ``tolerance`` of the time `target`."""
        st, tol = self._st, self.tolerance
        lo = bisect.bisect_left(st, target - tol)
        return self._sv[lo : bisect.bisect_right(st, target + tol, lo)]

    def phase_value(self, t: float, periods: int) -> float:
        """The value remembered at t's phase `periods` periods back (nan if none): a second opinion
        beside the seasonal forecast, up to one period further back than it looks."""
        if self.period <= 0 or periods > self.p.season_count + 1:
            return math.nan
        vals = self._at_phase(t - periods * self.period)
        return vals[0] if vals else math.nan

    def residuals(self, x: float, t: float) -> dict:
        if self.n == 0:
            return {}
        xs = self._xs = self._shift_input(x)
        self._xs_of = x
        r = {"level": x - self.level, "shift": (self.fast + self.a_fast * (xs - self.fast)) - self.slow}
        if self.period > 0:
            sf = self.seasonal_forecast(t)
            if sf == sf:
                r["season"] = x - sf
        new_spread = self.spread + self.a_spread * (abs(x - self.level) - self.spread)
        r["spread"] = new_spread - self._spread_slow if self.n > 1 else 0.0
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

    def update(self, x: float, t: float) -> None:
        if self.n == 0:
            self.level = self.fast = self.slow = x
            self.spread = 0.0
            self._spread_slow = 0.0
            self.scale = abs(x)
        else:
            # the clipped input residuals() computed for this very x (the state has not moved since)
            xs = self._xs if self._xs_of == x else self._shift_input(x)
            dev = abs(x - self.level)
            a_slow = max(self.a_slow, 1.0 / (self.n + 1)) if self.p.warm_means else self.a_slow
            self.spread += self.a_spread * (dev - self.spread)
            self._spread_slow += a_slow * (dev - self._spread_slow)
            self.level += self.a_level * (x - self.level)
            self.fast += self.a_fast * (xs - self.fast)
            self.slow += a_slow * (xs - self.slow)
            self.scale += self.a_scale * (abs(x) - self.scale)
        if self.period > 0:
            st, sv = self._st, self._sv
            st.append(t)
            sv.append(x)
            # forget what is older than the periods looked back on (and one more: `phase_value`), in
            # chunks (cheap amortised)
            keep = t - (self.p.season_count + 1) * self.period - 2 * self.tolerance
            if st[0] < keep and len(st) > 64:
                cut = bisect.bisect_left(st, keep)
                if cut > len(st) // 4:
                    del st[:cut], sv[:cut]
        self.n += 1


# ------------------------------------------------------------------------------------------------
# The scorer
# ------------------------------------------------------------------------------------------------
CHANNELS = ("level", "season", "shift", "spread", "level_run", "season_run", "band", "band_mean")
TWO_SIDED = {"level", "season", "shift", "level_run", "season_run", "band", "band_mean"}  # "spread": increases only


def to_seconds(timestamp) -> float | None:
    """Seconds since the epoch of a timestamp (a number is taken as seconds already)."""
    if timestamp is None or isinstance(timestamp, float | int | np.floating | np.integer):
        return None if timestamp is None else float(timestamp)
    return pd.Timestamp(timestamp).value / 1e9


class DeviationScorer:
    """Streaming anomaly score of one series: `update(timestamp, value, band=None) -> score in [0, 1]`.

    `update` is `assess` (the raw score of the point, without learning) + the alert logic (quiet
    during warm-up, one alert per incident) + `learn`.  A caller with its own incident logic (the
    forecast-deviation path) calls `assess` and `learn` itself."""

    def __init__(self, params: NabParams | None = None, **overrides):
        p = params or NabParams()
        if overrides:
            p = replace(p, **overrides)
        self.p = p
        self.forecaster = OnlineForecaster(p)
        self._use = frozenset(p.channels.split(","))
        self.calibrators = {c: SignedCalibrator(p.history, p.min_history, p.tail_frac) for c in CHANNELS}
        self._recent = {b: deque() for b in ("level", "season")}
        self._runs = tuple(b for b in ("level", "season") if b + "_run" in self._use)
        for cal in self.calibrators.values():
            cal.power = p.tail_power
            cal.rel_floor = p.rel_floor
        self.burst_cal = TailCalibrator(p.history, p.min_history, p.tail_frac)
        self.burst_cal.power = p.tail_power
        self.burst_cal.rel_floor = p.rel_floor
        self._burst: deque = deque()
        self.n = 0
        self._dts: list = []
        self.step = p.rate_seconds  # the typical sampling step (median of the first steps)
        self._rate_shift = 0.0  # ln(rate_seconds / step): subtracted from every surprise
        self._t0 = None
        self._last_t = None
        self._quiet_until = -math.inf  # time until which an alert keeps quiet
        self._alert_t = -math.inf
        self._alert_surprise = 0.0
        self.last_surprises: dict = {}
        self._last_res: dict = {}
        self._lagged: deque = deque()  # residuals waiting `lag` seconds to join the calibration
        self._pending = None  # (t, x, residuals, burst value) of the assessed, not yet learnt point
        self._band_t0 = math.inf  # time of the first band
        self._band_mean = None  # EW mean of the band residual so far (learnt), and with the pending point
        self._band_mean_next = None
        self._band_error = math.nan  # EW mean |value - expected| of the learnt minutes (band_skill)
        self._band_abs = math.nan  # |value - expected| of the pending point
        self._band_error_s = math.nan  # EW mean |value - expected| where the season forecast exists
        self._season_error = math.nan  # EW mean |value - daily-season forecast| on banded minutes
        self._season_abs = math.nan  # ... of the pending point (season_yield)
        self.surprise_value = 0.0  # combined surprise (nats) of the last assessed point

    # -- time: the sampling step (median of the first steps) fixes the seasonal lookup and the
    # surprise's rate correction; each point's own gap weighs the EW means --------------------------
    def _observe_time(self, t: float) -> float:
        """The gap (seconds) the EW means weigh this point by."""
        last = self._last_t
        if last is None:
            return self.step
        dt = t - last
        if len(self._dts) < 10 and dt > 0:
            self._dts.append(dt)
            self.step = float(np.median(self._dts))
            self._rate_shift = math.log(self.p.rate_seconds / self.step) if self.p.rate_seconds > 0 else 0.0
            if len(self._dts) == 10 and self.p.season_seconds > 0:
                ok = self.p.season_seconds / self.step >= 4  # fewer points a period: no season
                self.forecaster.set_period(self.p.season_seconds if ok else -1.0, self.step)
        # a repeated or out-of-order timestamp still counts as one ordinary step
        return dt if dt > 0 else self.step

    def assess(self, timestamp, value: float, band: tuple | None = None) -> float:
        """Raw score in [0, 1] of `value` at `timestamp` given what came before, without learning
        from it and without the alert logic (0 during the warm-up, but for the band channel, and
        while the history is short).  `band` = (expected, lo, hi) of an external forecast."""
        x = float(value)
        if not math.isfinite(x):
            self._pending = None
            self.surprise_value = 0.0
            return 0.0
        t = to_seconds(timestamp)
        if t is None:  # no timestamps: points a rate_seconds apart
            t = (self._last_t + self.p.rate_seconds) if self._last_t is not None else 0.0
        elif self._last_t is not None and t < self._last_t:
            t = self._last_t  # time never runs backwards here: out-of-order is "same time"
        dt = self._observe_time(t)
        f = self.forecaster
        f.set_step(dt)
        p = self.p
        if band is not None and not all(map(math.isfinite, band)):
            band = None
        own = x - band[0] if band is not None and p.band_detrend else x
        res = f.residuals(own, t)
        for base in self._runs:
            if base in res:
                recent = self._recent[base]
                recent.append((t, res[base]))
                while recent[0][0] <= t - p.run:
                    recent.popleft()
                # the window must span the run (its oldest point within a step of run seconds ago)
                if recent[0][0] <= t - p.run + self.step:
                    pos = min(r for _, r in recent)
                    neg = max(r for _, r in recent)
                    res[base + "_run"] = pos if pos > 0 else (neg if neg < 0 else 0.0)
        self._band_mean_next = self._band_mean
        self._band_abs = self._season_abs = math.nan
        if band is not None:
            expected, lo, hi = band
            self._band_abs = abs(x - expected)
            if "season" in res and not p.band_detrend:
                self._season_abs = abs(res["season"])
            width = (hi - lo) / (2 * p.band_z)
            if width > 0:
                self._band_t0 = min(self._band_t0, t)
                res["band"] = (x - expected) / width
                if "band_mean" in self._use:
                    prev = self._band_mean
                    w = ew_weight(dt, p.band_mean_half_life)
                    self._band_mean_next = res["band"] if prev is None else prev + w * (res["band"] - prev)
                    res["band_mean"] = self._band_mean_next
        floor = self._tail_floor()
        warm = self._t0 is not None and t - self._t0 >= p.warmup
        cals = self.calibrators
        use = self._use
        out = {}
        for c, r in res.items():
            if c in use and (r >= 0 or c in TWO_SIDED):
                if c in ("band", "band_mean"):
                    if t - self._band_t0 < p.band_after and (c == "band_mean" or warm):
                        continue
                    if p.band_skill > 0 and warm and not self.band_skilled:
                        continue
                    # in band sigmas; an EW mean of n.i.d. residuals has sd sqrt(w / (2 - w)) of them
                    w = ew_weight(self.step, p.band_mean_half_life) if c == "band_mean" else 1.0
                    sd = math.sqrt(w / (2 - w))
                    cal = cals[c]
                    # until the band's own residuals are known, trust its normal tail
                    if len(cal) >= p.min_history:
                        out[c] = cal.surprise(r, p.band_floor * sd)
                    else:
                        out[c] = gaussian_surprise(r / sd)
                elif c == "season" and band is not None and self.season_yields:
                    continue
                else:
                    out[c] = cals[c].surprise(r, floor)
        self.last_surprises = out
        self._last_res = res
        if not warm:
            # learning: only an external band, which knows the series already, has a say
            s = out.get("band", 0.0)
        elif out:
            top = max(out.values())
            # channels agreeing is evidence too: the others add with weight `agree_weight`
            s = top + p.agree_weight * (sum(out.values()) - top) if p.agree_weight else top
        else:
            s = 0.0
        m = None
        if p.burst > 0 and warm:
            bq = self._burst
            bq.append((t, s))
            while bq[0][0] <= t - p.burst:
                bq.popleft()
            m = sum(v for _, v in bq) / len(bq)
            b = self.burst_cal.surprise(m)
            self.last_surprises["burst"] = b
            s = max(s, p.burst_weight * b)
        if s > 0:
            s = self._per_rate(s)
        self.surprise_value = s
        self._pending = (t, own, res, m)
        return s / (s + p.half_surprise) if s > 0 else 0.0

    def season_surprise(self, periods: int) -> float:
        """The surprise (nats, as ``surprise_value``) of the point just assessed against its phase
        `periods` periods back, on the daily-season channel's calibration (nan without that value)."""
        if self._pending is None:
            return math.nan
        t, x = self._pending[0], self._pending[1]
        past = self.forecaster.phase_value(t, periods)
        if past != past:
            return math.nan
        return self._per_rate(self.calibrators["season"].surprise(x - past, self._tail_floor()))

    def surprise_without(self, channel: str) -> float:
        """The largest surprise (nats, as ``surprise_value``) of the point just assessed on the
        channels other than `channel` (0 without any)."""
        return self._per_rate(max((v for c, v in self.last_surprises.items() if c != channel), default=0.0))

    def _per_rate(self, surprise: float) -> float:
        """A channel's surprise per ``rate_seconds``, as the combined one is (``assess``)."""
        return max(surprise - self._rate_shift, 0.0)

    def _tail_floor(self) -> float:
        """The calibrators' smallest tail scale: a millionth of the series' scale."""
        f = self.forecaster
        return 1e-6 * (abs(f.scale) + 1e-9) if f.n else 0.0

    @property
    def band_skilled(self) -> bool:
        """Whether the external forecast has beaten the own level lately (``band_skill``)."""
        own = self.forecaster.spread_ref
        return self._band_error == self._band_error and self._band_error < self.p.band_skill * own

    @property
    def season_yields(self) -> bool:
        """Whether the own daily-season channel gives way to the external forecast (``season_yield``):
        on the minutes both were there, the forecast's error has been below the daily-season one's."""
        band, season = self._band_error_s, self._season_error
        return self.p.season_yield > 0 and season == season and band < self.p.season_yield * season

    def _learn_band_error(self, skip) -> None:
        """The forecast's error joins its EW mean as the own level's does (incident minutes stay out);
        where the daily-season forecast exists too, both errors join a pair of EW means
        (``season_yield``), so the two are compared on the same minutes."""
        error = self._band_abs
        if error != error or "band" in skip or skip == "all":
            return
        f = self.forecaster
        a = max(f.a_slow, 1.0 / (f.n + 1)) if f.p.warm_means else f.a_slow
        self._band_error = _ew(self._band_error, error, a)
        if self._season_abs == self._season_abs:
            self._band_error_s = _ew(self._band_error_s, error, a)
            self._season_error = _ew(self._season_error, self._season_abs, a)

    def _calibrate(self, t: float, res: dict, skip, m) -> None:
        cals = self.calibrators
        for c, r in res.items():
            if c in self._use and c not in skip:
                cals[c].push(r, t)
        if m is not None:
            self.burst_cal.push(m, t)

    def learn(self, skip: frozenset | tuple = ()) -> None:
        """Learn from the point just assessed: the forecaster always (it follows the series), the
        calibrators of every channel but those in `skip` ("all": none), so that, say, an incident
        kept out of the band channel's calibration does not become normal."""
        if self._pending is None:
            return
        t, x, res, m = self._pending
        self._pending = None
        self._band_mean = self._band_mean_next
        if self.p.band_skill > 0 or self.p.season_yield > 0:
            self._learn_band_error(skip)
        if skip != "all":
            if self.p.lag > 0:
                self._lagged.append((t, res, skip, m))
            else:
                self._calibrate(t, res, skip, m)
        lagged = self._lagged
        while lagged and lagged[0][0] <= t - self.p.lag:
            self._calibrate(*lagged.popleft())
        self.forecaster.update(x, t)
        if self._t0 is None:
            self._t0 = t
        self._last_t = t
        self.n += 1

    def update(self, timestamp, value: float, band: tuple | None = None, learn: bool = True) -> float:
        """Score `value` observed at `timestamp` (then learn from it; the calibrators only if
        `learn`): quiet during the warm-up, and after an alert quiet for `suppress` seconds
        unless the surprise grows by `rearm_factor` (after `rearm_after` seconds)."""
        raw = self.assess(timestamp, value, band)
        pending = self._pending
        self.learn(() if learn else "all")
        if pending is None:
            return 0.0
        t = pending[0]
        out = self._alert_logic(t, raw)
        if self.p.season_forget:  # the point just learnt, now that its own alert (if any) is known
            self._forget_season(t)
        return out

    def _alert_logic(self, t: float, raw: float) -> float:
        """The score `update` returns for a point at t of raw score `raw` (one alert per incident)."""
        p = self.p
        if raw <= 0.0:
            return 0.0
        s = self.surprise_value
        if t <= self._quiet_until:
            if t - self._alert_t < p.rearm_after or s <= p.rearm_factor * self._alert_surprise:
                return 0.0
        if raw >= p.alert_level:
            self._quiet_until = t + p.suppress
            self._alert_t = t
            self._alert_surprise = s
        return raw

    def _forget_season(self, t: float) -> None:
        """Keep the value just learnt at t out of the seasonal memory while t is in an alert's quiet
        period (``season_forget``): yesterday's incident is no reference for today, and compared
        with it the same time of day would alert again a day later (its echo).  Before, that echo
        made a quiet period longer than a day pay; now the daily-season channel is silent there."""
        f = self.forecaster
        if t - self._alert_t <= self.p.suppress and f.period > 0 and f._st and f._st[-1] == t:
            f._sv[-1] = math.nan


def nab_detector(series: pd.Series, **params) -> np.ndarray:
    """NAB interface: anomaly scores in [0, 1] for every row of `series` (indexed by timestamp),
    each from the rows up to it only.  Keyword arguments override `NabParams` fields."""
    scorer = DeviationScorer(NabParams(**params) if params else None)
    values = np.asarray(series.to_numpy(), dtype=float)
    index = series.index
    if isinstance(index, pd.DatetimeIndex):
        times = (index.as_unit("ns").asi8 / 1e9).tolist()
    else:
        times = [None] * len(values)
    out = np.empty(len(values))
    for i, (t, v) in enumerate(zip(times, values.tolist())):
        out[i] = scorer.update(t, v)
    return out


__all__ = [
    "NabParams",
    "TailCalibrator",
    "SignedCalibrator",
    "OnlineForecaster",
    "DeviationScorer",
    "nab_detector",
    "gaussian_surprise",
    "ew_weight",
    "CHANNELS",
]
