"""A stuck sensor: the same reading, minute after minute, for longer than the series ever held it.

A sensor that stops measuring keeps reporting its last value. Its minutes sit inside any band fit to
that value, and the residual channels, which judge how far a minute is from what was expected, see
nothing: on the main job's simulated days the scorer flagged none of 25 stuck windows. What gives it
away is the run itself: live readings jitter, so a mid-range value held exactly is unusual.

Two things hold a value legitimately, and both are calibrated on the series' own past:
- its floor or ceiling: an idle machine reads its minimum (the simulator clips vibration at 0.1, an
  idle disk writes 0 bytes) for hours. A run at the lowest or highest value of the series' recent
  past is never called stuck;
- coarse quantisation (a CloudWatch percentage, a 0.1 degree thermometer): a value the series has
  held before may be held again. A run is stuck once it lasts ``factor`` times the longest earlier
  run at that value, and at least ``after`` seconds.

Only the runs of the last ``history`` seconds count, with at least a day of them seen, so an hour
scored alone after its replay decides as a long range scored in one pass does. A run that was
stuck is not learnt as an ordinary one, unless an operator marked it normal.
"""

from __future__ import annotations

from collections import deque

DAY = 86400.0
REL_TOLERANCE = 1e-9  # a 1-minute mean of equal readings can be an ulp off them


def same(a: float, b: float) -> bool:
    return abs(a - b) <= REL_TOLERANCE * max(1.0, abs(a), abs(b))


class StuckRun:
    """The current run of one value, and the runs of the last ``history`` seconds (module docstring)."""

    def __init__(self, after: float, factor: float, history: float):
        self.after, self.factor, self.history = after, factor, history
        # Ordinary runs of the window: (end, value, seconds) of those held past one minute, and the
        # window's lowest and highest values as monotonic queues of (end, value) (most runs are one
        # minute long: kept whole, a week of them would be 10,000 entries per series).
        self._held: deque[tuple[float, float, float]] = deque()
        self._low: deque[tuple[float, float]] = deque()
        self._high: deque[tuple[float, float]] = deque()
        self._first = None  # the first minute seen
        self._value = self._start = self._last = None
        self._limit = None  # the current run's stuck threshold, set once it reaches ``after`` (None: not yet)
        self.stuck = False
        self._normal = False  # an operator marked a minute of the current run normal

    def follow(self, t: float, x: float, normal: bool = False) -> bool:
        """Whether the minute at t, reading x, is in a stuck run."""
        if self.after <= 0 or x != x:
            return False
        if self._first is None:
            self._first = t
        if self._value is None or not same(x, self._value):
            self._close()
            self._value, self._start, self._limit, self.stuck, self._normal = x, t, None, False, False
        self._last = t
        self._normal |= normal
        held = t - self._start
        if self._limit is None and held >= self.after:
            self._limit = self._threshold(t)
        self.stuck = self._limit is not None and held >= self._limit
        return self.stuck

    def _close(self) -> None:
        if self._value is None or (self.stuck and not self._normal):
            return
        end, value = self._last, self._value
        if end > self._start:
            self._held.append((end, value, end - self._start))
        while self._low and self._low[-1][1] >= value:
            self._low.pop()
        self._low.append((end, value))
        while self._high and self._high[-1][1] <= value:
            self._high.pop()
        self._high.append((end, value))
        self._forget(end)

    def _forget(self, t: float) -> None:
        for runs in (self._held, self._low, self._high):
            while runs and runs[0][0] < t - self.history:
                runs.popleft()

    def _threshold(self, t: float) -> float:
        """When the current run becomes stuck (inf: never), from the runs that ended in the window."""
        self._forget(t)
        if t - self._first < DAY or not self._low:
            return float("inf")  # too little of the series seen to know what it holds
        low, high, value = self._low[0][1], self._high[0][1], self._value
        if not low < value < high or same(value, low) or same(value, high):
            return float("inf")  # at (or beyond) the floor or ceiling: idle, saturated, off
        longest = max((s for _, v, s in self._held if same(v, value)), default=0.0)
        return max(self.after, self.factor * longest)
