"""Forecast deviations: 1-minute actuals against the champion forecast's band, scored causally.

Each minute of a series is compared with the forecast of its 5-minute bucket (the latest forecast
made before the hour it is in; none before the series' first forecast).  One
`iot_lake.detect.nab.DeviationScorer` per (device, metric) series -- the detector NAB is scored
with, with its NAB-tuned values -- is fed the minute, its timestamp and the band (expected, lo,
hi): the residual standardised by the band's width is one residual channel, beside the scorer's
own level, daily-season and shift channels (the daily season giving way to a forecast that
beats it: ``PRODUCTION``), each calibrated against the series' own
recent residuals, so a score means the same on every device and metric and a biased, too narrow
or too wide band is judged by how the series usually sits in it.

An incident (``is_anomalous``) starts at a minute whose score reaches the alert level
(``params.detector.alert_level``) and goes on while the following minutes stay outside the band or
score at the alert level themselves; it ends at the first minute back in band that scores below it.
Within ``suppress`` seconds (an hour here; NAB's tuned ~17.7 h) of its end, an alert starts a new incident only if its
surprise exceeds the last incident's peak by ``rearm_factor`` (one case per incident: its
aftershocks are not news, and on NAB every extra alert costs more than it earns).
Incident minutes are kept out of the band channel's calibration, so a long excursion does not
become normal (the scorer's own channels measure against a forecaster that follows the series, so
they keep learning: frozen, they would lock an incident on).

Causal and repeatable: a minute's score uses the minutes before it only, and an hour is scored
after replaying the series' stored rows of the hours before it (``history``, from
``DeviationParams.replay_since``) through a fresh scorer, so re-scoring an hour gives the same rows.
The state that replay builds can be kept instead of rebuilt (``starts``, ``score_and_keep``,
iot_lake.detect.states): the same state, so the same rows.  Periods an operator marked as normal (false
positives) are learnt as normal in that replay even where they were flagged, so the same deviation
is less surprising next time.
"""

from __future__ import annotations

import functools
import logging
import math
import multiprocessing
import os
import pickle
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from iot_lake.cases.model import ACTIVE, Deviation, points_to_observe
from iot_lake.detect.nab import DeviationScorer, NabParams
from iot_lake.detect.silence import silence_marks
from iot_lake.detect.stuck import StuckRun

log = logging.getLogger(__name__)

Z = {80: 1.2815515655446004, 95: 1.959963984540054}
KEY = ["device_id", "metric"]
BAND_COLUMNS = ["lo_80", "hi_80", "lo_95", "hi_95"]
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

