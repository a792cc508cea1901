"""ops/deviations on real Delta tables and a real SQLite case store: scoring, idempotent re-runs,
one case per incident, accuracy against injected ground truth."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from dagster import AssetSelection, materialize
from deltalake import DeltaTable, write_deltalake

from assets.ops.deviations import DEVIATIONS_TABLE, FORECASTS_TABLE, deviations
from iot_lake.cases.store import CaseStore
from iot_lake.detect.deviations import DeviationParams, SeriesScorer
from iot_lake.lake import Lake
from iot_lake.simulate.runner import anomalies_key
from resources.cases import CasesResource
from resources.lake import LakeResource

START = datetime(2026, 11, 20, 8, tzinfo=UTC)
SIGMA = 0.5
SPIKE = (START + timedelta(hours=2, minutes=20), START + timedelta(hours=2, minutes=35))  # dev-2 power


def _clean(ts: pd.DatetimeIndex) -> np.ndarray:
    return np.asarray(50 + 10 * np.sin(2 * np.pi * (ts.hour * 60 + ts.minute) / 1440))


def _lake(root) -> Lake:
    lake = Lake(str(root))
    minutes = pd.date_range(START, START + timedelta(hours=3), freq="1min", inclusive="left")
    rng = np.random.default_rng(3)
    rows = []
    for device in ("dev-1", "dev-2"):
        values = _clean(minutes) + rng.normal(0, SIGMA, len(minutes))
        if device == "dev-2":
            values[(minutes >= SPIKE[0]) & (minutes < SPIKE[1])] += 8  # 16 sigma
        rows.append(
            pd.DataFrame(
                {
                    "device_id": device,
                    "metric": "power",
                    "site_id": "site-1",
                    "bucket_start": minutes,
                    "mean": values,
                    "event_date": minutes.date,
                }
            )
        )
    write_deltalake(
        lake.uri("curated/telemetry_1min"),
        pa.Table.from_pandas(pd.concat(rows), preserve_index=False),
        partition_by=["event_date"],
    )
    buckets = pd.date_range(START, START + timedelta(hours=3), freq="5min", inclusive="left")
    yhat = _clean(buckets)
    forecasts = pd.concat(
        pd.DataFrame(
            {
                "device_id": device,
                "metric": "power",
                "bucket_start": buckets,
                "yhat": yhat,
                "lo_80": yhat - 1.28 * SIGMA,
                "hi_80": yhat + 1.28 * SIGMA,
                "lo_95": yhat - 1.96 * SIGMA,
                "hi_95": yhat + 1.96 * SIGMA,
                "origin": START - timedelta(hours=1),
                "model_version": "v1",
                "origin_date": (START - timedelta(hours=1)).date(),
            }
        )
        for device in ("dev-1", "dev-2")
    )
    write_deltalake(
        lake.uri(FORECASTS_TABLE), pa.Table.from_pandas(forecasts, preserve_index=False), partition_by=["origin_date"]
    )
    lake.write_text(
        anomalies_key(START.date()),
        "device_id,site_id,metric,kind,start,end,magnitude\n"
        f"dev-2,site-1,power,spike,{SPIKE[0].isoformat()},{SPIKE[1].isoformat()},8\n",
    )
    return lake


@pytest.fixture
def run(tmp_path):
    lake = _lake(tmp_path / "lake")
    resources = {
        "lake": LakeResource(root=lake.url),
        "cases": CasesResource(url=f"sqlite:///{tmp_path}/cases.sqlite", lake_root=lake.url),
    }

    def materialize_hour(h: int):
        key = (START + timedelta(hours=h)).strftime("%Y-%m-%d-%H:%M")
        result = materialize([deviations], partition_key=key, resources=resources)
        return result.asset_materializations_for_node("ops__deviations")[0].metadata

    return lake, tmp_path / "cases.sqlite", materialize_hour


def test_one_case_per_incident_and_reruns_change_nothing(run):
    lake, db, materialize_hour = run
    metas = [materialize_hour(h) for h in range(3)]
    table = DeltaTable(lake.path(DEVIATIONS_TABLE)).to_pandas()
    assert len(table) == 2 * 180 and metas[2]["dagster/row_count"].value == 120
    flagged = table[table["is_anomalous"]]
    assert set(flagged["device_id"]) == {"dev-2"}
    # The whole excursion is the incident, and nothing else is.
    assert list(flagged["ts"]) == list(pd.date_range(SPIKE[0], SPIKE[1], freq="1min", inclusive="left"))
    assert metas[2]["recall"].value == 1.0 and metas[2]["precision"].value == 1.0
    assert metas[2]["median_detection_delay_s"].value == 0.0
    # The hour's chart: actuals against the band, the flagged minutes marked (an inline PNG).
    assert metas[2]["deviations_plot"].value.startswith("![deviations](data:image/png;base64,")

    with CaseStore(f"sqlite:///{db}") as store:
        cases = store.list_cases()
    assert [(c.device_id, c.metric, c.incident_start) for c in cases] == [("dev-2", "power", SPIKE[0])]
    evidence = cases[0].evidence
    assert len(evidence["actual_values"]) == 15  # every minute of the excursion, each above its band
    assert all(v > evidence["expected_hi"] for _, v in evidence["actual_values"])
    assert evidence["max_score"] > 10 and cases[0].severity == "critical"  # 16 band sigmas
    # The series came back in band for 25 minutes of the hour: not yet long enough to auto-resolve.
    assert cases[0].status == "open"

    again = materialize_hour(2)
    assert len(DeltaTable(lake.path(DEVIATIONS_TABLE)).to_pandas()) == 2 * 180
    assert again["anomalous"].value == metas[2]["anomalous"].value
    with CaseStore(f"sqlite:///{db}") as store:
        assert [(c.case_key, c.status) for c in store.list_cases()] == [(cases[0].case_key, "open")]
    assert lake.exists("cases/feedback") or lake.exists("cases/cases")


def test_scores_are_causal_and_calibrated_per_series():
    params = DeviationParams()
    rng = np.random.default_rng(0)
    residuals = rng.normal(0, 1, 400)
    scorer = SeriesScorer(params)
    scores = [scorer.update(r, abs(r) > 1.96)[0] for r in residuals]
    assert max(scores) < params.alert_score  # ordinary noise never alerts, learning or not
    assert scorer.update(12.0, True)[1] and scorer.update(12.0, True)[1]  # an incident, still on
    assert scorer.update(0.1, False) == (pytest.approx(0.0, abs=0.2), False)  # back in band: over
    # A series whose band is three times too narrow: calibrated on its own residuals, its ordinary
    # noise does not alert either, while the same noise judged by the band alone would.
    narrow = SeriesScorer(params)
    narrow.warm(residuals * 3, [False] * len(residuals))
    later = rng.normal(0, 1, 300) * 3
    assert max(narrow.update(r, abs(r) > 1.96)[0] for r in later) < params.alert_score
    assert max(SeriesScorer(params).update(r, abs(r) > 1.96)[0] for r in later) >= params.alert_score


def test_a_series_without_history_is_judged_by_the_band():
    """The first hour of forecasts: no past residuals yet, so the band's normal tail decides."""
    scorer = SeriesScorer(DeviationParams())
    assert scorer.update(2.5, True) == (pytest.approx(0.0, abs=0.4), False)  # outside, but ordinary
    score, anomalous = scorer.update(15.0, True)
    assert anomalous and score > 0.9


