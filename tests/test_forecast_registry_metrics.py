"""The registry's metrics table: one row per trained version in Delta, what the warehouse reads."""

from __future__ import annotations

from datetime import date

from deltalake import DeltaTable

from iot_lake.forecast import registry
from iot_lake.lake import Lake

BACKTEST = [
    {"model": "lightgbm", "mase": 0.81, "coverage_80": 0.77, "coverage_95": 0.93},
    {"model": "seasonal_naive", "mase": 1.02, "coverage_80": 0.71, "coverage_95": 0.9},
    {"model": "seasonal_naive_weekly", "mase": 0.97, "coverage_80": 0.74, "coverage_95": 0.91},
    {"model": "champion", "mase": 0.85, "challenger_mase": 0.8},
]


def _version(name: str, day: str, backtest=BACKTEST, method="lightgbm", promoted=True) -> registry.ModelVersion:
    mase = registry.chosen_row(backtest, method).get("mase")
    return registry.ModelVersion(name, f"k/{name}", method, mase, "a", "b", day, backtest, promoted, "why")


def _rows(lake: Lake) -> list[dict]:
    table = DeltaTable(lake.uri(registry.METRICS_KEY)).to_pyarrow_table()
    return sorted(table.to_pylist(), key=lambda r: r["version"])


def test_each_version_is_one_row_with_the_chosen_and_the_better_naive_scores(tmp_path):
    lake = Lake(str(tmp_path))
    registry.record(lake, _version("forecast-2026-11-13", "2026-11-13"))
    # a fleet too young to score anything: the unscored fallback has no MASE and no naive row
    registry.record(lake, _version("forecast-2026-11-14", "2026-11-14", [], "seasonal_naive", promoted=False))
    first, second = _rows(lake)
    assert first["trained_for"] == date(2026, 11, 13) and first["method"] == "lightgbm"
    assert (first["mase"], first["coverage_80"], first["coverage_95"]) == (0.81, 0.77, 0.93)
    assert (first["naive_method"], first["naive_mase"]) == ("seasonal_naive_weekly", 0.97)
    assert first["promoted"] is True and first["trained_at"].tzinfo is None
    assert second["mase"] is None and second["naive_mase"] is None and second["promoted"] is False


def test_recording_the_same_version_again_replaces_its_row(tmp_path):
    lake = Lake(str(tmp_path))
    registry.record(lake, _version("forecast-2026-11-13", "2026-11-13"))
    registry.record(lake, _version("forecast-2026-11-14", "2026-11-14"))
    # the re-run of the 14th's training scored differently and was not promoted
    rerun = [{**BACKTEST[0], "mase": 0.9}, *BACKTEST[1:]]
    registry.record(lake, _version("forecast-2026-11-14", "2026-11-14", rerun, promoted=False))
    rows = _rows(lake)
    assert [r["version"] for r in rows] == ["forecast-2026-11-13", "forecast-2026-11-14"]
    assert (rows[1]["mase"], rows[1]["promoted"]) == (0.9, False)
    assert registry.champion(lake)["version"] == "forecast-2026-11-14"  # the champion file is untouched by it


def test_a_score_the_backtest_could_not_give_is_null_not_nan(tmp_path):
    # The main job's young fleet: the fallback was scored (MASE) at one origin with no calibrated day
    # before it, so its coverage is NaN; stored as NaN, dbt's 0..1 range test on it failed the warehouse.
    lake = Lake(str(tmp_path))
    scored = [{"model": "seasonal_naive", "mase": 0.5, "coverage_80": float("nan"), "coverage_95": float("nan")}]
    registry.record(lake, _version("forecast-2026-11-15", "2026-11-15", scored, "seasonal_naive"))
    (row,) = _rows(lake)
    assert row["mase"] == 0.5 and row["coverage_80"] is None and row["coverage_95"] is None