# The detector as production runs it: the one scored on NAB, with its NAB-tuned values (in time
# units, so they mean the same on 1-minute actuals as on NAB's 5-minute points), and these changes:
# - the band channels: the band residual, and its 10-minute EW mean ("band_mean"), so a small
#   shift, drift or stuck value the band sees minute after minute adds up.  They speak once
#   calibrated on a day of the series' bands (``band_after``): a forecast's errors persist for
#   hours, so neither its band nor their mean has a normal tail to trust before (the sole
#   exception: the band's normal tail while the own channels still warm up);
# - ``band_skill``: and only while the forecast's mean absolute error (EW, ~11.5 h) is below the
#   detector's own moving level's: a forecast that cannot beat a 33-minute moving level of the series
#   (a seasonal naive champion on a series without a season) adds its persistent errors as false
#   alarms and nothing the own channels do not see;
# - ``season_yield``: the own daily-season channel is silent while the forecast's mean absolute
#   error (EW, ~11.5 h) is below the daily-season forecast's on the same minutes.  The daily season
#   is yesterday at this time (season_count=1): on a day unlike the day before (a short Saturday
#   after two-shift weekdays, an idle Sunday, a Monday) it calls every changed minute an anomaly,
#   while a forecast that knows the week expects it.  A forecast that beats yesterday-at-this-time
#   makes it the worse reference; whatever it would see, the band sees better.  On the main job's
#   simulated Saturday 140 of its 152 false incidents opened on that channel (docs/forecasting.md);
#   its one value (1.0: "better than") follows from the rule, as band_skill's, and was not swept;
# - ``lag``: residuals join the calibration an hour late, so a developing shift or drift is judged
#   against the hour before it, not against its own last minutes (NAB's series need no lag);
# - ``suppress`` of an hour, not NAB's 17.7: an operator wants a case for each incident, while NAB
#   charges every extra alert more than most detections earn;
# - yesterday's echo (``DeviationParams.echo_ordinary``, ``SeriesScorer._echo``): an alert the daily
#   season alone raises, on a minute ordinary against the day before yesterday, opens nothing.  NAB
#   keeps an incident out of that memory instead (``season_forget``, after its 17.7 h quiet); here
#   that cost real-data points (the excursion outlasts the incident found in it, and the channel is
#   blind at those hours the next day), the second opinion does not (docs/forecasting.md);
# - a stuck sensor (``DeviationParams.stuck_after``, iot_lake.detect.stuck): a mid-range value held
#   exactly, longer than the series held it before, is an incident whatever its residual;
# - a silent sensor (``DeviationParams.silent_after``, iot_lake.detect.silence): a gap longer than the
#   series ever paused is marked by an anomalous row without an actual (``silences``).
# A series without a forecast yet is judged by its own channels alone.  Chosen on the unit tests
# (tests/test_deviations.py) and simulated days (case precision and recall).  ``band_skill`` was
# added after the real-data benchmark showed the band channels costing its series about 7 NAB
# points; its one value (1.0: "better than") was set by the rule, not swept, but about a dozen
# variants had been run over that kept real-data lake by then, so benchmarks.realdata is not
# strictly out of sample for this choice.
PRODUCTION = NabParams(
    channels="level,season,shift,band,band_mean", suppress=3600.0, lag=3600.0, band_skill=1.0, season_yield=1.0
)


@dataclass(frozen=True)
class DeviationParams:
    band: int = 95  # the forecast interval that is the expected band
    # An alert is an echo of yesterday's excursion (SeriesScorer._echo) only if the minute is clearly
    # ordinary against the day before yesterday: under this share of the alert's surprise (half: a
    # marginal alert against both days is news). 0 turns the rule off.
    echo_ordinary: float = 0.5
    # A stuck sensor (iot_lake.detect.stuck): a value held this many seconds, and this many times as
    # long as the series held it before, opens an incident. 0 turns the rule off. Set before any run
    # on data: half an hour is how soon an operator would want to know; "twice" the longest ordinary.
    stuck_after: float = 1800.0
    stuck_factor: float = 2.0
    # A silent sensor (iot_lake.detect.silence): a gap of this many seconds, and this many times the
    # longest pause of the series' calibration window, is marked as an anomalous row without an
    # actual, which opens a case. 0 turns it off. Set as the stuck rule's, before any run on data.
    silent_after: float = 900.0
    silent_factor: float = 2.0
    detector: NabParams = field(default_factory=lambda: PRODUCTION)

    @property
    def history(self) -> timedelta:
        """The detector's calibration window: what a series' state is built from."""
        return timedelta(seconds=self.detector.history)

    def replay_since(self, start: datetime) -> datetime:
        """Where the stored rows replayed before ``start`` begin: one calibration window before the
        start of its (UTC) day, the same for every hour of the day. So the state an hour starts in
        is that of the hour before extended by the hour before's rows, and a run can keep it for the
        next hour (iot_lake.detect.states) instead of the next run replaying the window again; the
        window's start moves once a day. An hour scored alone still sees what a long range scored
        in one pass sees (that range starts at a day's start)."""
        day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return day - self.history

    @property
    def alert_score(self) -> float:
        return self.detector.alert_level


