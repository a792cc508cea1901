"""The warehouse end to end on the local target: a small simulated lake (curated on Sail, forecasts,
deviations and cases from the real ops/deviations asset), `dbt build` through the Dagster assets
into DuckDB, and the warehouse's counts against the curated layer's, read with delta-rs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from dagster import AssetKey, DagsterInstance, materialize
from deltalake import DeltaTable, write_deltalake

from assets.landing.telemetry import landing_telemetry
from assets.ops.check_results import check_results
from assets.ops.deviations import FORECASTS_TABLE, deviations
from assets.warehouse.dbt import warehouse_daily, warehouse_hourly, warehouse_models
from iot_lake.check_results import CHECK_RESULTS_KEY
from iot_lake.curated.features_job import build_features_day
from iot_lake.curated.history_job import curate_days
from iot_lake.curated.object_counts import OBJECT_COUNTS
from iot_lake.curated.state import refresh_state
from iot_lake.curated.telemetry_job import CURATED_TELEMETRY, curate_hour
from iot_lake.curated.weather_job import curate_weather_day
from iot_lake.forecast import registry
from iot_lake.lake import (
    HISTORIAN_PREFIX,
    REGISTRY_PREFIX,
    Lake,
    latest_registry_day,
    registry_rows,
    weather_day_prefix,
)
from iot_lake.sources.historian import create_engine, land_readings
from iot_lake.sources.readings import READINGS_SCHEMA
from iot_lake.warehouse.duckdb_views import register_views
from iot_lake.warehouse.tables import TABLES, TABLES_BY_NAME, CatalogError, table_files
from resources.cases import CasesResource
from resources.lake import LakeResource
from resources.warehouse import WarehouseResource, event_time_args
from tests.conftest import START, land_faulty_hours
from tests.test_curated_aggregates import _run_hours
from tests.test_curated_history import land_extract

REPO = Path(__file__).resolve().parents[1]
HOURS = 3
SHIFTED = ("power", 1)  # the metric whose forecast is made wrong in this hour: deviations, a case
HOUR_KEYS = [(START + timedelta(hours=h)).strftime("%Y-%m-%d-%H:%M") for h in range(HOURS)]
DAY = START.date().isoformat()


def _delta(lake: Lake, key: str) -> pd.DataFrame:
    return DeltaTable(lake.path(key)).to_pandas()


def _write_forecasts(lake: Lake) -> pd.DataFrame:
    """One forecast per hour's end, from the actual 5-minute means: tight bands, and one series
    forecast 50% too high during one hour, so its minutes deviate and open a case."""
    actual = _delta(lake, "curated/telemetry_5min")
    actual = actual[actual["bucket_start"] >= pd.Timestamp(START)]
    frames = []
    for h in range(HOURS + 1):
        origin = pd.Timestamp(START + timedelta(hours=h))
        rows = actual[actual["bucket_start"] >= origin]
        if rows.empty:
            continue
        yhat = rows["mean"].to_numpy().copy()
        metric, hour = SHIFTED
        device = sorted(actual["device_id"].unique())[0]
        wrong = (
            (rows["device_id"] == device) & (rows["metric"] == metric) & (rows["bucket_start"].dt.hour == hour)
        ).to_numpy()
        yhat[wrong] *= 1.5
        half = np.maximum(np.abs(yhat) * 0.05, 0.5)
        frames.append(
            pd.DataFrame(
                {
                    "device_id": rows["device_id"].to_numpy(),
                    "metric": rows["metric"].to_numpy(),
                    "bucket_start": rows["bucket_start"].to_numpy(),
                    "yhat": yhat,
                    "lo_80": yhat - half * 0.65,
                    "hi_80": yhat + half * 0.65,
                    "lo_95": yhat - half,
                    "hi_95": yhat + half,
                    "origin": origin,
                    "model_version": "v-test",
                    "method": "seasonal_naive",
                    "origin_date": origin.date(),
                }
            )
        )
    forecasts = pd.concat(frames, ignore_index=True)
    write_deltalake(
        lake.uri(FORECASTS_TABLE), pa.Table.from_pandas(forecasts, preserve_index=False), partition_by=["origin_date"]
    )
    return forecasts


def _write_weather(lake: Lake) -> pd.DataFrame:
    """Curated weather of each registered site every 30 minutes over the fixture's hours, one
    observation missing, as curated/weather holds it."""
    sites = sorted(r["site_id"] for r in registry_rows(lake, latest_registry_day(lake, START.date()), "sites"))
    rng = np.random.default_rng(7)
    times = pd.date_range(pd.Timestamp(START), periods=2 * (HOURS + 1), freq="30min", tz="UTC")
    weather = pd.DataFrame(
        [
            {
                "site_id": site,
                "observed_at": t,
                "temperature_c": round(12.0 + i + rng.normal(0, 2), 2),
                "humidity_pct": round(float(rng.uniform(40, 90)), 1),
                "wind_speed_ms": round(float(rng.uniform(0, 12)), 1),
                "precipitation_mm": round(float(rng.choice([0.0, 0.0, 0.4, 1.2])), 1),
                "source_file": f"landing/thirdparty/weather/{t:%Y/%m/%d}/{site}.csv",
                "observed_date": t.date(),
            }
            for i, site in enumerate(sites)
            for t in times
        ]
    ).iloc[1:]  # the first site's first observation is missing: its first hour has one
    write_deltalake(
        lake.uri("curated/weather"), pa.Table.from_pandas(weather, preserve_index=False), partition_by=["observed_date"]
    )
    return weather


def _backtest(model_mase: float, naive: float, weekly: float | None, cov80: float, cov95: float) -> list[dict]:
    rows = [
        {"model": "lightgbm", "mase": model_mase, "coverage_80": cov80, "coverage_95": cov95},
        {"model": "seasonal_naive", "mase": naive, "coverage_80": 0.7, "coverage_95": 0.88},
    ]
    # the weekly naive runs only with a week of history
    return rows + ([{"model": "seasonal_naive_weekly", "mase": weekly}] if weekly is not None else [])


def _write_model_versions(lake: Lake) -> None:
    """Five trainings through the registry: a first champion, a challenger kept out, a day trained
    twice (the re-run promoted), a young fleet's unscored fallback, and one version recorded twice
    (a retried write)."""
    nights = [
        ("forecast-2026-11-10-a1", "2026-11-10", _backtest(0.91, 1.04, None, 0.78, 0.94), True),
        ("forecast-2026-11-11-b2", "2026-11-11", _backtest(0.95, 1.01, None, 0.74, 0.91), False),
        ("forecast-2026-11-12-c3", "2026-11-12", _backtest(0.93, 0.99, 1.2, 0.81, 0.95), False),
        ("forecast-2026-11-12-d4", "2026-11-12", _backtest(0.84, 0.99, 0.97, 0.8, 0.96), True),
        ("forecast-2026-11-13-e5", "2026-11-13", [], False),
    ]
    for name, day, backtest, promoted in [*nights, nights[1]]:
        method = "lightgbm" if backtest else "seasonal_naive"
        mase = registry.chosen_row(backtest, method).get("mase")
        registry.record(
            lake, registry.ModelVersion(name, f"k/{name}", method, mase, "a", "b", day, backtest, promoted, "why")
        )


@pytest.fixture(scope="module")
def lake(tmp_path_factory, spark) -> Lake:
    root = tmp_path_factory.mktemp("warehouse")
    lake = land_faulty_hours(root / "lake", HOURS)
    _run_hours(spark, lake, range(HOURS))
    _write_forecasts(lake)
    _write_weather(lake)
    _write_model_versions(lake)
    resources = {
        "lake": LakeResource(root=lake.url),
        "cases": CasesResource(url=f"sqlite:///{root}/cases.sqlite", lake_root=lake.url),
    }
    for key in HOUR_KEYS:
        assert materialize([deviations], partition_key=key, resources=resources).success
    return lake


def _resources(lake: Lake) -> dict:
    return {
        "lake": LakeResource(root=lake.url),
        "warehouse": WarehouseResource(duckdb_path=lake.path("warehouse/iot_lake.duckdb")),
    }


def _build_all(lake: Lake, instance: DagsterInstance | None = None):
    resources = _resources(lake)
    results = [
        materialize([warehouse_models], resources=resources, instance=instance),
        materialize(
            [warehouse_hourly],
            resources=resources,
            partition_key=DAY,  # the facts' partitions are days (one dbt microbatch each)
            instance=instance,
        ),
        materialize([warehouse_daily], resources=resources, partition_key=DAY, instance=instance),
    ]
    return results


@pytest.fixture(scope="module")
def built(lake):
    """The three warehouse runs, after the landing hours' inventories (their objects_readable check
    fails on the truncated objects the fixture lands, WARN), in one instance; then warehouse_job's
    assets again, ops/check_results first: it copies those runs' check evaluations, dbt tests
    included, and the warehouse shows them (as the hourly warehouse_job does)."""
    instance = DagsterInstance.ephemeral()
    for key in HOUR_KEYS:
        materialize([landing_telemetry], partition_key=key, resources=_resources(lake), instance=instance)
    t0 = time.perf_counter()
    results = _build_all(lake, instance)
    print(f"warehouse build (3 dbt runs through Dagster): {time.perf_counter() - t0:.1f} s")
    results.append(materialize([check_results, warehouse_models], resources=_resources(lake), instance=instance))
    return results


def _query(lake: Lake, sql: str) -> pd.DataFrame:
    with duckdb.connect(lake.path("warehouse/iot_lake.duckdb"), read_only=True) as con:
        return con.execute(sql).df()


def _checks(result) -> list:
    return [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]


def test_dbt_build_passes_every_test_and_counts_match_the_curated_layer(lake, built):
    assert all(r.success for r in built)
    checks = [c for r in built for c in _checks(r)]
    assert len(checks) > 100 and all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]
    materialized = {e.asset_key.path[-1] for r in built for e in r.get_asset_materialization_events()}
    assert {
        "fct_telemetry_minute",
        "fct_telemetry_hourly",
        "fct_forecast",
        "fct_deviation",
        "fct_case",
        "dim_device",
        "dim_site",
        "mart_device_health",
        "snap_device",
    } <= materialized

    curated = _delta(lake, CURATED_TELEMETRY)
    minutes = _delta(lake, "curated/telemetry_1min")
    assert len(_query(lake, "select * from marts.fct_telemetry_minute")) == len(minutes) > 0
    # The hourly facts hold every curated reading, hour by hour (independently of the dbt test).
    hourly = _query(lake, "select device_id, metric, hour_start, readings from marts.fct_telemetry_hourly")
    expected = (
        curated.assign(hour_start=curated["event_ts"].dt.floor("h").dt.tz_localize(None))
        .groupby(["device_id", "metric", "hour_start"])
        .size()
        .rename("readings")
        .reset_index()
    )
    got = hourly.sort_values(["device_id", "metric", "hour_start"]).reset_index(drop=True)
    expected = expected.sort_values(["device_id", "metric", "hour_start"]).reset_index(drop=True)
    got["hour_start"] = got["hour_start"].astype("datetime64[us]")
    expected["hour_start"] = expected["hour_start"].astype("datetime64[us]")
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert (curated["event_ts"] < pd.Timestamp(START)).any()  # late records of the day before are there too

    for table, key in [
        ("fct_forecast", FORECASTS_TABLE),
        ("fct_deviation", "ops/deviations"),
        ("fct_case", "cases/cases"),
    ]:
        assert len(_query(lake, f"select * from marts.{table}")) == len(_delta(lake, key)) > 0, table
    dims = _query(lake, "select * from marts.dim_device")
    assert dims["is_current"].all() and dims["device_id"].is_unique and len(dims) == 6


def test_the_checks_of_the_runs_before_reach_the_warehouse(lake, built):
    """ops/check_results copied every check evaluation of the runs that ended before it: the landing
    hours' objects_readable (failed, WARN, on the truncated objects the fixture lands) and the dbt
    tests of the three warehouse runs; the mart counts them as the lake holds them."""
    rows = _delta(lake, CHECK_RESULTS_KEY)
    assert rows.groupby(["run_id", "event_id"]).size().max() == 1
    dbt_tests = [c for r in built[:3] for c in _checks(r)]
    copied = rows[rows["asset_key"].str.startswith("warehouse/")]
    assert len(copied) == len(dbt_tests) > 100 and copied["passed"].all()
    assert set(copied["check_name"]) == {c.check_name for c in dbt_tests}
    landing = rows[rows["asset_key"] == "landing/telemetry"].sort_values("partition_key")
    assert list(landing["partition_key"]) == HOUR_KEYS and set(landing["check_name"]) == {"objects_readable"}
    failed = landing[~landing["passed"]]
    assert len(failed) > 0 and set(failed["severity"]) == {"WARN"}
    assert failed["description"].str.contains("unreadable_objects=").all()
    assert len(rows) == len(copied) + len(landing)  # the 4th run's own dbt tests come with the next copy

    mart = _query(lake, "select * from marts.mart_check_results")
    assert mart["evaluations"].sum() == len(rows) and mart["failed"].sum() == len(failed)
    worst = mart[mart["failed"] > 0]
    assert set(worst["asset_key"]) == {"landing/telemetry"} and set(worst["failed_severity"]) == {"WARN"}
    assert set(mart["check_kind"]) == {"dbt test", "asset check"}


def test_device_health_and_case_lifecycle_are_what_the_lake_says(lake, built):
    cases = _query(lake, "select * from marts.fct_case")
    metric, hour = SHIFTED
    device = _delta(lake, "ops/deviations")["device_id"].min()
    wrong = cases[(cases["device_id"] == device) & (cases["metric"] == metric)]
    assert len(wrong) == 1 and wrong["incident_start"].dt.hour.tolist() == [hour]
    assert set(cases["status"]) <= {"open", "resolved"} and (cases["status_changes"] >= 1).all()
    assert (cases["is_active"] == cases["closed_at"].isna()).all()
    health = _query(lake, "select * from marts.mart_device_health where day = DATE '2026-11-20'")
    assert len(health) == 6 and health["device_id"].is_unique
    # Three simulated hours of four metrics: uptime about 3/24, completeness no more than that.
    assert health["uptime"].between(2.5 / 24, 3.01 / 24).all(), health["uptime"].tolist()
    assert (health["data_completeness"] <= health["uptime"] + 1e-9).all()
    anomalous = _delta(lake, "ops/deviations").query("is_anomalous").groupby("device_id").size()
    by_device = health.set_index("device_id")
    assert by_device.loc[anomalous.index, "anomalous_minutes"].tolist() == anomalous.tolist()
    assert by_device["cases_opened"].sum() == len(cases)
    # The wrong forecast hour shows as the worst forecast error, on its device.
    assert by_device["forecast_mape"].idxmax() == device
    assert by_device.loc[device, "forecast_coverage_95"] < by_device["forecast_coverage_95"].drop(device).min()


def test_rerunning_an_hour_gives_the_same_tables(lake, built):
    tables = ["fct_telemetry_minute", "fct_telemetry_hourly", "fct_forecast", "fct_deviation"]
    before = {t: _query(lake, f"select * from marts.{t}") for t in tables}
    result = materialize([warehouse_hourly], resources=_resources(lake), partition_key=DAY)
    assert result.success and all(c.passed for c in _checks(result))
    for t in tables:
        after = _query(lake, f"select * from marts.{t}")
        cols = list(before[t].columns)
        pd.testing.assert_frame_equal(
            after.sort_values(cols[:4]).reset_index(drop=True),
            before[t].sort_values(cols[:4]).reset_index(drop=True),
            obj=t,
        )


def test_a_late_minute_within_the_lookback_is_picked_up_and_one_before_it_is_not(lake, built):
    """A landing hour holds records up to 6 h late, so a day's partition rebuilds from the lake its UTC
    day (one microbatch) and the day before (`lookback` 1), and no further. Two minutes of START's
    day the warehouse lacks (as if their records had landed late): the partition two days later
    leaves them, the next day's partition (its lookback reaches START's day) restores both."""
    minute = AssetKey(["warehouse", "fct_telemetry_minute"])
    lost = (START + timedelta(hours=2, minutes=30), START + timedelta(hours=1, minutes=30))
    path = lake.path("warehouse/iot_lake.duckdb")
    sql = "select count(*) from marts.fct_telemetry_minute where device_id = ? and bucket_start = ?"

    def counts(con, device):
        return [con.execute(sql, [device, ts.replace(tzinfo=None)]).fetchone()[0] for ts in lost]

    with duckdb.connect(path) as con:
        device = con.execute("select min(device_id) from marts.fct_telemetry_minute").fetchone()[0]
        expected = counts(con, device)
        assert all(expected), expected
        for ts in lost:
            con.execute(
                "delete from marts.fct_telemetry_minute where device_id = ? and bucket_start = ?",
                [device, ts.replace(tzinfo=None)],
            )

    def run(days: int) -> None:
        key = (START + timedelta(days=days)).strftime("%Y-%m-%d")
        result = materialize([warehouse_hourly], resources=_resources(lake), partition_key=key, selection=[minute])
        assert result.success and all(c.passed for c in _checks(result))

    run(2)
    with duckdb.connect(path, read_only=True) as con:
        assert counts(con, device) == [0, 0]
    run(1)
    with duckdb.connect(path, read_only=True) as con:
        assert counts(con, device) == expected


def test_the_tests_of_a_fact_read_the_runs_window_only(lake, built):
    """An hour's tests must not cost more with history (issue 19): with --event-time-start/-end a test of a
    microbatch fact reads the window only. A minute scored twice three days before START fails the
    uniqueness test over the whole table and over a window holding it, not over the hour's window."""
    from assets.warehouse.project import dbt_project

    planted = START - timedelta(days=3)
    path = lake.path("warehouse/iot_lake.duckdb")
    with duckdb.connect(path) as con:
        for _ in range(2):
            con.execute(
                "insert into marts.fct_deviation select * replace (cast(? as timestamp) as ts, "
                "cast(? as date) as event_date) from marts.fct_deviation order by ts, device_id, metric limit 1",
                [planted.replace(tzinfo=None), planted.date()],
            )

    def failed(*window: datetime) -> set[str]:
        # `build` of the tests alone: `dbt test` takes no --event-time-start.
        args = ["build", "--select", "fct_deviation", "--resource-type", "test"]
        args += event_time_args(*window) if window else []
        with _resources(lake)["warehouse"].dbt() as (dbt, target_path):
            run = dbt.cli(args, manifest=dbt_project().manifest_path, target_path=target_path, raise_on_error=False)
            results = run.wait().get_artifact("run_results.json")["results"]
        assert results
        return {r["unique_id"].split(".")[2] for r in results if r["status"] != "pass"}

    try:
        hour = START + timedelta(hours=1)
        assert failed(hour - timedelta(days=1), hour + timedelta(hours=1)) == set()
        unique = {"unique_combination_fct_deviation_device_id__metric__ts"}
        assert failed(planted, planted + timedelta(hours=1)) == unique
        assert failed() == unique
    finally:
        with duckdb.connect(path) as con:
            con.execute("delete from marts.fct_deviation where ts = ?", [planted.replace(tzinfo=None)])


