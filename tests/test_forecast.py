"""Forecasting on simulated fleets with the real libraries (statsforecast, mlforecast, LightGBM) and
the SageMaker contract run as local Pipes subprocesses."""

import json
import os
import re
import subprocess
import sys
import tarfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import materialize
from deltalake import DeltaTable

from assets.ml.forecast import batch_forecast, forecast_model
from iot_lake.forecast import registry
from iot_lake.forecast.batch_forecast import forecast
from iot_lake.forecast.evaluation import coverage, rolling_backtest
from iot_lake.forecast.model import Calibration, Hyperparameters, Series, load, make, prepare
from iot_lake.forecast.train import TrainingEnvironment, train
from iot_lake.lake import Lake
from iot_lake.simulate.training_rows import training_rows
from resources.lake import LakeResource
from resources.sagemaker import SageMakerRunner
from resources.spark import SparkRunner

START = date(2026, 11, 2)  # a Monday: the hold-out of 12 days is a Friday, of 13 a Saturday
DAY = date(2026, 11, 14)


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return training_rows(devices=4, days=13, start=START)


def test_hyperparameters_arrive_as_sagemaker_strings():
    hp = Hyperparameters.from_strings(
        {"freq": "1min", "levels": "[80, 95]", "n_estimators": "50", "candidates": "seasonal_naive,lightgbm"}
    )
    assert (hp.freq, hp.levels, hp.n_estimators, hp.steps_per_day, hp.horizon) == ("1min", (80, 95), 50, 1440, 1440)
    with pytest.raises(ValueError, match="unknown hyperparameters: depth"):
        Hyperparameters.from_strings({"depth": "3"})
    with pytest.raises(ValueError, match="freq must be one of"):
        Hyperparameters.from_strings({"freq": "15min"})


def test_rolling_backtest_scores_lightgbm_against_both_naives_on_every_origin(rows):
    """Three origins (Thu, Fri, Sat): yesterday (a Friday shift pattern) is a poor guess for the
    Saturday, while the model has the site's local weekday and hour."""
    result = rolling_backtest(prepare(rows, "5min", interpolate=False), Hyperparameters(), origins=3)
    table = result.table.set_index("model")
    assert result.origins == [pd.Timestamp(f"2026-11-{d}") for d in (12, 13, 14)]
    assert set(table.index) == {"seasonal_naive", "seasonal_naive_weekly", "lightgbm"}
    assert (table["origins"] == 3).all() and (table["points"] == 3 * 16 * 288).all()
    assert table.loc["lightgbm", "mase"] < min(table.loc["seasonal_naive", "mase"], 1)
    saturday = result.per_origin.set_index(["model", "origin"])["mase"]
    assert saturday["lightgbm", pd.Timestamp("2026-11-14")] < 1 < saturday["seasonal_naive", pd.Timestamp("2026-11-14")]
    for model in table.index:
        assert table.loc[model, "coverage_80"] <= table.loc[model, "coverage_95"]
    assert 0.8 <= table.loc["lightgbm", "coverage_95"] <= 1


def _poisoned(series: Series, origin: pd.Timestamp) -> Series:
    """The same series with every value at or after ``origin`` replaced by nonsense, and a gap
    just before it, which only a value after the origin could fill differently."""
    values = series.values.copy()
    after = values["ds"] >= origin
    values.loc[after, "y"] = 1e6 + values.loc[after, "y"] * 37
    return Series(values, series.statics, series.weather)