def with_forecasts(actuals: pd.DataFrame, forecasts: pd.DataFrame) -> pd.DataFrame:
    """Each 1-minute actual (device_id, metric, site_id, bucket_start, mean) beside the forecast of
    its 5-minute bucket from the latest origin at or before the minute.  Minutes without one keep
    empty forecast columns: the scorer's own channels judge them (a series before its first model)."""
    actuals = actuals.assign(bucket_5min=actuals["bucket_start"].dt.floor("5min"))
    columns = ["device_id", "metric", "bucket_5min", "yhat", *BAND_COLUMNS, "origin", "model_version"]
    latest = (
        forecasts.sort_values("origin")
        .drop_duplicates(["device_id", "metric", "bucket_start"], keep="last")
        .rename(columns={"bucket_start": "bucket_5min"})
        .reindex(columns=columns)
    )
    joined = actuals.merge(latest, on=["device_id", "metric", "bucket_5min"], how="left")
    joined.loc[joined["origin"] > joined["bucket_start"], columns[3:]] = None
    return joined


def standardised(actual, expected, lo, hi, band: int) -> np.ndarray:
    """The residual in units of the band's implied standard deviation (its half-width / z)."""
    sigma = np.maximum((np.asarray(hi) - np.asarray(lo)) / (2 * Z[band]), 1e-9)
    return (np.asarray(actual) - np.asarray(expected)) / sigma


BAND = ("band", "band_mean")
DAY = 86400.0
RECUR_WITHIN = 3600.0  # an alert this close to an earlier day's incident's time of day repeats it


