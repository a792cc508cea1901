"""The streaming anomaly scorer (iot_lake.detect.nab) on synthetic seasonal series: causal, in [0, 1],
high at a real change and low around it, one alert per incident, streaming == batch.  The NAB corpus
itself is scored by `python -m benchmarks.nab`, not here."""

import math
import pickle
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from iot_lake.detect import nab
from iot_lake.detect.nab import DeviationScorer, NabParams, SignedCalibrator, TailCalibrator, nab_detector

DAY = 288  # 5-minute points
ALERT = NabParams().alert_level


def seasonal(days: int = 8, seed: int = 0, noise: float = 1.5) -> pd.Series:
    """A daily sine on 5-minute points with Gaussian noise."""
    n = days * DAY
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    values = 50 + 20 * np.sin(2 * np.pi * t / DAY) + rng.normal(0, noise, n)
    return pd.Series(values, index=pd.date_range("2026-01-05", periods=n, freq="5min"))


AT = 6 * DAY + 40  # where the anomalies start: well past warm-up, a seasonal period and some history


@pytest.mark.parametrize("kind", ["spike", "shift", "dip"])
def test_clear_change_scores_high_and_normal_stretches_low(kind):
    s = seasonal()
    if kind == "spike":
        s.iloc[AT] += 25
    elif kind == "shift":
        s.iloc[AT:] += 15
    else:
        s.iloc[AT : AT + 30] -= 20
    scores = nab_detector(s)
    at_change = scores[AT : AT + 3].max()
    assert at_change >= ALERT + 0.1, scores[AT - 2 : AT + 5]
    normal = scores[DAY:AT]  # after warm-up, before the change
    assert np.quantile(normal, 0.99) < 0.35
    assert normal.max() < at_change - 0.15
    assert (normal >= ALERT).sum() <= 2  # the rare noise maximum, not a stream of alerts


def test_scores_in_unit_interval_on_awkward_input():
    n = 3 * DAY
    idx = pd.date_range("2026-01-05", periods=n, freq="5min")
    for values in (
        np.full(n, 45.0),  # flatline
        np.r_[np.zeros(n - 10), np.full(10, 1e12)],  # huge jump
        np.where(np.arange(n) % 97 == 0, 20.0, 0.0),  # regular spikes
        np.r_[np.full(100, np.nan), np.random.default_rng(1).normal(size=n - 100)],
    ):
        scores = nab_detector(pd.Series(values, index=idx))
        assert scores.shape == (n,)
        assert np.isfinite(scores).all()
        assert scores.min() >= 0.0 and scores.max() <= 1.0
    # a deviation on a perfectly flat line is an anomaly, and the flat stretch is not
    flat = np.full(n, 45.0)
    flat[2 * DAY] = 46.0
    scores = nab_detector(pd.Series(flat, index=idx))
    assert scores[2 * DAY] >= ALERT and scores[: 2 * DAY].max() == 0.0


