"""Cases against ground truth: what an operator would ask of them.

An operator sees cases, not minutes, so the figures are per case and per injected anomaly:

- precision: the share of cases that overlap an injected anomaly of their series (a case that
  starts within ``slack`` after the anomaly ends still counts: the detector saw its tail; a case
  covers the whole minute of its last bucket, ``BUCKET``);
- recall: the share of injected anomalies that some case of their series overlaps;
- delay: from the anomaly's start to the start of the first case that overlaps it.

Only anomalies inside the scored window count, and only the series that were scored (an anomaly
of a series with no forecast could not have been found by this loop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SLACK = pd.Timedelta(minutes=5)
# A case's start and last_seen are the starts of the 1-minute buckets it was seen in (ops/deviations
# scores 1-minute aggregates), so it covers up to a minute after last_seen: a one-sample spike at
# 18:42:37 is inside the case seen in the 18:42 bucket alone.
BUCKET = pd.Timedelta(minutes=1)


@dataclass
class CaseAccuracy:
    cases: int = 0
    true_cases: int = 0
    anomalies: int = 0
    detected: int = 0
    delays_s: list[float] = field(default_factory=list)
    by_kind: dict[str, tuple[int, int]] = field(default_factory=dict)  # kind -> (detected, injected)
    matched: list[bool] = field(default_factory=list)  # per case (in the order given): matches an anomaly

    @property
    def precision(self) -> float:
        return self.true_cases / self.cases if self.cases else math.nan

    @property
    def recall(self) -> float:
        return self.detected / self.anomalies if self.anomalies else math.nan

    @property
    def median_delay_s(self) -> float:
        return float(np.median(self.delays_s)) if self.delays_s else math.nan


def case_accuracy(
    cases: pd.DataFrame,
    truth: pd.DataFrame,
    window: tuple[pd.Timestamp, pd.Timestamp],
    series: set[tuple[str, str]] | None = None,
    slack: pd.Timedelta = SLACK,
) -> CaseAccuracy:
    """``cases``: device_id, metric, start, last_seen; ``truth``: device_id, metric, start, end[, kind];
    both UTC. ``series`` limits the anomalies to the (device_id, metric) pairs that were scored."""
    first, last = window
    cases = cases.reset_index(drop=True)
    cases = cases.assign(last_seen=pd.to_datetime(cases["last_seen"], utc=True))
    truth = truth[(truth["end"] > first) & (truth["start"] < last)]
    if series is not None:
        truth = truth[[k in series for k in zip(truth["device_id"], truth["metric"])]]
    out = CaseAccuracy(cases=len(cases), anomalies=len(truth))
    hit = np.zeros(len(cases), bool)
    by_kind: dict[str, list[int]] = {}
    for a in truth.itertuples():
        same = cases[(cases["device_id"] == a.device_id) & (cases["metric"] == a.metric)]
        overlap = (same["start"] <= a.end + slack) & (same["last_seen"] + BUCKET > a.start)
        kind = getattr(a, "kind", "anomaly")
        counts = by_kind.setdefault(kind, [0, 0])
        counts[1] += 1
        if overlap.any():
            out.detected += 1
            counts[0] += 1
            hit[cases.index.get_indexer(same.index[overlap])] = True
            out.delays_s.append(max(0.0, (same["start"][overlap].min() - a.start).total_seconds()))
    out.true_cases = int(hit.sum())
    out.matched = hit.tolist()
    out.by_kind = {k: (v[0], v[1]) for k, v in sorted(by_kind.items())}
    return out
