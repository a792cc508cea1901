"""Shared by the tests of the production scorer (iot_lake.detect.deviations) on whole days of minutes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from iot_lake.detect.deviations import DeviationParams, score

DAY_MIN = 1440


def incident_starts(flags) -> np.ndarray:
    """Start positions of runs of flagged minutes."""
    f = np.asarray(flags, bool)
    return np.nonzero(f & ~np.r_[False, f[:-1]])[0]


def scored_day_by_day(
    joined: pd.DataFrame, params: DeviationParams = DeviationParams(), normal: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Each day of a full minute grid scored after replaying the rows of the days before (the asset's way)."""
    scored = None
    for day in range(len(joined) // DAY_MIN):
        rows = score(joined.iloc[day * DAY_MIN : (day + 1) * DAY_MIN], scored, params, normal=normal)
        scored = rows if scored is None else pd.concat([scored, rows], ignore_index=True)
    return scored