def test_each_job_selection_is_one_dbt_multi_asset_and_its_checks():
    """The jobs select by group and dbt tag, without the asset objects: the same assets and checks."""
    from dagster import Definitions, define_asset_job

    from assets.warehouse.dbt import (
        WAREHOUSE_DAILY_SELECTION,
        WAREHOUSE_HOURLY_SELECTION,
        WAREHOUSE_MODELS_SELECTION,
        warehouse_assets,
    )

    pairs = {
        "models": (WAREHOUSE_MODELS_SELECTION, warehouse_models),
        "hourly": (WAREHOUSE_HOURLY_SELECTION, warehouse_hourly),
        "daily": (WAREHOUSE_DAILY_SELECTION, warehouse_daily),
    }
    defs = Definitions(
        assets=warehouse_assets(),
        jobs=[define_asset_job(name, selection=s) for name, (s, _) in pairs.items()],
        resources={"lake": LakeResource(root="unused"), "warehouse": WarehouseResource()},
    )
    graph = defs.resolve_asset_graph()
    for name, (selection, assets_def) in pairs.items():
        assert selection.resolve(graph) == set(assets_def.keys), name
        assert selection.resolve_checks(graph) == set(assets_def.check_keys), name
        job = defs.resolve_job_def(name)
        assert set(job.asset_layer.executable_asset_keys) == set(assets_def.keys), name
        assert job.partitions_def == assets_def.partitions_def, name


