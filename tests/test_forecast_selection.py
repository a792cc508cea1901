"""What the product deploys, judged as the product chooses it, and LightGBM's absolute-error loss.

Real LightGBM and mlforecast fits on small simulated fleets (no mocks)."""

from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iot_lake.forecast.evaluation import (
    chosen_candidate,
    deployed_choices,
    naive_scale,
    on_common_origins,
    rolling_backtest,
    score,
    series_mase,
    with_deployed,
)
from iot_lake.forecast.model import Hyperparameters, Series, best_candidate, make, prepare
from iot_lake.forecast.train import TrainingEnvironment, train
from iot_lake.simulate.training_rows import training_rows

START = date(2026, 11, 2)


@pytest.fixture(scope="module")
def fleet() -> tuple[Series, Hyperparameters]:
    hp = Hyperparameters(n_estimators=20)
    return prepare(training_rows(devices=2, days=12, start=START), hp.freq, interpolate=False), hp


def test_the_deployed_forecast_at_each_origin_is_what_training_on_the_data_before_it_chooses(fleet):
    """At every scored origin, ``deployed`` is the candidate train.py would pick from the data before
    that origin alone (chosen_candidate of its own 3-origin backtest), with that candidate's scores."""
    series, hp = fleet
    result = with_deployed(rolling_backtest(series, hp, origins=2), series, hp)
    choices = deployed_choices(result, series, hp)
    assert list(choices) == result.origins
    per_origin = result.per_origin.set_index(["model", "origin"])
    for origin, chosen in choices.items():
        alone = rolling_backtest(series.until(origin), hp)  # what train.py runs on the data before it
        assert chosen == chosen_candidate(alone)[0]
        deployed, candidate = per_origin.loc[("deployed", origin)], per_origin.loc[(chosen, origin)]
        assert deployed["chosen"] == chosen and deployed["mase"] == candidate["mase"]
        forecasts = result.forecasts[result.forecasts["origin"] == origin].set_index("model")
        pd.testing.assert_frame_equal(
            forecasts.loc["deployed"].reset_index(drop=True), forecasts.loc[chosen].reset_index(drop=True)
        )


def test_candidates_are_compared_on_the_origins_all_of_them_were_scored():
    """The weekly naive, scored on the last of three days only (a week of history from then on),
    is not chosen for beating LightGBM's mean over three harder days."""
    days = pd.to_datetime(["2026-11-07", "2026-11-08", "2026-11-09"])
    mase = pd.DataFrame(
        {
            "model": ["lightgbm"] * 3 + ["seasonal_naive_weekly"] + ["champion"],
            "origin": [*days, days[2], days[2]],
            "unique_id": "a|m",
            "mase": [0.5, 0.5, 0.2, 0.3, 0.1],
        }
    )
    assert best_candidate(mase.groupby("model", as_index=False)["mase"].mean().query("model != 'champion'")) == (
        "seasonal_naive_weekly"
    )  # the mean over each candidate's own origins
    table = on_common_origins(mase).set_index("model")
    assert best_candidate(table.reset_index()) == "lightgbm"
    assert table["origins"].to_dict() == {"lightgbm": 1, "seasonal_naive_weekly": 1}


@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.floats(0.01, 10), min_size=6, max_size=6),
    extra=st.lists(st.floats(0.01, 10), min_size=1, max_size=2),  # origins before the common ones
    extra_model=st.sampled_from(["seasonal_naive", "lightgbm"]),
)
def test_scores_on_origins_another_candidate_lacks_never_change_the_choice(scores, extra, extra_model):
    days = pd.date_range("2026-11-07", periods=5, freq="D")
    common = pd.DataFrame(
        {
            "model": ["seasonal_naive", "lightgbm"] * 3,
            "origin": np.repeat(days[2:], 2),
            "unique_id": "a|m",
            "mase": scores,
        }
    )
    more = pd.DataFrame({"model": extra_model, "origin": days[: len(extra)], "unique_id": "a|m", "mase": extra})
    before = best_candidate(on_common_origins(common))
    assert best_candidate(on_common_origins(pd.concat([common, more], ignore_index=True))) == before


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), series=st.integers(1, 4), missing=st.floats(0, 0.5))
def test_series_mase_is_the_backtest_s_own_score(seed, series, missing):
    """The per-series MASE the deployed choice is made on equals ``score``'s, origin by origin."""
    rng = np.random.default_rng(seed)
    steps = 12
    ds = pd.date_range("2026-11-02", periods=4 * steps, freq="5min")
    raw = pd.DataFrame(
        {"unique_id": np.repeat([f"s{i}" for i in range(series)], len(ds)), "ds": np.tile(ds, series)}
    ).assign(y=rng.normal(10, 3, series * len(ds)))
    raw.loc[rng.random(len(raw)) < missing, "y"] = np.nan
    diffs = naive_scale(raw, steps)
    origin = ds[3 * steps]
    fc = raw[raw["ds"] >= origin].assign(yhat=lambda f: rng.normal(10, 3, len(f)), origin=origin)
    expected, _ = score(fc, diffs[diffs["ds"] < origin].groupby("unique_id")["abs_diff"].mean(), (80,))
    got = series_mase(fc, diffs)
    pd.testing.assert_series_equal(
        got.set_index("unique_id")["mase"].dropna(), expected.set_index("unique_id")["mase"].dropna()
    )


