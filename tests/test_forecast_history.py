"""Training on a window whose older days are the historian's 15-minute history (issue 21, "Used").

The historian keeps 15-minute means; curated, they are one 5-minute bucket every 15 minutes in the
aggregate tables (readings = 1), before the first registry snapshot and before the first telemetry.
Until the history curation job writes them, the fixture writes such buckets into
curated/telemetry_5min directly, beside the 5-minute buckets of the telemetry days.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from iot_lake.curated.aggregates import AGGREGATE_TABLES
from iot_lake.curated.features_job import FEATURES, build_features_day
from iot_lake.curated.weather_job import arrow_frame
from iot_lake.fleet import METRICS, build_fleet
from iot_lake.forecast.model import Hyperparameters, make, prepare
from iot_lake.forecast.train import TrainingEnvironment, train
from iot_lake.forecast.training_data_job import build_training_data
from iot_lake.lake import Lake, registry_day_for
from iot_lake.simulate.deliveries import SimConfig
from iot_lake.simulate.historian import seed_historian
from iot_lake.simulate.training_rows import training_rows
from iot_lake.sources.historian import create_engine, land_registry

SCORED = date(2026, 11, 28)  # a Saturday: the weekday a week of telemetry alone never showed the model
TRAINING_DAYS, TELEMETRY_DAYS = 14, 6
FIRST = SCORED - timedelta(days=TRAINING_DAYS)  # 2026-11-14, history from here
CONNECTED = SCORED - timedelta(days=TELEMETRY_DAYS)  # first telemetry day and first registry snapshot
DEVICES, SEED = 3, 42
OUTPUT = "models/forecast/training_data/history"


def historian_buckets(rows: pd.DataFrame, before: pd.Timestamp) -> pd.DataFrame:
    """Rows before ``before`` as the curated history has them: the 15-minute mean of each period as
    one bucket at the period's start, with one reading; the rows from ``before`` on unchanged."""
    old, new = rows[rows["bucket_start"] < before], rows[rows["bucket_start"] >= before]
    keys = ["device_id", "metric", "site_id", "timezone", "model"]
    quarter = old.assign(bucket_start=old["bucket_start"].dt.floor("15min"))
    history = quarter.groupby([*keys, "bucket_start"], as_index=False).agg(
        y=("y", "mean"), temperature_c=("temperature_c", "mean")
    )
    history = history.assign(readings=1, event_date=history["bucket_start"].dt.date)
    return pd.concat([history, new], ignore_index=True).sort_values([*keys[:2], "bucket_start"], ignore_index=True)


def _aggregates(rows: pd.DataFrame) -> pa.Table:
    """Training-shaped rows as curated/telemetry_5min rows (canonical units, one reading: no stddev)."""
    frame = pd.DataFrame(
        {
            "device_id": rows["device_id"],
            "site_id": rows["site_id"],
            "metric": rows["metric"],
            "unit": rows["metric"].map(lambda m: METRICS[m].unit),
            "bucket_start": rows["bucket_start"],
            "readings": rows["readings"].astype("int64"),
            "mean": rows["y"],
            "min": rows["y"],
            "max": rows["y"],
            "stddev": rows["y"].where(rows["readings"] > 1) * 0.0,
            "last": rows["y"],
            "last_ts": rows["bucket_start"],
            "event_date": rows["event_date"],
        }
    )
    return pa.Table.from_pandas(frame, preserve_index=False)


