"""A silent sensor: a series that stops reporting for longer than it ever paused before.

A dropout leaves no minutes, and a scorer of minutes sees nothing: on the main job's simulated days
no dropout ever opened a case. What is scored here is the gap. A series' pauses are calibrated on
its own calibration window (a 1-minute sensor skips a minute now and then; a 5-minute CloudWatch
metric misses an hour sometimes): a gap is a silence once it lasts ``after`` seconds and ``factor``
times the longest earlier pause of the window, with at least a day of the series seen.

A silence is marked by one row, at the minute it became one (its last minute plus the threshold):
``actual`` empty, anomalous, in the hour that minute falls in. The case store opens a case at it
and resolves it once the series is back in band for the usual half hour. Whether a series is still
silent at the end of what was scored is judged against the latest minute any series reported (the
data's own clock, so re-scoring the same rows gives the same marks, and an hour scored while its
objects land does not call a series silent because its last object is still in Firehose's buffer).
A marked silence is not an ordinary pause for the calibration.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

import numpy as np

DAY = 86400.0
MINUTE = 60.0


class Pauses:
    """The longest ordinary pause of the last ``history`` seconds (a monotonic queue of (end, seconds))."""

    def __init__(self, history: float):
        self.history = history
        self._queue: deque[tuple[float, float]] = deque()

    def add(self, end: float, seconds: float) -> None:
        while self._queue and self._queue[-1][1] <= seconds:
            self._queue.pop()
        self._queue.append((end, seconds))

    def longest(self, t: float) -> float:
        while self._queue and self._queue[0][0] < t - self.history:
            self._queue.popleft()
        return self._queue[0][1] if self._queue else 0.0


def silence_marks(
    times: np.ndarray,
    marks: Iterable[float],
    start: float,
    end: float,
    clock: float,
    *,
    after: float,
    factor: float,
    history: float,
) -> list[float]:
    """The minutes (seconds) in [start, end) at which the series' gaps became silences.

    ``times``: the series' minutes (seconds, sorted): its stored minutes of the calibration window
    before ``start``, then the new ones. ``marks``: silences already marked before ``start`` (their
    gaps are not ordinary pauses). ``clock``: how far the data goes (the latest minute scored of any
    series, plus one)."""
    if after <= 0 or len(times) == 0:
        return []
    marked = sorted(marks)
    pauses, found = Pauses(history), []
    first, last = float(times[0]), float(times[-1])
    ends = np.append(times, clock) if clock > last else np.asarray(times, float)
    paused = np.nonzero(np.diff(ends) > MINUTE)[0]  # consecutive minutes are most of a series
    for a, b in zip(ends[paused].tolist(), ends[paused + 1].tolist()):
        known = any(a < m < b for m in marked)  # marked when an earlier hour was scored
        mark = math.inf
        if a - first >= DAY:  # a day of the series seen: its pauses are known
            mark = math.floor((a + max(after, factor * pauses.longest(a))) / MINUTE) * MINUTE
        if known or mark < b:
            if not known and start <= mark < end:
                found.append(mark)
        elif b <= last:  # an ordinary pause (the gap open at the clock is not over yet)
            pauses.add(b, b - a)
    return found