def test_lightgbm_minimises_absolute_error_so_spikes_in_its_history_do_not_drag_it():
    """A daily pattern with rare large spikes in the training days (as on the real AWS series): the
    L1 fit forecasts the pattern the next day closer than a squared-error fit, which chases them."""
    rng = np.random.default_rng(3)
    steps, days = 288, 6
    ds = pd.date_range("2026-11-02", periods=days * steps, freq="5min")
    frames = []
    for i in range(4):
        pattern = 10 + 5 * np.sin(2 * np.pi * np.arange(len(ds)) / steps + i)
        y = pattern + rng.normal(0, 0.5, len(ds))
        spikes = rng.random(len(ds)) < 0.03
        y[spikes] += rng.uniform(40, 80, spikes.sum())
        frames.append(pd.DataFrame({"device_id": f"d{i}", "bucket_start": ds.tz_localize("UTC"), "y": y}))
    rows = pd.concat(frames).assign(metric="cpu", site_id="s", timezone="UTC", model="m", temperature_c=np.nan)
    rows["event_date"] = rows["bucket_start"].dt.date
    train = prepare(rows[rows["bucket_start"] < ds[-steps].tz_localize("UTC")], "5min")
    errors = {}
    for objective in ("l1", "regression"):
        hp = Hyperparameters(objective=objective, n_estimators=50)
        fc = make("lightgbm", hp).fit(train).point(train, steps)
        phase = fc["unique_id"].str[1].astype(int).to_numpy()
        expected = 10 + 5 * np.sin(2 * np.pi * np.tile(np.arange(len(ds) - steps, len(ds)), 4) / steps + phase)
        errors[objective] = float(np.abs(fc["yhat"].to_numpy() - expected).mean())
    assert Hyperparameters().objective == "l1"
    assert errors["l1"] < 0.5 * errors["regression"], errors


def _weekly_rows(days: int) -> pd.DataFrame:
    """One series whose every weekday has its own level: the weekly naive repeats it to within the
    noise, the daily naive is a weekday off every day."""
    rng = np.random.default_rng(11)
    ds = pd.date_range("2026-11-02", periods=days * 288, freq="5min", tz="UTC")  # from a Monday
    y = (
        10
        + 3 * ds.day_of_week.to_numpy()
        + 2 * np.sin(2 * np.pi * ds.hour.to_numpy() / 24)
        + rng.normal(0, 0.1, len(ds))
    )
    rows = pd.DataFrame({"device_id": "d", "bucket_start": ds, "y": y})
    rows = rows.assign(metric="m", site_id="s", timezone="UTC", model="x", temperature_c=np.nan)
    return rows.assign(event_date=rows["bucket_start"].dt.date)


NAIVES = Hyperparameters(candidates=("seasonal_naive", "seasonal_naive_weekly"))


def test_a_candidate_is_deployed_only_once_its_intervals_are_calibrated_on_every_calibration_day():
    """9 days: the weekly naive, a week old, forecast the last two days almost exactly, but its
    intervals for the next day rest on those two days of errors, not the 3 of ``conformal_windows``.
    Compared on the two common origins alone it would win; it is not deployed until its third day."""
    series = prepare(_weekly_rows(9), "5min", interpolate=False)
    result = rolling_backtest(series, NAIVES)
    assert result.calibrated_days("seasonal_naive_weekly", result.end) == 2
    assert result.calibrated_days("seasonal_naive", result.end) == NAIVES.conformal_windows == 3
    assert best_candidate(on_common_origins(result.per_series)) == "seasonal_naive_weekly"  # without the rule
    assert result.eligible(result.end) == ["seasonal_naive"]
    assert chosen_candidate(result) == ("seasonal_naive", 3)

    series = prepare(_weekly_rows(10), "5min", interpolate=False)
    result = rolling_backtest(series, NAIVES)
    assert result.eligible(result.end) == ["seasonal_naive", "seasonal_naive_weekly"]
    assert chosen_candidate(result)[0] == "seasonal_naive_weekly"


def test_the_deployed_forecast_is_calibrated_on_every_calibration_day_once_a_candidate_is():
    """At each scored origin the backtest's ``deployed`` follows the same rule: the daily naive the
    day the weekly one has two days of errors, the weekly naive from its third."""
    series = prepare(_weekly_rows(12), "5min", interpolate=False)
    result = with_deployed(rolling_backtest(series, NAIVES), series, NAIVES)
    deployed = result.per_origin[result.per_origin["model"] == "deployed"].set_index("origin")
    assert deployed["chosen"].tolist() == ["seasonal_naive", "seasonal_naive_weekly", "seasonal_naive_weekly"]
    assert (deployed["calibration_days"] == 3).all()
    assert deployed.loc[result.origins[0], "coverage_95"] > 0.9


def test_with_fewer_days_than_the_calibration_window_the_best_calibrated_candidates_are_eligible(tmp_path):
    """3 days: the daily naive has two days of errors, the weekly naive none; training still deploys
    the daily naive by its MASE, and says which candidate sat out and on how many days."""
    series = prepare(_weekly_rows(3), "5min", interpolate=False)
    result = rolling_backtest(series, NAIVES)
    assert result.eligible(result.end) == ["seasonal_naive"]
    rows = _weekly_rows(9)
    (tmp_path / "train").mkdir()
    rows.to_parquet(tmp_path / "train" / "rows.parquet")
    env = TrainingEnvironment(
        {"train": tmp_path / "train"},
        tmp_path / "model",
        tmp_path / "out",
        {"candidates": "seasonal_naive,seasonal_naive_weekly"},
    )
    metrics = train(env)
    assert metrics["method"] == "seasonal_naive"
    assert metrics["method_reason"].startswith("lowest mean MASE")
    assert "calibrated on 3 of 3 days (not seasonal_naive_weekly: 2)" in metrics["method_reason"]