@pytest.fixture(scope="module")
def history_lake(tmp_path_factory, spark):
    """Two weeks of a 3-device fleet: 8 days of 15-minute history, then 6 days of 5-minute telemetry;
    the registry landed on the first telemetry day only (the day the historian was connected)."""
    root = tmp_path_factory.mktemp("history")
    lake = Lake(str(root))
    url = f"sqlite:///{root}/historian.sqlite"
    seed_historian(url, build_fleet(DEVICES, seed=SEED), SimConfig(devices=DEVICES, seed=SEED, history_days=0), FIRST)
    engine = create_engine(url)
    land_registry(lake, engine, CONNECTED)
    engine.dispose()
    rows = historian_buckets(
        training_rows(devices=DEVICES, days=TRAINING_DAYS, start=FIRST, seed=SEED), pd.Timestamp(CONNECTED, tz="UTC")
    )
    frame = arrow_frame(spark, _aggregates(rows))
    frame.write.format("delta").partitionBy("event_date").save(lake.uri(AGGREGATE_TABLES["5min"]))
    for n in range(TRAINING_DAYS):
        build_features_day(spark, lake, FIRST + timedelta(days=n))
    return lake, rows


def test_days_before_the_first_registry_snapshot_take_the_first_snapshot(history_lake):
    lake, _ = history_lake
    assert registry_day_for(lake, FIRST) == CONNECTED == registry_day_for(lake, CONNECTED + timedelta(days=3))
    features = DeltaTable(lake.path(FEATURES)).to_pandas(columns=["event_date", "model", "readings"])
    by_day = features.groupby("event_date").agg(rows=("model", "size"), described=("model", "count"))
    # Every day has its rows, described by the registry: 96 buckets a day before, 288 from the snapshot on.
    assert list(by_day.index) == [FIRST + timedelta(days=n) for n in range(TRAINING_DAYS)]
    assert (by_day["rows"] == by_day["described"]).all()
    series = DEVICES * len(METRICS)
    assert by_day.loc[FIRST, "rows"] == 96 * series and by_day.loc[CONNECTED, "rows"] == 288 * series


def test_a_batch_forecast_history_built_from_the_aggregates_reaches_into_the_historian_days(history_lake, spark):
    """The batch forecast's history (``--source aggregates``) of a weekly naive: 8 days, two of them
    history. Skipping days before the registry left the weekly naive with less than a week."""
    lake, _ = history_lake
    last = SCORED - timedelta(days=1)
    report = build_training_data(spark, lake, last, 8, "5min", f"{OUTPUT}-fresh", source="aggregates")
    assert report.first_bucket == f"{last - timedelta(days=7)}T00:00:00+00:00"
    lake.delete(f"{OUTPUT}-fresh", recursive=True)


def test_training_on_15_minute_history_deploys_a_model_that_saw_the_scored_weekday(history_lake, spark, tmp_path):
    lake, _ = history_lake
    last = SCORED - timedelta(days=1)
    report = build_training_data(spark, lake, last, TRAINING_DAYS, "5min", OUTPUT)
    assert report.first_bucket == f"{FIRST}T00:00:00+00:00"
    env = TrainingEnvironment({"train": Path(lake.path(OUTPUT))}, tmp_path / "m", tmp_path / "o", {})
    metrics = train(env)
    assert metrics["data_range"]["first"] == f"{FIRST}T00:00:00Z"
    # Every candidate ran at every origin and was calibrated on every calibration day: nothing forced
    # the daily naive, the only one that never looks further back than the day before (a Friday).
    assert metrics["skipped"] == {}
    table = {row["model"]: row for row in metrics["backtest"]}
    assert set(table) == {"seasonal_naive", "seasonal_naive_weekly", "lightgbm"}
    assert all(row["calibration_days_min"] == 3 for row in table.values())
    assert metrics["method"] in ("seasonal_naive_weekly", "lightgbm"), metrics["method_reason"]
    saved = json.loads((tmp_path / "m" / "model.json").read_text())
    assert saved["data_range"]["first"] == f"{FIRST}T00:00:00Z"
    # The backtest scored the dense telemetry days only: its origins are the last three midnights.
    assert metrics["origins"] == [f"{SCORED - timedelta(days=k)}T00:00:00Z" for k in (3, 2, 1)]