def test_importing_the_warehouse_assets_builds_nothing(tmp_path):
    """Importing costs nothing (no dagster-dbt, dbt or manifest); warehouse_assets() builds them once."""
    from assets.warehouse.dbt import warehouse_assets

    probe = (
        "import sys, assets.warehouse, assets.warehouse.dbt as d, assets.warehouse.project as p; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('dagster_dbt', 'dbt')); "
        "print(loaded, p.dbt_project.cache_info().currsize, d.warehouse_assets.cache_info().currsize)"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "0", "0"], out.stdout + out.stderr
    assert warehouse_assets() is warehouse_assets()
    assert [a.node_def.name for a in warehouse_assets()] == ["warehouse_models", "warehouse_hourly", "warehouse_daily"]
    assert warehouse_assets() == [warehouse_models, warehouse_hourly, warehouse_daily]  # the module attributes


def test_reconciliation_fails_when_the_warehouse_misses_readings(lake, built):
    """Drop one device-hour from the minute facts, rebuild the hourly facts only: the check fails."""
    path = lake.path("warehouse/iot_lake.duckdb")
    with duckdb.connect(path) as con:
        device = con.execute("select min(device_id) from marts.fct_telemetry_minute").fetchone()[0]
        con.execute(
            f"delete from marts.fct_telemetry_minute where device_id = '{device}' "
            f"and hour_start = TIMESTAMP '{START:%Y-%m-%d} 02:00:00'"
        )
    result = materialize(
        [warehouse_hourly],
        resources=_resources(lake),
        partition_key=DAY,
        selection=[AssetKey(["warehouse", "fct_telemetry_hourly"])],
        raise_on_error=False,
    )
    failed = {c.check_name for c in _checks(result) if not c.passed}
    assert any(name.startswith("reconciles_with_curated") for name in failed), failed
    # Rebuilding the hour's minutes and hours puts it right.
    result = materialize([warehouse_hourly], resources=_resources(lake), partition_key=DAY)
    assert result.success and all(c.passed for c in _checks(result))