def test_the_backtest_never_uses_data_at_or_after_the_origin(rows):
    """Forecasts, intervals and the MASE scale at an origin are the same whatever comes after it:
    fitting, interpolation and calibration see only the past."""
    hp = Hyperparameters(n_estimators=20, conformal_windows=2)
    holed = rows.drop(rows[(rows["bucket_start"] >= "2026-11-13 22:00") & (rows["bucket_start"] < "2026-11-14")].index)
    series = prepare(holed, "5min", interpolate=False)
    origin = pd.Timestamp("2026-11-14")
    # The gap before the origin is still missing: interpolation happens per training part.
    assert series.values.loc[series.values["ds"] == pd.Timestamp("2026-11-13 23:55"), "y"].isna().all()
    clean = rolling_backtest(series.until(origin + pd.Timedelta(days=1)), hp, origins=2)
    poisoned_series = _poisoned(series.until(origin + pd.Timedelta(days=1)), origin)
    poisoned = rolling_backtest(poisoned_series, hp, origins=2)
    first = clean.forecasts["origin"] == pd.Timestamp("2026-11-13")
    columns = ["model", "unique_id", "ds", "yhat", "lo_80", "hi_80", "lo_95", "hi_95"]
    pd.testing.assert_frame_equal(
        clean.forecasts.loc[first, columns].reset_index(drop=True),
        poisoned.forecasts.loc[poisoned.forecasts["origin"] == pd.Timestamp("2026-11-13"), columns].reset_index(
            drop=True
        ),
    )
    # The origin itself: its forecasts and intervals are unchanged, only the scored actuals differ.
    at = clean.forecasts["origin"] == origin
    pd.testing.assert_frame_equal(
        clean.forecasts.loc[at, columns].reset_index(drop=True),
        poisoned.forecasts.loc[poisoned.forecasts["origin"] == origin, columns].reset_index(drop=True),
    )
    assert not clean.per_origin["mase"].equals(poisoned.per_origin["mase"])  # the poison did reach the scores


def test_weekly_naive_repeats_the_week_before_and_daily_the_day_before():
    steps = 288
    ds = pd.date_range("2026-11-02", periods=8 * steps, freq="5min")
    values = pd.DataFrame({"unique_id": "a|m", "ds": ds, "y": np.arange(len(ds), dtype=float)})
    series = Series(values, pd.DataFrame({"unique_id": ["a|m"]}), pd.DataFrame())
    hp = Hyperparameters()
    weekly = make("seasonal_naive_weekly", hp).point(series, steps)
    daily = make("seasonal_naive", hp).point(series, steps)
    assert weekly["ds"].iloc[0] == pd.Timestamp("2026-11-10") and len(weekly) == steps
    # y is the step number: a week back from step 8 * 288 + h is step 288 + h, a day back 7 * 288 + h.
    np.testing.assert_array_equal(weekly["yhat"], np.arange(steps) + steps)
    np.testing.assert_array_equal(daily["yhat"], np.arange(steps) + 7 * steps)
    with pytest.raises(ValueError, match="needs at least 7 days"):
        make("seasonal_naive_weekly", hp).point(Series(values.iloc[: 6 * steps], series.statics, series.weather), 1)


def test_coverage_and_calibration_count_what_they_say():
    fc = pd.DataFrame(
        {"y": [1.0, 2.0, 3.0, 4.0, np.nan], "lo_80": [0.0, 2.5, 3.0, np.nan, 0.0], "hi_80": [2.0, 3.0, 3.0, 5.0, 9.0]}
    )
    # Inside, below, on both bounds; a missing bound and a missing actual are not counted.
    assert coverage(fc, 80) == pytest.approx(2 / 3)
    assert np.isnan(coverage(fc, 95))
    errors = pd.DataFrame(
        {"unique_id": "a", "ds": pd.date_range("2026-11-02", periods=100, freq="5min"), "y": np.arange(100.0)}
    ).assign(yhat=lambda f: f["y"] - (np.arange(100) - 49.5))  # errors -49.5 .. 49.5
    calibration = Calibration.from_errors(errors, (80,))
    out = calibration.apply(pd.DataFrame({"unique_id": ["a", "b"], "ds": errors["ds"][:2], "yhat": [10.0, 0.0]}), (80,))
    assert out.loc[0, "lo_80"] == pytest.approx(10 - 40.5) and out.loc[0, "hi_80"] == pytest.approx(10 + 40.5)
    assert out.loc[1, ["lo_80", "hi_80"]].isna().all()  # never calibrated: no interval rather than a guess


def test_lightgbm_waits_passively_for_its_threads_in_the_entry_points():
    """With both cores busy, spinning OpenMP threads made a 35 s training take over 300 s."""
    for entry in ("iot_lake.forecast.train", "iot_lake.forecast.batch_forecast"):
        code = f"import {entry}, lightgbm, os; print(os.environ['OMP_WAIT_POLICY'])"
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "PASSIVE"