class SeriesScorer:
    """One series' state: its `DeviationScorer` and whether an incident is on (module docstring)."""

    def __init__(self, params: DeviationParams = DeviationParams()):
        self.params = params
        self.scorer = DeviationScorer(replace_z(params.detector, params.band))
        self.alert = params.detector.alert_level
        self.in_incident = False
        self._peak = 0.0  # the last incident's largest surprise, and when it ended
        self._ended = -math.inf
        self._seen: deque[list[float]] = deque()  # [time, peak surprise] of recent alerts (_remember)
        self._stored_incident = False  # replay: the previous stored minute was flagged
        self._in_repeat = False  # in an excursion that repeats the daily rhythm (_recurrence)
        self.stuck = StuckRun(params.stuck_after, params.stuck_factor, params.detector.history)

    def update(self, t: float, actual: float, band: tuple | None) -> tuple[float, bool]:
        """(score in [0, 1], anomalous?) of the minute at t (seconds), then learn from it."""
        s = self.scorer.assess(t, actual, band)
        stuck = self.stuck.follow(t, actual)
        if stuck:  # at the alert level: whatever its residual, it is not a reading
            s = max(s, self.alert)
        outside = band is not None and not (band[1] <= actual <= band[2])
        surprise = self.scorer.surprise_value
        if self.in_incident:
            self.in_incident = outside or s >= self.alert
            self._peak = max(self._peak, surprise)
            self._remember(t, surprise)
            self._ended = t
        elif stuck or (self._between_incidents(t, s, surprise, outside) and not self._echo()):
            self._start(t, surprise)
        self.scorer.learn(BAND if self.in_incident or self._in_repeat else ())
        return s, self.in_incident

    def _between_incidents(self, t: float, s: float, surprise: float, outside: bool) -> bool:
        """Follow a minute outside any incident (a daily repeat's, or a quiet one's); whether an
        incident starts at it. ``update`` and ``replay`` share it, so both keep the same state."""
        if self._in_repeat:
            self._in_repeat = outside or s >= self.alert
            return s >= self.alert and not self._recurrence(t, surprise)  # grown beyond the rhythm
        if s >= self.alert and not self._aftershock(t, surprise):
            self._in_repeat = self._recurrence(t, surprise)
            return not self._in_repeat
        return False

    def _echo(self) -> bool:
        """Whether an alert is yesterday's excursion seen in a normal day: raised by the daily-season
        channel alone (yesterday at this time is its reference), while the minute is ordinary against
        the day before yesterday at this time. Yesterday was the odd one out, and its excursion has
        had its case (or was missed then): compared with it, the normal day is its mirror image, the
        same case a day later. A day unlike both days before (a Saturday after weekdays) is not one."""
        surprises = self.scorer.last_surprises
        if not surprises or max(surprises, key=surprises.get) != "season":
            return False
        if self.scorer.surprise_without("season") >= self._alert_surprise:
            return False
        before = self.scorer.season_surprise(2)
        return before == before and before < self.params.echo_ordinary * self._alert_surprise

    @property
    def _alert_surprise(self) -> float:
        """The surprise (nats) at which the score reaches the alert level."""
        return self.params.detector.half_surprise * self.alert / (1 - self.alert)

    def _start(self, t: float, surprise: float) -> None:
        self.in_incident, self._in_repeat, self._peak = True, False, surprise
        self._remember(t, surprise)

    def _aftershock(self, t: float, surprise: float) -> bool:
        """An incident's aftershock (the own channels' means still settling after it) within
        ``suppress`` seconds of its end is the same incident, unless clearly bigger."""
        p = self.params.detector
        return t <= self._ended + p.suppress and surprise <= p.rearm_factor * self._peak

    def _recurrence(self, t: float, surprise: float) -> bool:
        """Whether an alert at t repeats what the series did at the same time of day (within
        ``RECUR_WITHIN``) on at least two earlier days, no bigger: its daily rhythm (a nightly batch
        job, a shift change), not news. One earlier day is not a rhythm: a real fault at the hour of
        yesterday's false alarm still opens a case. On real CloudWatch series 55 of the 126 cases
        outside any labelled anomaly repeated an earlier day's at the same hour. A repeat opens no
        incident, but like one it stays out of the band channels' calibration (learnt as normal, the
        same excursion at another hour would pass unnoticed), and it is remembered so the rhythm
        stays known. Only the detector's history counts, the span an hour scored alone
        replays, so re-scoring an hour gives the same flags."""
        days, peak = set(), 0.0
        for start, top in self._seen:
            since = t - start
            off = since % DAY
            if since >= DAY - RECUR_WITHIN and min(off, DAY - off) <= RECUR_WITHIN:
                days.add(round(since / DAY))
                peak = max(peak, top)
        if len(days) < 2 or surprise > self.params.detector.rearm_factor * peak:
            return False
        self._remember(t, surprise)
        return True

    def _remember(self, t: float, surprise: float) -> None:
        """Note an alert (an incident's or a repeat's) at t: one entry per hour of an excursion, its peak kept
        (a long incident marks each hour of the day it covered)."""
        if self._seen and t - self._seen[-1][0] <= RECUR_WITHIN:
            self._seen[-1][1] = max(self._seen[-1][1], surprise)
        else:
            self._seen.append([t, surprise])
        while self._seen[0][0] < t - self.params.detector.history:
            self._seen.popleft()

    def replay(self, t: float, actual: float, band: tuple | None, anomalous: bool, normal: bool = False) -> None:
        """Learn from a stored minute without scoring it: its stored flag says whether it was an
        incident (kept out of the calibration) unless an operator marked it normal. The alerts that
        were a daily repeat are found again the way ``update`` found them (same state, same test)."""
        s = self.scorer.assess(t, actual, band)
        if self.stuck.follow(t, actual, normal):
            s = max(s, self.alert)
        surprise = self.scorer.surprise_value
        outside = band is not None and not (band[1] <= actual <= band[2])
        if anomalous:
            self._peak = max(self._peak, surprise) if self._stored_incident else surprise
            self._remember(t, surprise)
            self._ended = t
            self._in_repeat = False
        elif not self._stored_incident:  # where update was between incidents; an incident start is stored
            self._between_incidents(t, s, surprise, outside)
        self._stored_incident = bool(anomalous)  # even where an operator marked it normal
        self.in_incident = bool(anomalous) and not normal
        self.scorer.learn(BAND if self.in_incident or self._in_repeat else ())


def replace_z(p: NabParams, band: int) -> NabParams:
    return p.with_(band_z=Z[band]) if p.band_z != Z[band] else p


def epoch_seconds(ts: pd.Series) -> np.ndarray:
    return pd.DatetimeIndex(ts).as_unit("ns").asi8 / 1e9


def _in_periods(ts: np.ndarray, periods: pd.DataFrame | None) -> np.ndarray:
    """Which of the times (seconds) fall inside any [start, end] of `periods`."""
    inside = np.zeros(len(ts), bool)
    if periods is not None:
        for a, b in zip(epoch_seconds(periods["start"]), epoch_seconds(periods["end"])):
            inside |= (ts >= a) & (ts <= b)
    return inside