def test_the_historians_periods_reach_the_facts_and_reconcile_with_curated(lake, built, spark, tmp_path):
    """The historian's readings curated into curated/telemetry (iot_lake/curated/history_job.py) are in
    the facts of their hours, a 15-minute bucket each, and the reconciliation counts them: a
    historian hour the facts miss fails it."""
    shutil.copytree(lake.path(""), tmp_path / "lake")  # with the module's built warehouse
    copy = Lake(str(tmp_path / "lake"))
    engine = create_engine(f"sqlite:///{copy.path('historian.sqlite')}")
    land_readings(copy, engine, START.date())  # the week before START
    engine.dispose()
    assert curate_days(spark, copy, [START.date()]).reports[0].curated_new > 0
    day = START - timedelta(days=2)  # a day of history only
    result = materialize([warehouse_hourly], resources=_resources(copy), partition_key=f"{day:%Y-%m-%d}")
    assert result.success and all(c.passed for c in _checks(result))
    hourly = _query(
        copy,
        f"select readings, minutes_reported from marts.fct_telemetry_hourly where event_date = DATE '{day:%Y-%m-%d}'",
    )
    assert len(hourly) == 6 * 4 * 24  # every device, metric and hour of the day
    assert set(hourly["readings"]) == set(hourly["minutes_reported"]) == {4}  # four 15-minute readings

    with duckdb.connect(copy.path("warehouse/iot_lake.duckdb")) as con:
        con.execute(
            "delete from marts.fct_telemetry_minute where device_id = (select min(device_id) from "
            f"marts.fct_telemetry_minute) and bucket_start = TIMESTAMP '{day:%Y-%m-%d} 05:15:00'"
        )
    result = materialize(
        [warehouse_hourly],
        resources=_resources(copy),
        partition_key=f"{day:%Y-%m-%d}",
        selection=[AssetKey(["warehouse", "fct_telemetry_hourly"])],
        raise_on_error=False,
    )
    failed = {c.check_name for c in _checks(result) if not c.passed}
    assert any(name.startswith("reconciles_with_curated") for name in failed), failed