def test_realised_coverage_counts_each_origin_s_forecast_of_an_observed_bucket():
    from iot_lake.forecast.evaluation import realised_coverage

    t = pd.Timestamp("2026-11-20T00:00:00Z")
    keys = {"device_id": "d", "metric": "m"}
    forecasts = pd.DataFrame(
        [
            {**keys, "bucket_start": t, "origin": t, "lo_80": 0.0, "hi_80": 1.0, "lo_95": -1.0, "hi_95": 2.0},
            {
                **keys,
                "bucket_start": t,
                "origin": t - pd.Timedelta("1h"),
                "lo_80": 2,
                "hi_80": 3,
                "lo_95": 0,
                "hi_95": 4,
            },
            {
                **keys,
                "bucket_start": t + pd.Timedelta("5min"),
                "origin": t,
                "lo_80": 0,
                "hi_80": 1,
                "lo_95": 0,
                "hi_95": 1,
            },
        ]
    )
    actuals = pd.DataFrame([{**keys, "bucket_start": t, "mean": 0.5}])  # the second bucket has no actual
    inside, points = realised_coverage(forecasts, actuals, (80, 95))
    assert points == 2 and inside == {80: 0.5, 95: 1.0}
    assert realised_coverage(forecasts.iloc[:0], actuals, (80,))[1] == 0


def test_training_with_two_or_three_days_falls_back_to_seasonal_naive_and_says_why(tmp_path, rows):
    for days, scored in ((3, True), (2, False)):
        short = rows[rows["event_date"] > date(2026, 11, 14) - timedelta(days=days)]
        (tmp_path / f"train{days}").mkdir()
        short.to_parquet(tmp_path / f"train{days}" / "rows.parquet")
        env = TrainingEnvironment(
            {"train": tmp_path / f"train{days}"}, tmp_path / f"model{days}", tmp_path / f"out{days}", {}
        )
        metrics = train(env)
        assert metrics["method"] == "seasonal_naive"
        assert "lightgbm needs at least 3 days" in metrics["skipped"]["lightgbm"]
        assert "needs at least 7 days" in metrics["skipped"]["seasonal_naive_weekly"]
        # It says at how many of the origins: with this little history, at every one.
        missed, of = re.search(r"at (\d+) of (\d+) origins", metrics["skipped"]["lightgbm"]).groups()
        assert missed == of and int(of) >= 1
        written = json.loads((tmp_path / f"out{days}" / "metrics.json").read_text())
        assert written["method"] == "seasonal_naive" and written["method_reason"] == metrics["method_reason"]
        if scored:  # two origins have a day before them: naive is scored, and wins as the only one
            assert [r["model"] for r in metrics["backtest"]] == ["seasonal_naive"]
            assert metrics["method_reason"].startswith("lowest mean MASE")
        else:
            assert metrics["method_reason"].startswith("fallback: no candidate could be scored")
        model, _ = load(tmp_path / f"model{days}")
        fc = model.predict(prepare(short, "5min"), 288)
        assert fc[["lo_95", "hi_95"]].notna().all().all()


def test_gaps_are_filled_on_each_series_grid(rows):
    holed = rows.drop(rows[(rows["device_id"] == "dev-0001") & (rows["bucket_start"].dt.hour == 3)].index)
    series = prepare(holed, "5min")
    counts = series.values.groupby("unique_id").size()
    assert counts.nunique() == 1 and series.values["y"].notna().all()


def _write_training_data(lake: Lake, rows: pd.DataFrame, day: date) -> None:
    lake.write_bytes(f"{registry.training_data_key(day)}/part-0.parquet", rows.to_parquet(index=False))


def _train(lake_root: Path):
    return materialize(
        [forecast_model],
        partition_key=DAY.isoformat(),
        resources={"lake": LakeResource(root=str(lake_root)), "sagemaker": SageMakerRunner()},
    )