def test_new_curated_minutes_of_the_hour_request_its_deviations(tmp_path, defs):
    """The automation condition: once the forecast made at the hour's start exists, each new
    materialization of the hour's curated minutes asks for the hour's deviations again."""
    from dagster import AssetMaterialization, DagsterInstance, evaluate_automation_conditions

    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    key, before = hour.strftime("%Y-%m-%d-%H:%M"), (hour - timedelta(hours=1)).strftime("%Y-%m-%d-%H:%M")
    deviations_key = deviations.key
    with DagsterInstance.ephemeral() as instance:

        def requested(cursor=None):
            result = evaluate_automation_conditions(
                defs, instance, asset_selection=AssetSelection.assets(deviations_key), cursor=cursor
            )
            return result.get_requested_partitions(deviations_key), result.cursor

        instance.report_runless_asset_event(AssetMaterialization(["curated", "telemetry_1min"], partition=key))
        asked, cursor = requested()
        assert asked == set()  # no forecast for the hour yet
        instance.report_runless_asset_event(AssetMaterialization(["ml", "batch_forecast"], partition=before))
        asked, cursor = requested(cursor)
        assert asked == {key}
        instance.report_runless_asset_event(AssetMaterialization(deviations_key, partition=key))
        asked, cursor = requested(cursor)
        assert asked == set()  # up to date
        instance.report_runless_asset_event(AssetMaterialization(["curated", "telemetry_1min"], partition=key))
        asked, _ = requested(cursor)
        assert asked == {key}  # newer minutes: score the hour again