def test_the_window_reaches_dbt_as_checked_timestamps():
    from datetime import UTC, datetime

    from resources.warehouse import event_time_args

    start, end = datetime(2026, 11, 20, 4, tzinfo=UTC), datetime(2026, 11, 20, 11, tzinfo=UTC)
    assert event_time_args(start, end) == [
        "--event-time-start",
        "2026-11-20T04:00:00",
        "--event-time-end",
        "2026-11-20T11:00:00",
    ]
    for bad in [("2026-11-20 04:00", end), (start, start), (end, start), (start, end.replace(minute=30))]:
        with pytest.raises(ValueError, match="dbt window"):
            event_time_args(*bad)


def test_a_lake_table_without_a_declared_column_is_refused_by_name(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    write_deltalake(lake.uri("cases/history"), pa.table({"case_key": ["a"], "note": ["x"]}))
    with pytest.raises(CatalogError, match=r"lacks the column\(s\) at, from_status, to_status, actor"):
        register_views(lake, tmp_path / "w.duckdb", tables=(TABLES_BY_NAME["cases_history"],))


def test_tables_not_written_yet_are_typed_and_empty(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    summary = register_views(lake, tmp_path / "w.duckdb")
    assert all(t["files"] == 0 for t in summary.values())
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        assert con.execute("select count(*) from lake.ops_deviations").fetchone() == (0,)
        types = dict(
            con.execute(
                "select column_name, data_type from information_schema.columns "
                "where table_schema = 'lake' and table_name = 'ops_deviations'"
            ).fetchall()
        )
    assert types["ts"] == "TIMESTAMP" and types["is_anomalous"] == "BOOLEAN" and types["event_date"] == "DATE"


def test_row_accounting_and_quarantine_marts_count_what_the_lake_kept(lake, built):
    quarantined = _delta(lake, "quarantine/telemetry")
    curated = _delta(lake, CURATED_TELEMETRY)
    assert len(quarantined) > 0 and quarantined["reason"].nunique() > 1  # the fixture lands faulty hours
    hour = pd.to_datetime(curated["source_object"].str.slice(18, 31), format="%Y/%m/%d/%H")
    expected = pd.DataFrame(
        {
            "curated_rows": curated.groupby(hour).size(),
            "quarantined_lines": quarantined.groupby(quarantined["landing_hour"].dt.tz_localize(None)).size(),
        }
    ).fillna(0)
    got = _query(lake, "select * from marts.mart_row_accounting order by landing_hour").set_index("landing_hour")
    assert got.index.astype("datetime64[us]").tolist() == expected.index.astype("datetime64[us]").tolist()
    assert got["curated_rows"].tolist() == expected["curated_rows"].astype(int).tolist()
    assert got["quarantined_lines"].tolist() == expected["quarantined_lines"].astype(int).tolist()
    by_reason = _query(lake, "select reason, sum(quarantined_lines) as n from marts.mart_quarantine_hourly group by 1")
    assert dict(zip(by_reason["reason"], by_reason["n"])) == quarantined["reason"].value_counts().to_dict()
    rates = _query(lake, "select sum(quarantine_rate) as r from marts.mart_quarantine_hourly group by landing_hour")
    assert np.allclose(sorted(rates["r"]), sorted(got["quarantine_rate"]))


# mart_row_accounting as it was before the curated telemetry job kept per-object counts: every hourly
# run counted curated telemetry whole. The mart over the counts must give the same rows.
COUNTED_OVER_CURATED = """
with curated as (
    select
        cast(
            substring(source_object, 19, 4) || '-' || substring(source_object, 24, 2) || '-'
            || substring(source_object, 27, 2) || ' ' || substring(source_object, 30, 2) || ':00:00'
            as timestamp
        ) as landing_hour,
        count(*) as curated_rows
    from lake.curated_telemetry
    where source_object like 'landing/telemetry/%'
    group by 1
),
quarantined as (
    select landing_hour, count(*) as quarantined_lines, count(distinct reason) as reasons
    from lake.quarantine_telemetry
    group by 1
),
hours as (select landing_hour from curated union select landing_hour from quarantined)
select
    h.landing_hour,
    coalesce(c.curated_rows, 0) as curated_rows,
    coalesce(q.quarantined_lines, 0) as quarantined_lines,
    coalesce(c.curated_rows, 0) + coalesce(q.quarantined_lines, 0) as lines_kept,
    coalesce(q.reasons, 0) as reasons,
    cast(coalesce(q.quarantined_lines, 0) as double precision)
    / (coalesce(c.curated_rows, 0) + coalesce(q.quarantined_lines, 0)) as quarantine_rate
from hours as h
left join curated as c on h.landing_hour = c.landing_hour
left join quarantined as q on h.landing_hour = q.landing_hour
order by 1
"""


def test_row_accounting_from_the_object_counts_is_what_counting_curated_gave(lake, built, spark):
    """Same rows, same types as the mart's former SQL over the whole of curated telemetry, on a lake
    with duplicates, late records, truncated objects and quarantined lines; re-curating an hour (a
    re-run inserts nothing) leaves the counts, and the mart rebuilt over them, as they were."""
    before = _query(lake, COUNTED_OVER_CURATED)
    got = _query(lake, "select * from marts.mart_row_accounting order by landing_hour")
    assert len(got) == HOURS and (got["curated_rows"] > 0).all() and (got["quarantined_lines"] > 0).all()
    pd.testing.assert_frame_equal(got, before)
    types = _query(lake, "select column_name, data_type from duckdb_columns() where table_name = 'mart_row_accounting'")
    assert dict(zip(types["column_name"], types["data_type"]))["curated_rows"] == "BIGINT"  # as count(*) was

    counts = _delta(lake, OBJECT_COUNTS).drop(columns="counted_at").sort_values("source_object", ignore_index=True)
    assert curate_hour(spark, lake, START + timedelta(hours=1)).curated_new == 0
    again = _delta(lake, OBJECT_COUNTS).drop(columns="counted_at").sort_values("source_object", ignore_index=True)
    pd.testing.assert_frame_equal(again, counts)
    assert materialize([warehouse_hourly], resources=_resources(lake), partition_key=DAY).success
    pd.testing.assert_frame_equal(_query(lake, "select * from marts.mart_row_accounting order by landing_hour"), before)

    # A lake curated before the job kept counts (none yet): the mart counts curated telemetry meanwhile.
    counts_dir = Path(lake.path(OBJECT_COUNTS))
    aside = counts_dir.with_name("_object_counts_aside")
    counts_dir.rename(aside)
    try:
        assert materialize([warehouse_hourly], resources=_resources(lake), partition_key=DAY).success
        rebuilt = _query(lake, "select * from marts.mart_row_accounting order by landing_hour")
    finally:
        aside.rename(counts_dir)
    pd.testing.assert_frame_equal(rebuilt, before)


def test_weather_is_per_site_and_hour_and_reaches_each_device(lake, built):
    weather = _delta(lake, "curated/weather")
    hourly = weather.groupby(["site_id", weather["observed_at"].dt.floor("h")])["temperature_c"].agg(["size", "mean"])
    got = _query(lake, "select * from marts.fct_weather order by site_id, hour_start")
    assert len(got) == len(hourly) > 0
    assert got["observations"].tolist() == hourly["size"].tolist()  # the missing observation: one hour of 1
    assert np.allclose(got["temperature_c"], hourly["mean"])
    devices = _query(lake, "select count(*) as n from marts.dim_device where is_current")["n"][0]
    per_device = _query(lake, "select device_id, count(*) as n from marts.mart_device_weather group by 1")
    assert len(per_device) == devices and set(per_device["n"]) == {HOURS + 1}  # each its site's hours


def _tables_on_disk(lake: Lake) -> set[str]:
    """The lake's tables as its folders show them, not as the warehouse's list says: every Delta log
    (named area_table), each registry snapshot's files (registry_<table>) and each other historian
    extract folder holding Parquet (historical_<folder>)."""
    root = Path(lake.path(""))
    names = {log.parent.relative_to(root).as_posix().replace("/", "_") for log in root.rglob("_delta_log")}
    historian = root / HISTORIAN_PREFIX
    names |= {f"registry_{p.stem}" for p in (root / REGISTRY_PREFIX).rglob("*.parquet")}
    names |= {
        f"historical_{folder.name}"
        for folder in historian.iterdir()
        if folder != root / REGISTRY_PREFIX and any(folder.rglob("*.parquet"))
    }
    return names


def test_every_table_in_the_lake_is_a_warehouse_view(lake, spark, tmp_path):
    """What the catalog registers is what the lake holds: a table written to the lake but missing
    from iot_lake/warehouse/tables.py fails here. The fixture's lake (curated on Sail, deviations
    and cases from the real asset) gets the hot state and the daily layers from their real writers too."""
    shutil.copytree(lake.path(""), tmp_path / "lake")  # the module's lake keeps its hand-made weather
    copy = Lake(str(tmp_path / "lake"))
    day = START.date()
    event_dates = sorted({d.isoformat() for d in _delta(copy, CURATED_TELEMETRY)["event_date"]})
    hours = [START + timedelta(hours=h) for h in range(HOURS)]
    assert refresh_state(spark, copy, hours, event_dates, CURATED_TELEMETRY) > 0
    _land_weather(copy, _delta(copy, "curated/weather"))
    assert curate_weather_day(spark, copy, day).quarantined == 1
    build_features_day(spark, copy, day)
    engine = create_engine(f"sqlite:///{copy.path('historian.sqlite')}")
    assert land_readings(copy, engine, day).rows > 0
    engine.dispose()
    assert curate_days(spark, copy, [day]).reports[0].curated_new > 0
    unknown = {"reading_id": 1, "device_id": "dev-nowhere", "metric": "power", "value": 1.0, "unit": "kW"}
    at = {"recorded_at": START, "loaded_at": START}
    land_extract(copy, day + timedelta(days=1), pa.Table.from_pylist([unknown | at], schema=READINGS_SCHEMA))
    assert curate_days(spark, copy, [day + timedelta(days=1)]).reports[0].quarantined == 1

    on_disk = _tables_on_disk(copy)
    summary = register_views(copy, tmp_path / "w.duckdb")
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        views = {
            r[0] for r in con.execute("select view_name from duckdb_views() where schema_name = 'lake'").fetchall()
        }
        assert views == on_disk == set(summary)
        readings = con.execute("select count(*), count(distinct extract_date) from lake.historical_readings").fetchone()
        features = con.execute("select count(*) from lake.curated_features").fetchone()[0]
    assert readings[0] > 0 and readings[1] == 2 and features > 0  # the extract, and one of a row quarantined
    # No resolved case in three hours: the feedback table is written, empty.
    assert {n for n, t in summary.items() if t["files"] == 0} == {"cases_feedback"}
    # Glue declares these types to Spectrum and Athena, which read the files as they are: no casts.
    assert _type_mismatches(copy) == []


# Warehouse type -> the Arrow types a lake file may hold for it (timestamps: any unit, zoned or not).
_ARROW = {
    "string": (pa.string(), pa.large_string()),
    "double": (pa.float64(),),
    "bigint": (pa.int64(),),
    "int": (pa.int32(),),
    "boolean": (pa.bool_(),),
    "date": (pa.date32(),),
}


def _type_mismatches(lake: Lake) -> list[str]:
    out = []
    for table in TABLES:
        files = table_files(lake, table)
        for column in table.data_columns:
            got = files.file_columns.get(column.name)
            if got is None or (
                pa.types.is_timestamp(got) if column.type == "timestamp" else got in _ARROW[column.type]
            ):
                continue
            out.append(f"{table.name}.{column.name}: declared {column.type}, files hold {got}")
    return out


def _land_weather(lake: Lake, observed: pd.DataFrame) -> None:
    """The observations as the provider delivers them, a CSV per site and day, one humidity out of range."""
    day = START.date()
    for site, rows in observed.groupby("site_id"):
        rows = rows.drop(columns=["source_file", "observed_date"]).assign(
            observed_at=rows["observed_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        )
        if site == observed["site_id"].min():
            rows.iloc[0, rows.columns.get_loc("humidity_pct")] = 140.0
        lake.write_bytes(f"{weather_day_prefix(day)}/{site}.csv", rows.to_csv(index=False).encode())


def test_model_history_is_each_training_day_as_the_registry_recorded_it(lake, built):
    names = [f.key.rsplit("/", 1)[1].removesuffix(".json") for f in lake.list("models/forecast/versions")]
    entries = {name: registry.version(lake, name) for name in names}  # the JSON entries, as the registry keeps them
    assert len(entries) == 5
    assert len(_delta(lake, registry.METRICS_KEY)) == 5  # the retried write added no row
    got = _query(lake, "select * from marts.mart_model_history order by trained_for").set_index("version")
    # the re-trained day shows its promoted run, the others their only one
    assert list(got.index) == [
        "forecast-2026-11-10-a1",
        "forecast-2026-11-11-b2",
        "forecast-2026-11-12-d4",
        "forecast-2026-11-13-e5",
    ]
    assert got.loc["forecast-2026-11-12-d4", "versions_trained"] == 2
    for name, row in got.iterrows():
        entry = entries[name]
        chosen = registry.chosen_row(entry["backtest"], entry["method"])
        naive = [r["mase"] for r in entry["backtest"] if r["model"].startswith("seasonal_naive")]
        assert str(row["trained_for"].date()) == entry["trained_for"] and row["method"] == entry["method"]
        assert row["became_champion"] == entry["promoted"]
        for column, expected in [
            ("mase", entry["mase"]),
            ("coverage_80", chosen.get("coverage_80")),
            ("coverage_95", chosen.get("coverage_95")),
            ("naive_mase", min(naive, default=None)),
        ]:
            assert (pd.isna(row[column]) and expected is None) or row[column] == expected, (name, column)
    assert got.loc["forecast-2026-11-12-d4", "naive_method"] == "seasonal_naive_weekly"
    # the champion now is the one registry.champion names
    assert list(got.index[got["is_champion"]]) == [registry.champion(lake)["version"]] == ["forecast-2026-11-12-d4"]


def test_a_step_that_fails_while_dbt_runs_stops_dbt(lake, built):
    """An event dagster-dbt cannot map (here: a node missing from the manifest the run loaded, as when
    the project changes under a running job) fails the step mid-build; dbt must not live on holding
    the warehouse's DuckDB lock, or every retry of the step fails on the lock."""
    from assets.warehouse.dbt import stream_stopping_dbt
    from assets.warehouse.project import dbt_project

    manifest = json.loads(Path(dbt_project().manifest_path).read_text())
    del manifest["nodes"]["model.iot_lake.stg_cases"]
    with _resources(lake)["warehouse"].dbt() as (dbt, target_path):
        invocation = dbt.cli(["build", "--exclude", "tag:hourly tag:daily"], manifest=manifest, target_path=target_path)
        with pytest.raises(KeyError, match="stg_cases"):
            for _ in stream_stopping_dbt(invocation):
                pass
        assert invocation.process.poll() is not None
    with duckdb.connect(lake.path("warehouse/iot_lake.duckdb")) as con:  # the lock is free again
        assert con.execute("select 1").fetchone() == (1,)


def test_a_drifted_historian_extract_is_registered_with_the_columns_it_has(tmp_path):
    """The raw extract is the source as it was: a part whose historian renamed ``value`` and another
    with a text value still make the view (null where the part has nothing usable), so the other
    warehouse views are not refused with it; the curated history's check reports the drift."""
    lake = Lake(str(tmp_path / "lake"))
    base = {
        "reading_id": [1],
        "device_id": ["dev-0001"],
        "metric": ["power"],
        "recorded_at": [pd.Timestamp("2026-11-30 10:00", tz="UTC")],
        "unit": ["kW"],
        "loaded_at": [pd.Timestamp("2026-11-30 10:35", tz="UTC")],
    }
    from datetime import date

    import pyarrow.parquet as pq

    from iot_lake.sources.readings import readings_prefix

    for day, extra in ((date(2026, 11, 30), {"reading_value": [41.5]}), (date(2026, 12, 1), {"value": ["12,5"]})):
        path = Path(lake.path(f"{readings_prefix(day)}/part-00000.parquet"))
        path.parent.mkdir(parents=True)
        pq.write_table(pa.table({**base, **extra}), path)
    register_views(lake, tmp_path / "w.duckdb", tables=(TABLES_BY_NAME["historical_readings"],))
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        rows = con.execute("select extract_date, value from lake.historical_readings order by 1").fetchall()
    assert [(str(d), v) for d, v in rows] == [("2026-11-30", None), ("2026-12-01", None)]