def test_model_asset_trains_through_the_sagemaker_contract_and_keeps_every_version(tmp_path, rows):
    lake = Lake(str(tmp_path))
    _write_training_data(lake, rows, DAY)

    first = _train(tmp_path)
    meta = first.asset_materializations_for_node("ml__forecast_model")[0].metadata
    champion = registry.champion(lake)
    assert meta["method"].value == "lightgbm" and meta["promoted"].value is True
    assert meta["champion_before"].value == "none"
    assert champion["version"] == meta["job_name"].value
    # Where SageMaker puts a training job's artifacts: <output path>/<job>/output/model.tar.gz.
    assert champion["model_key"] == f"models/forecast/jobs/{champion['version']}/output/model.tar.gz"
    with tarfile.open(lake.path(champion["model_key"])) as tar:
        assert sorted(tar.getnames()) == ["model.json", "model.pkl"]
        assert json.load(tar.extractfile("model.json"))["version"] == champion["version"]
    assert "data:image/png;base64," in meta["forecast_vs_actual"].value
    assert "| lightgbm" in meta["backtest"].value and meta["training_data_last"].value == "2026-11-14T23:55:00Z"

    # The same day again: the champion has seen this hold-out, so its recorded MASE stands in; the
    # same data and seed give the same model, which ties it and takes over.
    second = _train(tmp_path)
    meta2 = second.asset_materializations_for_node("ml__forecast_model")[0].metadata
    assert meta2["champion_before"].value == champion["version"]
    assert "as recorded on its own hold-out" in meta2["promotion_reason"].value
    assert meta2["promoted"].value is True and meta2["mase"].value == meta["mase"].value
    versions = sorted(k.key for k in lake.list("models/forecast/versions"))
    assert len(versions) == 2
    # and the warehouse's copy: one metrics row per version, the chosen method's scores
    metrics = DeltaTable(lake.uri(registry.METRICS_KEY)).to_pandas().set_index("version")
    assert sorted(metrics.index) == sorted(v.rsplit("/", 1)[1].removesuffix(".json") for v in versions)
    assert metrics.loc[meta2["job_name"].value, "mase"] == meta2["mase"].value
    assert metrics.loc[meta2["job_name"].value, "coverage_80"] == meta2["coverage_80"].value


def test_a_fleet_too_young_to_score_gets_the_fallback_through_the_asset_and_a_scored_model_replaces_it(tmp_path, rows):
    """Less than a day concludes there is no model yet and forecasts nothing, without a failed run. A day and a half of
    history scores no candidate: the asset records seasonal naive as an unscored
    fallback and says why (the real-data run failed its second day on this). A later scored model
    replaces it; an unscored fallback never replaces a scored champion."""
    lake = Lake(str(tmp_path))
    # Ten hours: not a day for any series, so not even the fallback; no model, and no failed run.
    _write_training_data(lake, rows[rows["bucket_start"] >= pd.Timestamp("2026-11-14T14:00:00Z")], DAY)
    newborn = _train(tmp_path).asset_materializations_for_node("ml__forecast_model")[0].metadata
    assert newborn["method"].value == "none" and newborn["promoted"].value is False
    assert "seasonal_naive needs at least 1 days of history, got 0.4" in newborn["method_reason"].value
    assert registry.champion(lake) is None
    hour = materialize(
        [batch_forecast],
        partition_key="2026-11-14-23:00",
        resources={"lake": LakeResource(root=str(tmp_path)), "spark": SparkRunner(), "sagemaker": SageMakerRunner()},
    )
    assert hour.success and not hour.asset_materializations_for_node("ml__batch_forecast")

    young = rows[rows["bucket_start"] >= pd.Timestamp("2026-11-13T12:00:00Z")]
    _write_training_data(lake, young, DAY)
    meta = _train(tmp_path).asset_materializations_for_node("ml__forecast_model")[0].metadata
    assert meta["method"].value == "seasonal_naive" and meta["mase"].value is None
    assert meta["method_reason"].value.startswith("fallback: no candidate could be scored")
    assert meta["promoted"].value is True and registry.champion(lake)["version"] == meta["job_name"].value

    _write_training_data(lake, rows, DAY)
    scored = _train(tmp_path).asset_materializations_for_node("ml__forecast_model")[0].metadata
    assert scored["mase"].value is not None and scored["promoted"].value is True
    assert registry.should_promote([], "seasonal_naive", champion_mase=0.8)[0] is False


def test_a_worse_challenger_is_not_promoted(tmp_path):
    lake = Lake(str(tmp_path))
    backtest_rows = [{"model": "lightgbm", "mase": 0.5}, {"model": "champion", "mase": 0.4}]
    promote, reason = registry.should_promote(backtest_rows, "lightgbm", champion_mase=0.3)
    assert not promote and "0.5000 > champion's 0.4000 on the same hold-out" in reason
    assert registry.should_promote(backtest_rows[:1], "lightgbm", champion_mase=0.6)[0]
    assert registry.should_promote(backtest_rows[:1], "lightgbm") == (True, "no champion to compare with")
    registry.record(lake, registry.ModelVersion("v1", "k1", "lightgbm", 0.4, "a", "b", "2026-11-13", [], True))
    registry.record(
        lake, registry.ModelVersion("v2", "k2", "lightgbm", 0.5, "a", "b", "2026-11-14", backtest_rows, promote, reason)
    )
    assert registry.champion(lake)["version"] == "v1"
    assert json.loads(lake.read_bytes(registry.version_key("v2")))["reason"] == reason


