"""Curated weather and the forecasting feature table on Sail."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from deltalake import DeltaTable

from iot_lake.curated.aggregates import AGGREGATE_TABLES, refresh_aggregates
from iot_lake.curated.features_job import FEATURES, build_features_day
from iot_lake.curated.telemetry_job import CURATED_TELEMETRY, curate_hour
from iot_lake.curated.weather_job import CURATED_WEATHER, QUARANTINE_WEATHER, curate_weather_day
from iot_lake.lake import weather_day_prefix
from iot_lake.simulate.historian import seed_historian
from iot_lake.sources.historian import create_engine, land_registry
from iot_lake.sources.telemetry import land_inventory
from tests.conftest import START, simulate

DAY = START.date()


def _register(root, lake, sim) -> None:
    """The simulated fleet's historian, and its registry snapshot of DAY landed."""
    url = f"sqlite:///{root}/historian.sqlite"
    seed_historian(url, sim.fleet, sim.cfg, DAY)
    engine = create_engine(url)
    land_registry(lake, engine, DAY)
    engine.dispose()


@pytest.fixture(scope="module")
def day_lake(tmp_path_factory):
    """One simulated day (4 devices) with its registry, weather files and inventories."""
    root = tmp_path_factory.mktemp("weather_day")
    lake, sim = simulate(root, hours=24, devices=4, bad_weather_rate=0.0, late_rate=0.01)
    _register(root, lake, sim)
    for h in range(24):
        land_inventory(lake, START + timedelta(hours=h))
    return lake, sim


def _csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def _table(lake, key):
    return DeltaTable(lake.path(key)).to_pyarrow_table()


def test_weather_is_validated_deduplicated_and_accounted(day_lake, spark):
    lake, sim = day_lake
    site = sim.fleet.sites[0].site_id
    prefix = weather_day_prefix(DAY)
    base = {"temperature_c": 4.5, "humidity_pct": 80, "wind_speed_ms": 3, "precipitation_mm": 0}
    lake.write_bytes(
        f"{prefix}/zz_correction_{site}.csv",
        _csv(
            [
                {"site_id": site, "observed_at": f"{DAY}T05:00:00Z", **base},  # corrects a row of the site's own file
                {"site_id": "SITE-NOWHERE", "observed_at": f"{DAY}T05:00:00Z", **base},
                {"site_id": site, "observed_at": f"{DAY - timedelta(days=1)}T23:00:00Z", **base},
                {"site_id": site, "observed_at": f"{DAY}T06:00:00Z", **{**base, "humidity_pct": 180}},
            ]
        ),
    )
    lake.write_bytes(f"{prefix}/zz_garbled.json", b"\x00<html>502</html>")
    try:
        report = curate_weather_day(spark, lake, DAY)
        again = curate_weather_day(spark, lake, DAY)
    finally:
        lake.delete(f"{prefix}/zz_correction_{site}.csv")
        lake.delete(f"{prefix}/zz_garbled.json")
    assert report == again and report.accounted
    sites = len(sim.fleet.sites)
    assert report.curated == sites * 24 and report.duplicates == 1 and report.unusable_files == 1
    assert report.quarantine_reasons == {"unknown_site": 1, "wrong_day": 1, "out_of_range": 1, "unusable_file": 1}

    weather = _table(lake, CURATED_WEATHER).to_pylist()
    assert len(weather) == sites * 24  # the re-run replaced the day, it did not append
    corrected = [w for w in weather if w["site_id"] == site and w["observed_at"].hour == 5]
    assert (
        len(corrected) == 1 and corrected[0]["temperature_c"] == 4.5 and "zz_correction" in corrected[0]["source_file"]
    )
    quarantine = _table(lake, QUARANTINE_WEATHER).to_pylist()
    assert sorted(q["reason"] for q in quarantine) == ["out_of_range", "unknown_site", "unusable_file", "wrong_day"]
    assert next(q for q in quarantine if q["reason"] == "out_of_range")["detail"] == "humidity_pct"
    assert all(q["raw_row"] for q in quarantine if q["reason"] != "unusable_file")