def test_lightgbm_learns_from_the_readings_not_from_the_lines_drawn_between_them():
    """Lags read the interpolated history, but the rows fitted are the readings: two of three buckets
    of a 15-minute day are filled in, and learning them would learn the interpolation."""
    rows = historian_buckets(
        training_rows(devices=2, days=10, start=FIRST, seed=SEED), pd.Timestamp(FIRST + timedelta(days=6), tz="UTC")
    )
    series = prepare(rows, "5min", interpolate=False).interpolated()
    assert series.observed.sum() == len(rows) < len(series.values)
    model = make("lightgbm", Hyperparameters(n_estimators=5)).fit(series)
    assert model.lags == [288, 576, 2016]
    # The root of a tree counts the rows it was grown on: a bagged 80% of those learnt from.
    tree = model.forecaster.models_["lightgbm"].booster_.dump_model()["tree_info"][0]["tree_structure"]
    learnt = tree["internal_count"] / 0.8
    assert abs(learnt - len(rows)) < 0.02 * len(rows)


def test_the_main_job_seeds_and_builds_the_two_weeks_its_first_training_reads(tmp_path):
    from collections import Counter
    from datetime import UTC, datetime

    from assets.ml.forecast import TRAINING_DAYS as WINDOW
    from jobs.main import historian_days, partitions_to_run, warm_start

    start = datetime(2026, 12, 5, tzinfo=UTC)  # a Saturday
    for telemetry_days, warm_days in ((6, 0), (6, 1), (3, 2), (10, 1), (20, 0)):
        first = start - timedelta(days=telemetry_days)
        forecast_from = warm_start(first, start, warm_days)
        assert forecast_from == start - timedelta(days=warm_days)
        seeded = first - timedelta(days=historian_days(telemetry_days, warm_days))
        # the first training (the night before the first forecast day) reads the two weeks before it
        window = [(forecast_from - timedelta(days=n)).date() for n in range(1, WINDOW + 1)]
        assert seeded.date() <= window[-1]  # the history reaches the window's first day
        assert set(Counter(d.weekday() for d in window).values()) == {2}  # every weekday twice
        plan = partitions_to_run(Lake(str(tmp_path)), first, start, start + timedelta(days=1), None, forecast_from)
        jobs = dict(plan)
        features = jobs["features_daily_job"]
        assert features[0] == min(window[-1], first.date()).isoformat() and features[-1] == start.date().isoformat()
        assert jobs["historian_extract_job"][0] == first.date().isoformat()  # the extract starts with telemetry
        # each forecast day: the nightly training on the days before it, then its hours' forecasts
        forecast_days = [(forecast_from + timedelta(days=n)).date() for n in range(warm_days + 1)]
        trainings = [keys for job, keys in plan if job == "forecast_training_job"]
        assert trainings == [[(d - timedelta(days=1)).isoformat()] for d in forecast_days]
        refreshes = [keys for job, keys in plan if job == "forecast_refresh_job"]
        assert [(r[0], len(r)) for r in refreshes] == [
            ((forecast_from + timedelta(days=n, hours=-1)).strftime("%Y-%m-%d-%H:%M"), 24) for n in range(warm_days + 1)
        ]


def test_the_forecasts_begin_after_the_first_day_of_telemetry_whatever_warm_days_asks(tmp_path):
    """A training needs a curated day before the day it forecasts: with one day of history (the
    real-data benchmark) the scored day stays the first day of forecasts."""
    from datetime import UTC, datetime

    from jobs.main import partitions_to_run, warm_start

    start = datetime(2026, 12, 5, tzinfo=UTC)
    assert warm_start(start - timedelta(days=1), start, 1) == start
    assert warm_start(start - timedelta(days=3), start, 5) == start - timedelta(days=2)
    assert warm_start(start - timedelta(days=6), start, 0) == start
    with pytest.raises(ValueError, match="forecasts must begin within"):
        partitions_to_run(Lake(str(tmp_path)), start - timedelta(days=1), start, start, None, start - timedelta(days=2))
