"""LightGBM's scikit-learn regressor with a predict that is cheap on small frames.

mlforecast forecasts recursively: one ``predict`` call per step, 288 a day at 5 minutes, each on one
row per series. LightGBM's own DataFrame path (``_data_from_pandas``) copies the frame and re-codes
its categorical columns with pandas on every call: 2.5 ms of the 3.3 ms a call took here, 4 s of a
17-second nightly training. This class does the same conversion (the training's category lists,
values it never saw as missing, every other column as float) with one array lookup per categorical
column, and hands LightGBM a NumPy array. Imported only where LightGBM is used (lightgbm is heavy).
"""

from __future__ import annotations

import warnings

import lightgbm as lgb
import numpy as np
import pandas as pd

# The outdoor temperature feature is missing wherever a site has no weather feed (imported series)
# and LightGBM treats a missing value as such; mlforecast says so on every recursive step, thousands
# of identical lines per training in the run's logs.
warnings.filterwarnings("ignore", message="Found null values in temperature_lag_1d", category=UserWarning)

# Below this many training rows one thread fits faster than all of them: LightGBM's threads wait
# passively (model.py says why) and waking them on every histogram costs more than they save on
# small sets. Measured on 2 cores with the nightly model's settings (150 trees, L1): 26k rows
# 0.42 s on one thread against 1.15 s on two, 100k 1.33 s against 1.6 s, 300k 3.49 s against 3.16 s.
# One thread also makes the fit independent of the machine's core count.
ONE_THREAD_BELOW_ROWS = 200_000


def threads(rows: int) -> int:
    """LightGBM's ``n_jobs`` for a history of ``rows`` rows on the series' grid (what ``fit`` is given;
    the rows learnt from are at most these): 1, or 0 (all cores) for large sets."""
    return 1 if rows < ONE_THREAD_BELOW_ROWS else 0


class LGBMRegressor(lgb.LGBMRegressor):
    def predict(self, X, **kwargs):
        if kwargs or not isinstance(X, pd.DataFrame) or not len(X):
            return super().predict(X, **kwargs)
        return self.booster_.predict(self._as_array(X))

    def _as_array(self, X: pd.DataFrame) -> np.ndarray:
        """X as LightGBM's DataFrame path would convert it, categorical columns as the training's codes."""
        known = iter(self.booster_.pandas_categorical or [])
        out = np.empty(X.shape, dtype=np.float64)
        for i, (_, column) in enumerate(X.items()):
            if isinstance(column.dtype, pd.CategoricalDtype):
                out[:, i] = _codes(column, next(known))
            else:
                out[:, i] = column.to_numpy(dtype=np.float64, na_value=np.nan)
        return out


def _codes(column: pd.Series, trained: list) -> np.ndarray:
    """The positions of the column's values among the training's categories; NaN where missing or unseen."""
    position = {value: float(i) for i, value in enumerate(trained)}
    lookup = np.array([position.get(value, np.nan) for value in column.cat.categories] + [np.nan])
    codes = column.cat.codes.to_numpy()
    return lookup[np.where(codes < 0, len(lookup) - 1, codes)]