@dataclass
class SeriesTask:
    """One series' new minutes (times in seconds, actual, band) and the stored rows to replay first,
    or the state a replay of them built (``start``, pickled)."""

    times: np.ndarray
    actual: np.ndarray
    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    replay: tuple[np.ndarray, ...] | None  # t, actual, expected, lo, hi, anomalous, marked normal
    start: bytes | None = None
    # Given: the new minutes marked normal, and the state after replaying the scored minutes as
    # stored rows (what the next hour's replay would build) is returned too.
    normal: np.ndarray | None = None
    # The state the replay built (before the new minutes) is returned too, pickled.
    keep_start: bool = False


# What the silence rule reads of stored rows; a replay reads the band too (REPLAY_COLUMNS).
SILENCE_COLUMNS = ("device_id", "metric", "site_id", "ts", "actual", "is_anomalous")
_BAND_COLUMNS = ("expected", "expected_lo", "expected_hi")
REPLAY_COLUMNS = (*SILENCE_COLUMNS, *_BAND_COLUMNS)


@dataclass(frozen=True)
class Stored:
    """One series' stored rows of ops/deviations as arrays, in the order they were read: times
    (``epoch_seconds``), actual, the band (None if only SILENCE_COLUMNS were read) and flags."""

    seconds: np.ndarray
    actual: np.ndarray
    band: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    anomalous: np.ndarray
    site_id: object  # its last row's


def stored_by_series(history: pd.DataFrame | None) -> dict[tuple, Stored]:
    """Stored rows (SILENCE_COLUMNS at least) by series. Columns are converted once and split by
    series: a week of 80 series (860,000 rows) as a DataFrame each took 0.2-0.3 s, more than the
    silence rule that reads them."""
    if history is None or history.empty:
        return {}
    seconds = epoch_seconds(history["ts"])
    actual = history["actual"].to_numpy(float)
    bands = [history[c].to_numpy(float) for c in _BAND_COLUMNS] if set(_BAND_COLUMNS) <= set(history) else None
    anomalous = history["is_anomalous"].to_numpy(bool)
    sites = history["site_id"]  # only each series' last is read: converting the column cost 0.06 s
    out = {}
    for key, index in history.groupby(KEY, sort=False).indices.items():
        band = None if bands is None else tuple(b[index] for b in bands)
        out[key] = Stored(seconds[index], actual[index], band, anomalous[index], sites.iloc[index[-1]])
    return out


def replay_rows(past: Mapping[tuple, Stored], marked: dict, key: tuple, first: float) -> tuple[np.ndarray, ...] | None:
    """The series' stored rows before its first new minute, as arrays for ``SeriesTask.replay``."""
    if key not in past:
        return None
    stored = past[key]
    if stored.band is None:
        raise ValueError("a replay needs the stored band: read REPLAY_COLUMNS of ops/deviations")
    order = np.argsort(stored.seconds, kind="stable")
    t_past = stored.seconds[order]
    actual = stored.actual[order]
    keep = (t_past < first) & ~np.isnan(actual)  # a silence's mark has no minute to learn
    cols = [actual[keep], *(c[order][keep] for c in stored.band)]
    flags = stored.anomalous[order][keep]
    return (t_past[keep], *cols, flags, _in_periods(t_past[keep], marked.get(key)))


def score_series(
    task: SeriesTask, params: DeviationParams
) -> tuple[np.ndarray, np.ndarray, bytes | None, bytes | None]:
    """(scores, anomalous, state kept, start state) of one series' new minutes, after replaying its
    stored rows (or from the state given). The state kept (``task.normal`` given) is the start state
    that has replayed the scored minutes as the table will store them; the start state
    (``task.keep_start``, and no state given) what the replay built: both pickled."""
    scorer = pickle.loads(task.start) if task.start is not None else replayed(task.replay, params)
    # What the series starts from, pickled (a state pickles in ~2 ms): given, or what its replay built.
    origin = task.start
    if origin is None and (task.keep_start or task.normal is not None):
        origin = pickle.dumps(scorer, protocol=pickle.HIGHEST_PROTOCOL)
    start = origin if task.keep_start and task.start is None else None
    if task.normal is None:
        return (*score_minutes(scorer, task), None, start)
    kept = pickle.loads(origin)  # its own copy, to learn the minutes as the table will store them
    scores, anomalous = score_minutes(scorer, task)
    rows = (task.times, task.actual, task.expected, task.lower, task.upper, anomalous, task.normal)
    replay_into(kept, rows)
    return scores, anomalous, pickle.dumps(kept, protocol=pickle.HIGHEST_PROTOCOL), start


