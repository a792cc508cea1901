"""Forecasting on simulated fleets with the real libraries (statsforecast, mlforecast, LightGBM) and
the SageMaker contract run as local Pipes subprocesses."""

import json
import tarfile
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest
from dagster import materialize

from assets.ml.forecast import forecast_model
from iot_lake.forecast import registry
from iot_lake.forecast.batch_forecast import forecast
from iot_lake.forecast.model import Hyperparameters, backtest, prepare
from iot_lake.lake import Lake
from iot_lake.simulate.training_rows import training_rows
from resources.lake import LakeResource
from resources.sagemaker import SageMakerRunner

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


def test_lightgbm_beats_seasonal_naive_on_a_simulated_weekend(rows):
    """The hold-out is a Saturday: yesterday (a Friday shift pattern) is a poor guess for it, while the
    model has the site's local weekday and hour."""
    series = prepare(rows, "5min")
    result = backtest(series, Hyperparameters())
    table = result.table.set_index("model")
    assert result.holdout_start == pd.Timestamp("2026-11-14")
    assert table.loc["lightgbm", "mase"] < 1 < table.loc["seasonal_naive", "mase"]
    assert table.loc["lightgbm", "points"] == 16 * 288  # every series, every step of the hold-out day
    assert 0.8 <= table.loc["lightgbm", "coverage_95"] <= 1
    assert table.loc["lightgbm", "coverage_80"] <= table.loc["lightgbm", "coverage_95"]


def test_too_little_history_skips_lightgbm_and_says_why(rows):
    short = rows[rows["event_date"] >= date(2026, 11, 10)]
    result = backtest(prepare(short, "5min"), Hyperparameters())
    assert list(result.table["model"]) == ["seasonal_naive"]
    assert "needs at least" in result.skipped["lightgbm"]


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


def test_batch_forecast_covers_the_horizon_from_the_origin_with_nested_intervals(tmp_path, rows):
    from iot_lake.forecast.model import make, save

    hp = Hyperparameters()
    train = rows[rows["event_date"] < date(2026, 11, 14)]
    save(make("lightgbm", hp).fit(prepare(train, hp.freq)), tmp_path / "model", {"version": "v-test"})
    history = tmp_path / "history"
    history.mkdir()
    rows.to_parquet(history / "rows.parquet", index=False)

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
    from iot_lake.forecast.model import make, save

    hp = Hyperparameters()
    train = rows[rows["event_date"] < date(2026, 11, 14)]
    save(make("lightgbm", hp).fit(prepare(train, hp.freq)), tmp_path / "model", {"version": "v-test"})
    history = tmp_path / "history"
    history.mkdir()
    rows.to_parquet(history / "rows.parquet", index=False)
    origins = [datetime(2026, 11, 14, h, tzinfo=UTC) for h in (6, 7, 8)]

    together, reports = forecast_origins(tmp_path / "model", history, origins)
    assert [r["origin"] for r in reports] == [o.isoformat() for o in origins]
    for origin in origins:
        alone, _ = forecast(tmp_path / "model", history, origin)
        mine = together[together["origin"] == pd.Timestamp(origin)].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, alone)
