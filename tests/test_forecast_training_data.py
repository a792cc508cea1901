"""The forecasting training data snapshot on Sail, from curated tables built by the real jobs."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from iot_lake.cases.feedback import CASES_FEEDBACK, CONFIRMED, FALSE_POSITIVE, FEEDBACK_SCHEMA
from iot_lake.curated.aggregates import AGGREGATE_TABLES, refresh_aggregates
from iot_lake.curated.features_job import FEATURES, build_features_day
from iot_lake.curated.telemetry_job import CURATED_TELEMETRY, curate_hour
from iot_lake.curated.weather_job import curate_weather_day
from iot_lake.forecast import training_data_job
from iot_lake.forecast.training_data_job import build_training_data
from iot_lake.lake import REGISTRY_PREFIX, Lake
from iot_lake.simulate.historian import seed_historian
from iot_lake.sources.historian import create_engine, land_registry
from iot_lake.sources.telemetry import land_inventory
from tests.conftest import START, simulate

FIRST, LAST = START.date(), START.date() + timedelta(days=1)
HOURS = 30  # the whole first day (with its weather) and the morning of the second (no weather yet)
OUTPUT = "models/forecast/training_data/test"
EXPECTED_TYPES = [
    ("device_id", pa.string()),
    ("metric", pa.string()),
    ("site_id", pa.string()),
    ("timezone", pa.string()),
    ("model", pa.string()),
    ("bucket_start", pa.timestamp("us", tz="UTC")),
    ("y", pa.float64()),
    ("readings", pa.int64()),
    ("temperature_c", pa.float64()),
    ("event_date", pa.date32()),
]


@pytest.fixture(scope="module")
def lake_with_features(tmp_path_factory, spark):
    """Curated telemetry, aggregates, weather and features of two event dates (3 devices)."""
    root = tmp_path_factory.mktemp("training_data")
    lake, sim = simulate(root, hours=HOURS, devices=3, bad_weather_rate=0.0)
    url = f"sqlite:///{root}/historian.sqlite"
    seed_historian(url, sim.fleet, sim.cfg, FIRST)
    engine = create_engine(url)
    land_registry(lake, engine, FIRST)
    engine.dispose()
    for h in range(HOURS):
        hour = START + timedelta(hours=h)
        land_inventory(lake, hour)
        report = curate_hour(spark, lake, hour)
        refresh_aggregates(spark, lake, hour, report.event_dates, CURATED_TELEMETRY)
    for day in (FIRST, LAST):
        curate_weather_day(spark, lake, day)
        build_features_day(spark, lake, day)
    return lake, sim


@pytest.fixture
def lake(lake_with_features):
    lake, _ = lake_with_features
    yield lake
    lake.delete(OUTPUT, recursive=True)
    lake.delete(CASES_FEEDBACK, recursive=True)


def _delta_rows(lake: Lake, key: str) -> list[dict]:
    return [r for r in DeltaTable(lake.path(key)).to_pyarrow_table().to_pylist() if FIRST <= r["event_date"] <= LAST]


def _files(lake: Lake) -> dict[str, pa.Table]:
    return {path.rsplit("/", 1)[-1]: pq.read_table(path) for path in sorted(lake.fs.find(lake.path(OUTPUT)))}


def _output(lake: Lake) -> list[dict]:
    return pa.concat_tables(_files(lake).values()).to_pylist()


def _types(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    return [(field.name, field.type) for field in schema]


def _key(row: dict) -> tuple:
    return row["device_id"], row["metric"], row["bucket_start"]


def test_rows_columns_and_files(lake, lake_with_features, spark, monkeypatch):
    _, sim = lake_with_features
    features = {_key(r): r for r in _delta_rows(lake, FEATURES)}
    monkeypatch.setattr(training_data_job, "ROWS_PER_FILE", len(features) // 3)  # several files
    report = build_training_data(spark, lake, LAST, 2, "5min", OUTPUT)

    files = _files(lake)
    assert len(files) > 1 and all(name.startswith("part-") for name in files)
    assert all(_types(table.schema) == EXPECTED_TYPES for table in files.values())
    rows = _output(lake)
    assert report.rows == len(rows) == len(features) and {_key(r) for r in rows} == set(features)
    assert report.series == len({(r["device_id"], r["metric"]) for r in rows})
    buckets = [k[2] for k in features]
    assert (report.first_bucket, report.last_bucket) == (min(buckets).isoformat(), max(buckets).isoformat())
    assert (report.excluded_rows, report.confirmed_cases, report.false_positive_cases_kept) == (0, 0, 0)

    for table in files.values():  # each file sorted, each series in one file
        keys = [_key(r) for r in table.to_pylist()]
        assert keys == sorted(keys)
    series_files = [{(r["device_id"], r["metric"]) for r in t.to_pylist()} for t in files.values()]
    assert sum(map(len, series_files)) == len(set().union(*series_files))

    zones = {s.site_id: s.timezone for s in sim.fleet.sites}
    for row in rows:
        feature = features[_key(row)]
        assert row["timezone"] == zones[row["site_id"]]
        assert (row["model"], row["y"], row["readings"], row["temperature_c"], row["event_date"]) == (
            feature["model"],
            feature["mean"],
            feature["readings"],
            feature["temperature_c"],
            feature["event_date"],
        )
    assert {r["temperature_c"] is None for r in rows} == {False, True}  # the second day has no weather yet

    one_day = build_training_data(spark, lake, LAST, 1, "5min", OUTPUT)
    assert one_day.rows == sum(1 for f in features.values() if f["event_date"] == LAST) == len(_output(lake))


def test_confirmed_cases_drop_their_overlapping_rows_and_nothing_else(lake, spark):
    baseline = {_key(r) for r in _delta_rows(lake, FEATURES)}
    (device, metric, _), (other_device, other_metric, _) = min(baseline), max(baseline)
    at = datetime(FIRST.year, FIRST.month, FIRST.day, tzinfo=UTC)
    start, end = at + timedelta(hours=10, minutes=2), at + timedelta(hours=10, minutes=31)
    cases = [
        ("case-1", device, metric, start, end, CONFIRMED),
        ("case-2", other_device, other_metric, start, end, FALSE_POSITIVE),
        ("case-3", device, metric, at - timedelta(days=5), at - timedelta(days=4), CONFIRMED),  # outside the window
    ]
    spark.createDataFrame(cases, FEEDBACK_SCHEMA).write.format("delta").save(lake.uri(CASES_FEEDBACK))

    report = build_training_data(spark, lake, LAST, 2, "5min", OUTPUT)

    # Buckets 10:00 .. 10:30 each share some time with [10:02, 10:31).
    overlapping = {k for k in baseline if k[:2] == (device, metric) and start - timedelta(minutes=5) < k[2] < end}
    assert len(overlapping) == 7
    assert {_key(r) for r in _output(lake)} == baseline - overlapping
    assert (report.excluded_rows, report.confirmed_cases, report.false_positive_cases_kept) == (7, 1, 1)


def test_a_rerun_replaces_the_files(lake, spark):
    lake.write_bytes(f"{OUTPUT}/stale.parquet", b"left by an older snapshot")
    first = build_training_data(spark, lake, LAST, 2, "5min", OUTPUT)
    files = _files(lake)
    again = build_training_data(spark, lake, LAST, 2, "5min", OUTPUT)
    assert first == again
    rerun = _files(lake)
    assert list(rerun) == list(files) and "stale.parquet" not in rerun
    assert all(rerun[name].equals(files[name]) for name in files)
    keys = [_key(r) for r in _output(lake)]
    assert len(keys) == len(set(keys)) == first.rows
    assert not [p for p in lake.fs.ls(lake.path(OUTPUT.rsplit("/", 1)[0])) if "staging" in p]


def test_minute_rows_take_the_attributes_of_their_5_minute_bucket(lake, spark):
    minutes = {_key(r) for r in _delta_rows(lake, AGGREGATE_TABLES["1min"])}
    features = {_key(r): r for r in _delta_rows(lake, FEATURES)}
    report = build_training_data(spark, lake, LAST, 2, "1min", OUTPUT)

    assert all(_types(table.schema) == EXPECTED_TYPES for table in _files(lake).values())
    rows = _output(lake)
    assert report.rows == len(rows) == len(minutes) and {_key(r) for r in rows} == minutes
    assert report.grain == "1min" and len(rows) > len(features)
    for row in rows:
        bucket = row["bucket_start"].replace(minute=row["bucket_start"].minute // 5 * 5)
        feature = features[(row["device_id"], row["metric"], bucket)]
        assert (row["temperature_c"], row["model"]) == (feature["temperature_c"], feature["model"])
    assert any(r["temperature_c"] is not None for r in rows)


def test_missing_sources_fail_with_a_clear_message(lake, tmp_path, spark):
    empty = Lake(str(tmp_path))
    with pytest.raises(RuntimeError, match="materialize landing/device_registry"):
        build_training_data(spark, empty, LAST, 14, "5min", OUTPUT)
    lake.fs.copy(lake.path(REGISTRY_PREFIX), empty.path(REGISTRY_PREFIX), recursive=True)
    with pytest.raises(RuntimeError, match="curated/features does not exist yet: materialize curated/features"):
        build_training_data(spark, empty, LAST, 14, "5min", OUTPUT)
    later = LAST + timedelta(days=30)
    with pytest.raises(RuntimeError, match="no rows .* materialize curated/features"):
        build_training_data(spark, lake, later, 7, "5min", OUTPUT)
    with pytest.raises(RuntimeError, match="no rows .* materialize curated/telemetry_1min"):
        build_training_data(spark, lake, later, 7, "1min", OUTPUT)


def test_job_script_runs_standalone(lake):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "iot_lake.forecast.training_data_job",
            "--lake",
            lake.url,
            "--day",
            LAST.isoformat(),
            "--days",
            "2",
            "--output",
            OUTPUT,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["rows"] == len(_output(lake)) > 0 and report["grain"] == "5min" and report["days"] == 2


def test_fresh_source_builds_the_features_rows_from_the_hourly_aggregates(lake, spark):
    """A forecast made during a day needs its hours before curated/features has the day: the
    aggregates source builds the same rows as the feature table, from curated/telemetry_5min."""
    from_table = build_training_data(spark, lake, LAST, 2, "5min", OUTPUT)
    rows = sorted(_output(lake), key=_key)
    fresh = build_training_data(spark, lake, LAST, 2, "5min", OUTPUT, source="aggregates")
    assert (fresh.rows, fresh.series, fresh.last_bucket) == (from_table.rows, from_table.series, from_table.last_bucket)
    assert sorted(_output(lake), key=_key) == rows


def test_batch_forecast_asset_replaces_its_origin_in_the_forecasts_table(lake, tmp_path):
    """The hourly asset end to end on the local twins: history from the aggregates (Spark on Sail),
    the champion's forecast as a processing job (a Pipes subprocess), the Delta table replaced by origin."""
    import tarfile

    from dagster import materialize

    from assets.ml.forecast import FORECASTS_TABLE, batch_forecast
    from iot_lake.forecast import registry
    from iot_lake.forecast.model import Hyperparameters, make, save
    from resources.lake import LakeResource
    from resources.sagemaker import SageMakerRunner
    from resources.spark import SparkRunner

    model_dir = tmp_path / "model"
    save(make("seasonal_naive", Hyperparameters()), model_dir, {"version": "v-naive"})
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in model_dir.iterdir():
            tar.add(path, arcname=path.name)
    model_key = "models/forecast/jobs/v-naive/output/model.tar.gz"
    lake.write_bytes(model_key, archive.read_bytes())
    registry.record(
        lake,
        registry.ModelVersion(
            "v-naive",
            model_key,
            "seasonal_naive",
            1.0,
            f"{FIRST}T00:00:00Z",
            f"{FIRST}T23:55:00Z",
            FIRST.isoformat(),
            [],
            True,
        ),
    )

    resources = {"lake": LakeResource(root=lake.url), "spark": SparkRunner(), "sagemaker": SageMakerRunner()}
    partition = f"{LAST}-03:00"  # origin 04:00 on the second day
    for _ in range(2):  # a re-run replaces its origin's rows
        result = materialize([batch_forecast], partition_key=partition, resources=resources)
        meta = result.asset_materializations_for_node("ml__batch_forecast")[0].metadata
    table = DeltaTable(lake.path(FORECASTS_TABLE)).to_pandas()
    origin = datetime(LAST.year, LAST.month, LAST.day, 4, tzinfo=UTC)
    assert meta["model_version"].value == "v-naive" and meta["dagster/row_count"].value == len(table)
    assert meta["forecast_vs_actual"].value.startswith("![actuals and forecast](data:image/png;base64,")
    assert len(table) == table.groupby(["device_id", "metric"]).ngroups * 288
    assert table["bucket_start"].min() == origin and set(table["origin"]) == {origin}
    assert not lake.exists(registry.history_key(origin))  # the exported history is cleaned up