def replayed(replay: tuple[np.ndarray, ...] | None, params: DeviationParams) -> SeriesScorer:
    """A fresh series scorer that has learnt from the stored rows (``SeriesTask.replay``): the state an
    hour's first minute is scored in. The streaming scorer (iot_lake.stream) keeps a copy per series
    and hour, so each landing object costs the hour's minutes, not the replay."""
    scorer = SeriesScorer(params)
    if replay is not None:
        replay_into(scorer, replay)
    return scorer


def replay_into(scorer: SeriesScorer, replay: tuple[np.ndarray, ...]) -> None:
    """Learn from stored rows (``SeriesTask.replay``'s arrays), in order."""
    t, x, e, lo, hi, flags, ok = (c.tolist() for c in replay)
    for row in zip(t, x, e, lo, hi, flags, ok):
        scorer.replay(row[0], row[1], (row[2], row[3], row[4]) if row[2] == row[2] else None, row[5], row[6])


def score_minutes(scorer: SeriesScorer, task: SeriesTask) -> tuple[np.ndarray, np.ndarray]:
    """(scores, anomalous) of the task's new minutes, in order, through ``scorer`` (which learns from them)."""
    scores, anomalous = np.zeros(len(task.times)), np.zeros(len(task.times), bool)
    columns = (task.times, task.actual, task.expected, task.lower, task.upper)
    for i, (t, x, e, a, b) in enumerate(zip(*(c.tolist() for c in columns))):
        scores[i], anomalous[i] = scorer.update(t, x, (e, a, b) if e == e else None)
    return scores, anomalous


# The scorer is pure Python (~50 us a minute) and series are independent, so a long range (the main
# job's 5 days of 80 series: 570,000 minutes) is scored on every core; below this many minutes the
# worker processes' start (~1 s) costs more than it saves.
PARALLEL_MINUTES = 100_000


def _map_series(
    tasks: list[SeriesTask], params: DeviationParams
) -> list[tuple[np.ndarray, np.ndarray, bytes | None, bytes | None]]:
    workers = min(os.cpu_count() or 1, len(tasks))
    # A replay's stored rows count as minutes: an hour after a week of rows is ~10,000 a series.
    minutes = sum(len(t.times) + (0 if t.replay is None else len(t.replay[0])) for t in tasks)
    if workers < 2 or minutes < PARALLEL_MINUTES:
        return [score_series(t, params) for t in tasks]
    # spawn, not fork: the caller is a Dagster process with threads (event log, compute logs).
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(functools.partial(score_series, params=params), tasks, chunksize=4))
    except BrokenProcessPool as exc:
        # A worker died (killed, or a script without an ``if __name__ == "__main__"`` guard, which
        # spawn re-imports): the same rows, one process.
        log.warning(f"scoring on {workers} processes failed ({exc}); scoring in this process")
        return [score_series(t, params) for t in tasks]


def score(
    joined: pd.DataFrame,
    history: pd.DataFrame | None,
    params: DeviationParams = DeviationParams(),
    normal: pd.DataFrame | None = None,
    starts: Mapping[tuple[str, str], bytes] | None = None,
    window: tuple[pd.Timestamp, pd.Timestamp] | None = None,
) -> pd.DataFrame:
    """Scored deviations (COLUMNS) of the joined minutes (``with_forecasts``).

    ``history``: earlier scored rows of ops/deviations (device_id, metric, ts, actual, expected,
    expected_lo, expected_hi, is_anomalous), replayed per series through its scorer before its
    new minutes (only rows before the series' first new minute, so re-scoring an hour with the
    same history gives the same rows).  ``normal``: (device_id, metric, start, end) periods an
    operator marked as false positives; replayed minutes inside them are learnt as normal.
    ``starts``: per series, the state a replay of its history built (``replayed``, pickled: each
    call scores from its own copy); it scores the series' minutes instead of a replay of
    ``history`` (the streaming scorer's cache, the states a deviations run kept).
    ``window``: the [start, end) scored; given, the silences that began in it are marked too
    (``silences``), for every series of the frame or of ``history``."""
    return _score(joined, history, params, normal, window, starts or {}, keep=False)[0]


