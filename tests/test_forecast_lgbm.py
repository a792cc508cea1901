"""iot_lake.forecast.lgbm: the fast predict gives exactly LightGBM's own DataFrame predictions."""

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iot_lake.forecast.lgbm import LGBMRegressor

METRICS = ["power", "temperature", "vibration", "pressure"]
PARAMS = {"n_estimators": 30, "num_leaves": 7, "min_child_samples": 3, "random_state": 1, "verbose": -1}


def frame(rng: np.random.Generator, n: int, metrics: list[str], categories: list[str]) -> pd.DataFrame:
    """Two categorical columns (like mlforecast's static features) between numeric ones with gaps."""
    lag = rng.normal(50, 10, n)
    lag[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "lag1": lag,
            "metric": pd.Categorical(rng.choice(metrics, n), categories=categories),
            "hour": rng.integers(0, 24, n),
            "model": pd.Categorical(rng.choice(["a", "b"], n), categories=["a", "b"]),
            "temperature": np.where(rng.random(n) < 0.5, np.nan, rng.normal(15, 5, n)),
        }
    )


@pytest.fixture(scope="module")
def fitted() -> tuple[lgb.LGBMRegressor, LGBMRegressor]:
    rng = np.random.default_rng(0)
    X = frame(rng, 600, METRICS[:3], METRICS[:3])
    y = np.nan_to_num(X["lag1"].to_numpy()) * 0.5 + X["metric"].cat.codes * 7 + X["hour"] + rng.normal(0, 1, len(X))
    return lgb.LGBMRegressor(**PARAMS).fit(X, y), LGBMRegressor(**PARAMS).fit(X, y)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 40),
    # the categories of a prediction frame need not be the training's: fewer, more, another order, unseen
    categories=st.permutations(METRICS).flatmap(lambda p: st.integers(1, 4).map(lambda k: list(p[:k]))),
    missing=st.booleans(),
)
def test_predictions_equal_lightgbms_own(fitted, seed, rows, categories, missing):
    reference, fast = fitted
    X = frame(np.random.default_rng(seed), rows, categories, categories)
    if missing:
        X.loc[X.index[0], "metric"] = np.nan
    np.testing.assert_array_equal(fast.predict(X), reference.predict(X))


def test_falls_back_to_lightgbm_for_other_inputs(fitted):
    reference, fast = fitted
    X = frame(np.random.default_rng(3), 5, METRICS[:3], METRICS[:3])
    assert np.array_equal(fast.predict(X, raw_score=True), reference.predict(X, raw_score=True))
    with pytest.raises(ValueError):
        fast.predict(X.iloc[:0])  # LightGBM's own error for an empty frame