def test_features_join_aggregates_registry_and_weather(day_lake, spark):
    lake, sim = day_lake
    for h in range(24):
        hour = START + timedelta(hours=h)
        report = curate_hour(spark, lake, hour)
        refresh_aggregates(spark, lake, hour, report.event_dates, CURATED_TELEMETRY)
    curate_weather_day(spark, lake, DAY)
    first = build_features_day(spark, lake, DAY)
    again = build_features_day(spark, lake, DAY)
    assert first == again

    buckets = [b for b in _table(lake, AGGREGATE_TABLES["5min"]).to_pylist() if b["event_date"] == DAY]
    features = _table(lake, FEATURES).to_pylist()
    assert first.rows == len(features) == len(buckets) > 0  # one row per bucket, re-run replaced the day
    assert first.devices == len(sim.fleet.devices)
    assert first.weather_coverage == 1.0  # no defective files in this fixture

    sites = {s.site_id: s for s in sim.fleet.sites}
    devices = {d.device_id: d for d in sim.fleet.devices}
    weather = {(w["site_id"], w["observed_at"]): w for w in _table(lake, CURATED_WEATHER).to_pylist()}
    for row in features[:: max(1, len(features) // 50)]:
        site = sites[row["site_id"]]
        local = row["bucket_start"].astimezone(ZoneInfo(site.timezone))
        assert (row["local_hour"], row["hour_of_day"]) == (local.hour, row["bucket_start"].hour)
        assert row["is_weekend_local"] == (local.weekday() >= 5)
        hour = row["bucket_start"].replace(minute=0)
        assert row["temperature_c"] == weather[(row["site_id"], hour)]["temperature_c"]
        assert row["model"] == devices[row["device_id"]].model
        assert row["device_age_days"] == (DAY - devices[row["device_id"]].installed_on).days


def test_a_range_of_days_is_one_run_of_landing_and_curated_weather_and_features(tmp_path, spark):
    """The weather and feature assets backfill a range of days as one run (one Spark session per
    job): every day is curated, the row accounting holds over the range, and each day's partition is
    materialized. The second day has no weather file at all: it is curated empty, not an error."""
    from dagster import AssetKey, DagsterInstance, materialize

    from assets.curated.daily import curated_features, curated_weather
    from assets.landing.weather import landing_weather
    from jobs.main import RANGE_END, RANGE_START
    from resources.lake import LakeResource
    from resources.spark import SparkRunner

    lake, sim = simulate(tmp_path, hours=48, devices=2, bad_weather_rate=0.0, late_rate=0.0)
    _register(tmp_path, lake, sim)
    for h in (0, 1, 24, 25):  # two hours of each day are enough for features on both days
        hour = START + timedelta(hours=h)
        land_inventory(lake, hour)
        refresh_aggregates(spark, lake, hour, curate_hour(spark, lake, hour).event_dates, CURATED_TELEMETRY)
    second = DAY + timedelta(days=1)
    lake.delete(weather_day_prefix(second), recursive=True)
    days = [DAY.isoformat(), second.isoformat()]
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [landing_weather, curated_weather, curated_features],
            instance=instance,
            tags={RANGE_START: days[0], RANGE_END: days[1]},
            resources={"lake": LakeResource(root=lake.url), "spark": SparkRunner(mode="local")},
        )
        assert result.success
        assert len(instance.get_runs()) == 1
        for key in (["landing", "weather"], ["curated", "weather"], ["curated", "features"]):
            assert instance.get_materialized_partitions(AssetKey(key)) == set(days), key
    accounting = next(e for e in result.get_asset_check_evaluations() if e.check_name == "row_accounting")
    assert accounting.passed
    weather = _table(lake, CURATED_WEATHER).to_pandas()
    assert len(weather) == len(sim.fleet.sites) * 24 and weather["observed_date"].nunique() == 1
    features = _table(lake, FEATURES).to_pandas()
    assert sorted(features["event_date"].astype(str).unique()) == days