def _model_and_history(tmp_path, rows) -> Path:
    """A LightGBM fitted before 2026-11-14 with intervals calibrated on its backtest (as train.py does),
    saved under tmp_path/model; the rows as the history directory it forecasts from."""
    from iot_lake.forecast.model import save

    hp = Hyperparameters(conformal_windows=1)
    before = rows[rows["event_date"] < date(2026, 11, 14)]
    calibration = rolling_backtest(prepare(before, hp.freq, interpolate=False), hp, origins=1, candidates=("lightgbm",))
    model = make("lightgbm", hp).fit(prepare(before, hp.freq))
    model.calibration = calibration.calibration("lightgbm", pd.Timestamp("2026-11-14"), hp.levels)
    save(model, tmp_path / "model", {"version": "v-test"})
    history = tmp_path / "history"
    history.mkdir()
    rows.to_parquet(history / "rows.parquet", index=False)
    return history


def test_batch_forecast_covers_the_horizon_from_the_origin_with_nested_intervals(tmp_path, rows):
    history = _model_and_history(tmp_path, rows)

    origin = datetime(2026, 11, 14, 6, tzinfo=UTC)
    out, report = forecast(tmp_path / "model", history, origin)
    assert report["series"] == 16 and len(out) == 16 * 288
    assert out["bucket_start"].min() == pd.Timestamp(origin)
    assert out["bucket_start"].max() == pd.Timestamp("2026-11-15T05:55:00Z")
    assert (out["lo_95"] <= out["lo_80"]).all() and (out["lo_80"] <= out["yhat"]).all()
    assert (out["yhat"] <= out["hi_80"]).all() and (out["hi_80"] <= out["hi_95"]).all()
    assert set(out["model_version"]) == {"v-test"}
    # Rows at or after the origin are ignored: a re-run later forecasts the same.
    again, _ = forecast(tmp_path / "model", history, origin)
    pd.testing.assert_frame_equal(out, again)


def test_a_range_of_origins_forecasts_each_as_if_alone(tmp_path, rows):
    """A backfilled range of hours is one processing job: each origin sees only the history before it,
    so the range's forecasts equal the ones each hour's own run makes."""
    from iot_lake.forecast.batch_forecast import forecast_origins

    history = _model_and_history(tmp_path, rows)
    origins = [datetime(2026, 11, 14, h, tzinfo=UTC) for h in (6, 7, 8)]

    together, reports = forecast_origins(tmp_path / "model", history, origins)
    assert [r["origin"] for r in reports] == [o.isoformat() for o in origins]
    for origin in origins:
        alone, _ = forecast(tmp_path / "model", history, origin)
        mine = together[together["origin"] == pd.Timestamp(origin)].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, alone)


def test_models_fitted_at_different_origins_forecast_together_what_each_forecast_alone(rows):
    """The backtest fits a model per origin and forecasts them in one recursive pass (``points``):
    each pair gets the numbers of its model alone, whichever feature layout it has (a young history
    has no 2- or 7-day lag), with a naive candidate and a series that starts late among them."""
    from iot_lake.forecast.model import points

    hp = Hyperparameters(n_estimators=30)
    series = prepare(rows, hp.freq, interpolate=False)
    late = series.values["unique_id"].eq(series.values["unique_id"].iloc[0]) & (
        series.values["ds"] < pd.Timestamp("2026-11-10")
    )
    later = Series(series.values[~late].reset_index(drop=True), series.statics, series.weather)
    ends = [pd.Timestamp(d) for d in ("2026-11-05", "2026-11-06", "2026-11-11", "2026-11-12", "2026-11-13")]
    histories = [s.until(end).interpolated() for s in (series, later) for end in ends]
    models = [make("lightgbm", hp).fit(h) for h in histories]
    lags = {tuple(m.lags) for m in models}
    assert len(lags) == 3, lags  # three layouts: one lag, two, three
    models[1], histories[1] = make("seasonal_naive", hp).fit(histories[1]), histories[1]
    together = points(models, histories, hp.steps_per_day)
    for model, history, fc in zip(models, histories, together):
        pd.testing.assert_frame_equal(fc, model.point(history, hp.steps_per_day), check_exact=True)


