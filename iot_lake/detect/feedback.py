"""What an operator's verdicts do to detection, measured: the day again, with and without them.

The main job has no operator, so the simulator's ground truth plays one: every case of the scored
window that matches no injected anomaly is marked a false positive.  Then the window's minutes are
played once more as if they came again the next day (same values against the same band: the
recurring false alarm an operator is tired of), after replaying everything up to the end of the
window, once as stored and once with the marked periods learnt as normal (what the deviations asset
does with ``CaseStore.false_positive_periods``).  The count of marked cases whose excursion raises
an incident again says whether the verdicts were heard.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from iot_lake.detect.deviations import DeviationParams, score

DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class FeedbackEffect:
    marked: int  # cases marked false positive
    again_without: int  # of those, alarming again the next day without the verdicts
    again_with: int  # ... and with them


def _as_joined(rows: pd.DataFrame, shift: pd.Timedelta) -> pd.DataFrame:
    """ops/deviations rows as ``with_forecasts`` output, moved by ``shift``."""
    return pd.DataFrame(
        {
            "device_id": rows["device_id"],
            "metric": rows["metric"],
            "site_id": rows["site_id"],
            "bucket_start": rows["ts"] + shift,
            "mean": rows["actual"],
            "yhat": rows["expected"],
            "lo_95": rows["expected_lo"],
            "hi_95": rows["expected_hi"],
            "origin": rows["forecast_origin"] + shift,
            "model_version": rows["model_version"],
        }
    )


def _alarming(scored: pd.DataFrame, periods: pd.DataFrame) -> int:
    """How many of the periods (moved a day on) have an incident starting inside them."""
    flags = scored.sort_values("ts")
    starts = flags[
        flags["is_anomalous"] & ~flags.groupby(["device_id", "metric"])["is_anomalous"].shift(fill_value=False)
    ]
    count = 0
    for p in periods.itertuples():
        same = starts[(starts["device_id"] == p.device_id) & (starts["metric"] == p.metric)]
        count += bool(((same["ts"] >= p.start + DAY) & (same["ts"] <= p.end + DAY)).any())
    return count


def feedback_effect(
    stored: pd.DataFrame,
    window: tuple[pd.Timestamp, pd.Timestamp],
    false_positives: pd.DataFrame,
    params: DeviationParams = DeviationParams(),
) -> FeedbackEffect:
    """``stored``: ops/deviations rows up to the window's end; ``false_positives``: device_id,
    metric, start, end of the cases marked false positive (the window's)."""
    if false_positives.empty:
        return FeedbackEffect(0, 0, 0)
    series = set(zip(false_positives["device_id"], false_positives["metric"]))
    rows = stored[[k in series for k in zip(stored["device_id"], stored["metric"])]]
    start, end = window
    history = rows[rows["ts"] < end]
    again = _as_joined(rows[(rows["ts"] >= start) & (rows["ts"] < end)], DAY)
    plain = score(again, history, params)
    heard = score(again, history, params, normal=false_positives)
    return FeedbackEffect(len(false_positives), _alarming(plain, false_positives), _alarming(heard, false_positives))