def test_quiet_during_warmup():
    s = seasonal(days=2)
    s.iloc[50] += 100
    scores = nab_detector(s)
    assert scores[: int(NabParams().warmup // 300)].max() == 0.0


def test_causal_prefix_scores_unchanged_by_later_points():
    s = seasonal(seed=3)
    s.iloc[AT : AT + 50] += 10
    full = nab_detector(s)
    for cut in (DAY + 1, AT + 1, AT + 25, len(s) - 7):
        np.testing.assert_array_equal(nab_detector(s.iloc[:cut]), full[:cut])
    # and a different future leaves the past alone
    other = s.copy()
    other.iloc[AT + 100 :] = 0.0
    np.testing.assert_array_equal(nab_detector(other)[: AT + 100], full[: AT + 100])


def test_one_alert_per_incident():
    s = seasonal(seed=2)
    # a long incident: stuck sensor for 100 points, then a noisy plateau for 250
    s.iloc[AT : AT + 100] = s.iloc[AT]
    rng = np.random.default_rng(5)
    s.iloc[AT + 100 : AT + 350] += 12 + rng.normal(0, 4, 250)
    scores = nab_detector(s)
    alerts = np.nonzero(scores[AT : AT + 350] >= ALERT)[0]
    assert len(alerts) >= 1  # the incident is seen...
    assert len(alerts) <= 2  # ...once (at most once more if it gets much worse)
    assert not np.any(np.diff(alerts) == 1)  # never a burst of consecutive alerts


def test_suppression_is_what_prevents_the_burst():
    """Without the incident window the same series does fire repeatedly: the test above can fail."""
    s = seasonal(seed=2)
    rng = np.random.default_rng(5)
    s.iloc[AT : AT + 250] += 12 + rng.normal(0, 4, 250)
    loud = nab_detector(s, suppress=0)
    quiet = nab_detector(s)
    assert (loud[AT : AT + 250] >= ALERT).sum() > 3
    assert (quiet[AT : AT + 250] >= ALERT).sum() <= 2


def test_streaming_update_equals_batch():
    s = seasonal(days=4, seed=7)
    s.iloc[3 * DAY] += 30
    batch = nab_detector(s)
    scorer = DeviationScorer()
    streamed = [scorer.update(t, v) for t, v in s.items()]
    np.testing.assert_array_equal(np.asarray(streamed), batch)
    # the state carries on: scoring continues where a batch left off
    s2 = seasonal(days=5, seed=7)
    s2.iloc[3 * DAY] += 30
    s2.iloc[4 * DAY + 10] -= 40
    more = [scorer.update(t, v) for t, v in s2.iloc[len(s) :].items()]
    np.testing.assert_array_equal(np.asarray(more), nab_detector(s2)[len(s) :])


def test_params_override_and_defaults_are_the_dataclass():
    s = seasonal(days=3)
    np.testing.assert_array_equal(nab_detector(s), nab_detector(s, **{}))
    assert not np.array_equal(nab_detector(s, warmup=2 * 86400.0), nab_detector(s))
    with pytest.raises(TypeError):
        nab_detector(s, no_such_knob=1)


def test_tail_calibrator_ranks_then_extrapolates():
    cal = TailCalibrator(history=1000.0, min_history=10, tail_frac=0.05)  # 1000 s of residuals
    assert cal.surprise(5.0) == 0.0  # no history yet
    for t, x in enumerate(np.linspace(0.0, 1.0, 1000)):
        cal.push(float(x), float(t))
    inside = cal.surprise(0.5)
    assert inside == pytest.approx(-math.log(501 / 1001), rel=1e-3)
    at_max = cal.surprise(1.0)
    beyond = cal.surprise(1.5)
    far = cal.surprise(3.0)
    assert inside < at_max < beyond < far
    # sliding window: old values leave the history
    for t in range(1000, 2000):
        cal.push(10.0, float(t))
    assert cal.surprise(1.0) < 0.01


def test_level_shift_after_a_giant_spike_still_alerts():
    """A huge one-point spike must not teach the shift channel that shifts of a few noise units are
    normal: the fast/slow means see values clipped around the level (`shift_clip`)."""
    n = 10 * DAY
    rng = np.random.default_rng(3)
    values = 14 + rng.normal(0, 0.3, n)
    values[3 * DAY] += 60  # a giant spike (alerts on its own)
    values[3 * DAY + 1] += 50
    shift_at = 8 * DAY
    values[shift_at:] += 6  # much later: a lasting shift, far below the spike
    s = pd.Series(values, index=pd.date_range("2026-01-05", periods=n, freq="5min"))
    # the level and shift channels only: the daily season sees this shift too (the spike's day, in an
    # earlier alert's quiet period, left it no reference, `season_forget`), so it would hide the clip
    scores = nab_detector(s, channels="level,shift")
    assert scores[3 * DAY] >= ALERT
    assert scores[shift_at : shift_at + 60].max() >= ALERT
    unclipped = nab_detector(s, channels="level,shift", shift_clip=0.0)
    assert unclipped[shift_at : shift_at + 60].max() < ALERT  # what the unclipped means missed


@pytest.mark.parametrize("seed", [0, 2])
def test_an_incident_is_no_reference_for_the_next_day(seed):
    """A 3-hour dip alerts once; a day later the same time of day, back to normal, differs from the
    dip by as much as the dip did from normal.  With the alert's quiet period kept out of the seasonal
    memory (`season_forget`) that echo opens no second alert; without, it does (a quiet period
    longer than a day used to be what hid it)."""
    s = seasonal(days=9, seed=seed)
    s.iloc[AT : AT + 36] -= 20
    scores = nab_detector(s)
    assert scores[AT : AT + 12].max() >= ALERT
    echo = slice(AT + DAY - 12, AT + DAY + 48)
    assert scores[echo].max() < ALERT
    assert nab_detector(s, season_forget=False)[echo].max() >= ALERT


def _cadenced(step_s: float, days: int = 8, seed: int = 0, jitter: float = 0.0, gaps: bool = False) -> pd.Series:
    """The same seasonal process sampled every `step_s` seconds (optionally jittered, with gaps),
    a level shift of 12 noise sigmas at day 6 + 3 h."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, days * 86400, step_s, dtype=float)
    if jitter:
        t = np.sort(t + rng.uniform(-jitter, jitter, len(t)) * step_s)
    if gaps:  # two outages of 3 h (well before the shift: an alert at a gap keeps quiet for `suppress`)
        t = t[~(((t > 1.6 * 86400) & (t < 1.6 * 86400 + 10800)) | ((t > 2.5 * 86400) & (t < 2.5 * 86400 + 10800)))]
    values = 50 + 20 * np.sin(2 * np.pi * t / 86400) + rng.normal(0, 1.0, len(t))
    values[t >= SHIFT_AT] += 12
    return pd.Series(values, index=pd.Timestamp("2026-01-05") + pd.to_timedelta(t, unit="s"))


SHIFT_AT = 6 * 86400 + 3 * 3600


@pytest.mark.parametrize(
    "step,jitter,gaps", [(60, 0, False), (300, 0, False), (3600, 0, False), (300, 0.4, True), (60, 0.4, True)]
)
def test_same_process_at_any_cadence_alerts_alike(step, jitter, gaps):
    """Time units: at 1-minute, 5-minute and hourly cadence, and on jittered timestamps with gaps,
    the shift is alerted within an hour or two of it and the normal stretch stays (almost) quiet."""
    s = _cadenced(step, jitter=jitter, gaps=gaps)
    scores = nab_detector(s)
    t = (s.index - pd.Timestamp("2026-01-05")).total_seconds().to_numpy()
    after = (t >= SHIFT_AT) & (t < SHIFT_AT + max(2 * step, 7200))
    assert scores[after].max() >= ALERT, (step, jitter)
    normal = (t >= 86400) & (t < SHIFT_AT)
    assert (scores[normal] >= ALERT).sum() <= 2
    # warm-up is a time span: nothing is alerted in its first 12.5 h whatever the cadence
    assert scores[t < NabParams().warmup].max() == 0.0


def test_band_channel_scores_against_the_external_forecast():
    """A band (expected, lo, hi) is one more channel: without it a small deviation the series' own
    forecaster cannot see is missed, with it, it scores; no band leaves the NAB behaviour alone."""
    s = seasonal(days=6, seed=4)
    truth = 50 + 20 * np.sin(2 * np.pi * np.arange(len(s)) / DAY)
    at = 5 * DAY
    s.iloc[at] -= 9  # 6 sigma below the forecast, within the daily swing
    sd = 1.5
    plain, banded = DeviationScorer(), DeviationScorer()
    with_band, without = [], []  # raw scores (assess: no alert suppression in the way)
    for i, (t, v) in enumerate(s.items()):
        without.append(plain.assess(t, v))
        plain.learn()
        with_band.append(banded.assess(t, v, band=(truth[i], truth[i] - 1.96 * sd, truth[i] + 1.96 * sd)))
        banded.learn()
    assert "band" in banded.last_surprises and "band" not in plain.last_surprises
    assert with_band[at] >= ALERT
    # the band's channel alone sees it: the series' own channels score it lower
    assert with_band[at] > without[at]
    assert np.quantile(with_band[DAY:at], 0.99) < ALERT  # ordinary minutes stay low with the band too


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.0, 300.0), st.floats(-5.0, 5.0).map(lambda v: round(v, 1))), min_size=1, max_size=400
    ),
    st.integers(0, 400),
    st.integers(1, 70),
)
# A long window sliding for hundreds of steps, cut every few.
@example(steps=[(120.0, (i % 11) - 5.0) for i in range(300)], cut=150, compact_after=3)
def test_calibrator_windows_are_the_last_history_seconds(steps, cut, compact_after):
    """The calibrators' windows (arrays whose start moves, cut now and then) hold exactly the values
    of the last ``history`` seconds, sorted as a fresh sort of them, through any gaps and repeated
    values, and a pickled calibrator (a kept state, midway) goes on as the original."""
    with mock.patch.object(nab, "COMPACT_AFTER", compact_after):  # cut often, also in short examples
        _check_calibrator_windows(steps, cut)


def _check_calibrator_windows(steps, cut):
    tail, signed = TailCalibrator(1000.0, 5, 0.05), SignedCalibrator(1000.0, 5, 0.05)
    t, seen = 0.0, []
    for i, (gap, value) in enumerate(steps):
        if i == cut:
            tail, signed = pickle.loads(pickle.dumps(tail)), pickle.loads(pickle.dumps(signed))
        t += gap
        tail.push(abs(value), t)
        signed.push(value, t)
        seen.append((t, value))
        window = [v for s, v in seen if s > t - 1000.0]
        assert len(tail) == len(signed) == len(window)
        assert list(tail._sorted) == sorted(abs(v) for v in window)
        assert list(signed._pos) == sorted(v for v in window if v > 0)
        assert list(signed._neg) == sorted(-v for v in window if v < 0)
    for x in (0.05, 1.0, 4.9, 7.5):
        fresh = TailCalibrator(1000.0, 5, 0.05)
        for s, v in seen:
            if s > t - 1000.0:
                fresh.push(abs(v), s)
        assert tail.surprise(x) == fresh.surprise(x)