def test_the_backtest_is_the_same_with_origins_forecast_together_or_one_by_one(rows, monkeypatch):
    """Small fleets' origins are forecast together, large ones' one by one as each is fitted (memory):
    the same backtest either way."""
    from iot_lake.forecast import evaluation

    hp = Hyperparameters(n_estimators=30)
    series = prepare(rows, hp.freq, interpolate=False)
    assert len(series.values) < evaluation.FORECAST_ORIGINS_TOGETHER_BELOW_ROWS
    together = rolling_backtest(series, hp)
    monkeypatch.setattr(evaluation, "FORECAST_ORIGINS_TOGETHER_BELOW_ROWS", 0)
    alone = rolling_backtest(series, hp)
    assert together.errors.keys() == alone.errors.keys() == {"seasonal_naive", "seasonal_naive_weekly", "lightgbm"}
    for name in together.errors:
        pd.testing.assert_frame_equal(together.errors[name], alone.errors[name], check_exact=True)
    pd.testing.assert_frame_equal(together.table, alone.table, check_exact=True)


def _holed(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows with what a range of origins on 2026-11-14 has to handle alone: a gap right before the
    06:00 origin, a device whose history stops at 06:40, a gap across the 07:00 origin, a missing value."""
    t = rows["bucket_start"]
    day = pd.Timestamp("2026-11-14", tz="UTC")
    drop = (
        ((rows["device_id"] == "dev-0001") & (t >= day + pd.Timedelta("5h20min")) & (t < day + pd.Timedelta("6h")))
        | ((rows["device_id"] == "dev-0002") & (t > day + pd.Timedelta("6h40min")))
        | (
            (rows["device_id"] == "dev-0003")
            & (t >= day + pd.Timedelta("6h30min"))
            & (t < day + pd.Timedelta("7h30min"))
        )
    )
    holed = rows[~drop].reset_index(drop=True)
    holed.loc[(holed["device_id"] == "dev-0004") & (holed["bucket_start"] == day + pd.Timedelta("5h55min")), "y"] = (
        np.nan
    )
    return holed


RANGE = [datetime(2026, 11, 14, h, m, tzinfo=UTC) for h, m in ((6, 0), (7, 0), (7, 30), (8, 0), (9, 0))]


def test_the_history_before_each_origin_is_prepared_as_if_alone(rows):
    """prepare_before prepares the whole history once; each origin's series are exactly those of its rows
    alone: a gap at the end is filled from before the origin only, the hour the origin falls in is the
    weather of its rows before the origin, a series that starts later is not there yet. A device whose
    attributes changed within the history falls back to preparing each origin alone."""
    from iot_lake.forecast.model import prepare_before

    holed = _holed(rows)
    moved = holed.assign(model=np.where(holed["bucket_start"] < RANGE[1], "TX-100", holed["model"]))
    late = holed[(holed["device_id"] != "dev-0004") | (holed["bucket_start"] >= RANGE[2])]
    for history in (holed, moved, late):
        times = pd.to_datetime(history["bucket_start"], utc=True)
        for origin, many in zip(RANGE, prepare_before(history, "5min", RANGE)):
            alone = prepare(history[times < pd.Timestamp(origin)], "5min")
            for part in ("values", "statics", "weather"):
                pd.testing.assert_frame_equal(getattr(many, part), getattr(alone, part), check_exact=True)
    with pytest.raises(ValueError, match="no training rows"):
        prepare_before(holed, "5min", [datetime(2026, 11, 1, tzinfo=UTC)])


@pytest.mark.parametrize("method", ["lightgbm", "seasonal_naive"])
def test_a_range_of_origins_forecasts_what_each_origin_alone_did(tmp_path, rows, method):
    """The range's shortcuts (the history prepared once, all origins in one pass of the model) give the
    forecasts of preparing the rows before each origin and forecasting from them alone."""
    from iot_lake.forecast.batch_forecast import _labelled, forecast_origins
    from iot_lake.forecast.model import save

    history = _model_and_history(tmp_path, rows)
    if method == "seasonal_naive":
        save(make(method, Hyperparameters()), tmp_path / "model", {"version": "v-naive"})
    holed = _holed(rows)
    holed.to_parquet(history / "rows.parquet", index=False)

    together, _ = forecast_origins(tmp_path / "model", history, RANGE)
    model, meta = load(tmp_path / "model")
    times = pd.to_datetime(holed["bucket_start"], utc=True)
    for origin in RANGE:
        series = prepare(holed[times < pd.Timestamp(origin)], model.hp.freq)
        alone, _ = _labelled(model.predict(series, model.hp.horizon), series, origin, model, meta)
        mine = together[together["origin"] == pd.Timestamp(origin)].reset_index(drop=True)
        assert len(mine) == 16 * 288 and model.name == method
        pd.testing.assert_frame_equal(mine, alone, check_exact=False, rtol=1e-9)


def test_a_device_the_model_knew_but_the_history_lost_is_left_out_and_the_rest_forecast(tmp_path, rows):
    """A device that stopped sending before the exported history (a real series' file ended) has no
    rows there. The others are forecast as if it had never been, alone and as a range of origins
    (the real-data run failed 4 of 20 days with 'Found missing inputs in X_df')."""
    from iot_lake.forecast.batch_forecast import forecast_origins

    history = _model_and_history(tmp_path, rows)
    full, _ = forecast_origins(tmp_path / "model", history, RANGE)
    rows[rows["device_id"] != "dev-0002"].to_parquet(history / "rows.parquet", index=False)

    for origins in (RANGE[:1], RANGE):
        lost, reports = forecast_origins(tmp_path / "model", history, origins)
        assert set(lost["device_id"]) == {"dev-0001", "dev-0003", "dev-0004"}
        assert [r["series"] for r in reports] == [12] * len(origins)
        expected = full[(full["device_id"] != "dev-0002") & full["origin"].isin([pd.Timestamp(o) for o in origins])]
        pd.testing.assert_frame_equal(lost, expected.reset_index(drop=True), check_exact=False, rtol=1e-9)


def test_the_batch_forecast_exports_what_the_champion_looks_back():
    """A weekly seasonal naive champion needs a week before the first origin (the real-data run's
    forecast ranges failed with 'needs at least 7 days of history, got 3.0' on three days)."""
    from assets.ml.forecast import HISTORY_DAYS, history_days

    day = date(2026, 10, 16)
    assert history_days("seasonal_naive_weekly", day, day, day) == 8
    assert history_days("lightgbm", day, day, day) == history_days("seasonal_naive", day, day, day) == HISTORY_DAYS
    # a range of origins over two days, a champion trained five days before the last
    assert history_days("seasonal_naive_weekly", day, day + timedelta(days=1), day - timedelta(days=4)) == 13


class _Payload:
    """What a tampered archive could hold: unpickling it runs code (here: it leaves a marker file)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _tamper(archive: Path, marker: Path) -> None:
    import io
    import pickle

    with tarfile.open(archive) as tar:
        meta = tar.extractfile("model.json").read()
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in (("model.pkl", pickle.dumps(_Payload(str(marker)))), ("model.json", meta)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_a_model_archive_changed_after_registration_is_never_unpickled(tmp_path, rows):
    """The control plane records each archive's sha256 as it registers the version; the training job
    (champion channel) and the batch forecast check it before anything is unpickled."""
    import hashlib

    from iot_lake.forecast import batch_forecast as batch
    from iot_lake.forecast.model import ModelIntegrityError

    lake = Lake(str(tmp_path))
    _write_training_data(lake, rows, DAY)
    assert _train(tmp_path).success
    champion = registry.champion(lake)
    archive = Path(lake.path(champion["model_key"]))
    assert champion["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert registry.version(lake, champion["version"])["sha256"] == champion["sha256"]

    marker = tmp_path / "payload-ran"
    _tamper(archive, marker)
    again = materialize(
        [forecast_model],
        partition_key=DAY.isoformat(),
        resources={"lake": LakeResource(root=str(tmp_path)), "sagemaker": SageMakerRunner()},
        raise_on_error=False,
    )
    assert not again.success and not marker.exists()
    assert registry.champion(lake)["version"] == champion["version"]  # nothing registered over it

    model_dir = tmp_path / "channel"
    model_dir.mkdir()
    (model_dir / "model.tar.gz").write_bytes(archive.read_bytes())
    with pytest.raises(ModelIntegrityError, match="is not the registered"):
        batch.forecast_origins(
            model_dir, tmp_path / "no-history", [datetime(2026, 11, 15, tzinfo=UTC)], champion["sha256"]
        )
    assert not marker.exists()