def score_and_keep(
    joined: pd.DataFrame,
    history: pd.DataFrame | None,
    params: DeviationParams,
    normal: pd.DataFrame | None,
    window: tuple[pd.Timestamp, pd.Timestamp],
    starts: Mapping[tuple[str, str], bytes],
    keep: bool = True,
    keep_start: bool = False,
) -> tuple[pd.DataFrame, dict[tuple[str, str], bytes | None], dict[tuple[str, str], bytes]]:
    """``score``, each series starting in the state given in ``starts`` (pickled) instead of
    replaying its rows of ``history`` (series without one replay them), and, if ``keep``, with each
    scored series' state after its minutes as the next replay will learn them (the stored rows, the
    operators' marks of ``normal``): what that replay would build, pickled (iot_lake.detect.states).
    Not kept (None): a range whose next hour starts a new replay, where it would only cost time.
    Third, if ``keep_start``: the states the replays built, of the series that had none in
    ``starts``, pickled (what their first new minute was scored from)."""
    return _score(joined, history, params, normal, window, starts, keep=keep, keep_start=keep_start)


def _score(
    joined: pd.DataFrame,
    history: pd.DataFrame | None,
    params: DeviationParams,
    normal: pd.DataFrame | None,
    window: tuple[pd.Timestamp, pd.Timestamp] | None,
    starts: Mapping[tuple[str, str], bytes],
    keep: bool,
    keep_start: bool = False,
) -> tuple[pd.DataFrame, dict[tuple[str, str], bytes | None], dict[tuple[str, str], bytes]]:
    lo, hi = f"lo_{params.band}", f"hi_{params.band}"
    frame = joined[joined["mean"].notna()]  # a minute has a reading (a silence's mark, re-read, has none)
    frame = frame.sort_values(["device_id", "metric", "bucket_start"]).reset_index(drop=True)
    actual = frame["mean"].to_numpy(float)
    expected, lower, upper = (frame[c].to_numpy(float) for c in ("yhat", lo, hi))
    residual = standardised(actual, expected, lower, upper, params.band)
    times = epoch_seconds(frame["bucket_start"])
    scores, anomalous = np.zeros(len(frame)), np.zeros(len(frame), bool)
    past = stored_by_series(history)
    marked = {} if normal is None or normal.empty else dict(list(normal.groupby(KEY)))
    groups = frame.groupby(KEY).indices
    tasks = [
        SeriesTask(
            times[index],
            actual[index],
            expected[index],
            lower[index],
            upper[index],
            None if key in starts else replay_rows(past, marked, key, times[index[0]]),
            starts.get(key),
            _in_periods(times[index], marked.get(key)) if keep else None,
            keep_start,
        )
        for key, index in groups.items()
    ]
    results = _map_series(tasks, params)
    kept, started = {}, {}
    for key, index, (s, a, state, start) in zip(groups, groups.values(), results):
        scores[index], anomalous[index] = s, a
        kept[key] = state
        if start is not None:
            started[key] = start
    scored = pd.DataFrame(
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
    if window is None or params.silent_after <= 0:
        return scored, kept, started
    marks = silences(frame, {key: times[index] for key, index in groups.items()}, past, window, params)
    if not len(marks):
        return scored, kept, started
    same_types = {c: scored[c].dtype for c in ("ts", "forecast_origin", "model_version", "site_id")}
    return pd.concat([scored, marks.astype(same_types)], ignore_index=True), kept, started


def silences(
    frame: pd.DataFrame,
    new: Mapping[tuple, np.ndarray],
    past: Mapping[tuple, Stored],
    window: tuple,
    params: DeviationParams,
) -> pd.DataFrame:
    """One anomalous row without an actual (COLUMNS) at each minute of ``window`` at which a series of
    ``frame`` (joined minutes; ``new``: their times in seconds by series, as ``score`` has them) or
    ``past`` (stored rows by series, ``stored_by_series``) became silent (iot_lake.detect.silence)."""
    start, end = (pd.Timestamp(w).timestamp() for w in window)
    # The data's clock: a series is silent at the end only if others reported after it stopped.
    clock = min(end, max((t.max() for t in new.values()), default=start - 60.0) + 60.0)
    last = frame.drop_duplicates(KEY, keep="last")
    sites = dict(zip(zip(last["device_id"], last["metric"]), last["site_id"]))
    rows = []
    for key in sorted(set(new) | set(past)):
        stored = past.get(key)
        times, marked = np.zeros(0), np.zeros(0)
        if stored is not None:
            t = stored.seconds
            read = ~np.isnan(stored.actual)
            times = np.sort(t[read & (t < start)])
            marked = t[~read & stored.anomalous]
            sites.setdefault(key, stored.site_id)
        times = np.concatenate([times, np.sort(new.get(key, np.zeros(0)))])
        found = silence_marks(
            times,
            marked.tolist(),
            start,
            end,
            clock,
            after=params.silent_after,
            factor=params.silent_factor,
            history=params.detector.history,
        )
        rows += [(*key, sites.get(key), t) for t in found]
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    marks = pd.DataFrame(rows, columns=["device_id", "metric", "site_id", "t"])
    ts = pd.to_datetime(marks.pop("t"), unit="s", utc=True).dt.as_unit("ns")
    return marks.assign(
        ts=ts,
        actual=np.nan,
        expected=np.nan,
        expected_lo=np.nan,
        expected_hi=np.nan,
        residual=np.nan,
        score=1.0,
        is_anomalous=True,
        forecast_origin=ts.where(ts.isna()),  # none, with the column's time zone
        model_version=None,
        event_date=ts.dt.date,
    )[COLUMNS]


def observe_scored(store, scored: pd.DataFrame) -> dict[str, int]:
    """Hand a case store (iot_lake.cases.store.CaseStore) the scored minutes that can change a case
    (``points_to_observe``); counts of what it did. The deviations asset and the streaming scorer
    both call it, so the same minutes give the same cases: a range of many hours is one run, so a
    case opened in it must see the in-band minutes that resolve it."""
    counts: dict[str, int] = {}
    active = {(c.device_id, c.metric): c for c in store.list_cases() if c.status in ACTIVE}
    ordered = scored.sort_values(["device_id", "metric", "ts"]).reset_index(drop=True)
    keep = np.zeros(len(ordered), bool)
    for key, index in ordered.groupby(["device_id", "metric"], sort=False).indices.items():
        rows = ordered.iloc[index]
        case = active.get(key)
        keep[index] = points_to_observe(
            rows["ts"].tolist(),
            rows["is_anomalous"].tolist(),
            store.policy.resolve_after,
            active=case is not None,
            back_in_band_since=case.back_in_band_since if case else None,
        )
    # The store's severity reads the score as band standard deviations (3 warning, 6 critical).
    points = [
        Deviation(
            device_id=row.device_id,
            metric=row.metric,
            site_id=row.site_id,
            ts=row.ts.to_pydatetime(),
            actual=_finite(row.actual),  # None: a silence's mark
            expected_lo=_finite(row.expected_lo),
            expected_hi=_finite(row.expected_hi),
            score=_finite(abs(row.residual)) or 0.0,
            is_anomalous=bool(row.is_anomalous),
        )
        for row in ordered[keep].sort_values("ts", kind="stable").itertuples()
    ]
    for outcome in store.observe_many(points):
        counts[outcome.action] = counts.get(outcome.action, 0) + 1
    return counts


def _finite(value: float) -> float | None:
    """A float for the case store, None for NaN (a minute scored before the series had a forecast)."""
    return float(value) if value == value else None


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
