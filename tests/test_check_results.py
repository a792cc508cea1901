"""ops/check_results: the check evaluations of ended runs, copied from a real (ephemeral) Dagster
instance into the lake's Delta table, once each."""

from __future__ import annotations

from datetime import timedelta

from dagster import DagsterInstance, materialize
from deltalake import DeltaTable

from assets.landing.telemetry import landing_telemetry
from assets.ops.check_results import CHECK_RESULTS_ASSET_KEY, check_results
from iot_lake.check_results import CHECK_RESULTS_KEY, write_check_results
from resources.lake import LakeResource
from tests.conftest import START

HOURS = [(START + timedelta(hours=h)).strftime("%Y-%m-%d-%H:%M") for h in range(2)]


def _rows(lake):
    return DeltaTable(lake.path(CHECK_RESULTS_KEY)).to_pandas()


def test_each_evaluation_is_copied_once_with_its_outcome(landed):
    """The landed hours hold truncated objects: objects_readable fails, WARN, and says how many."""
    instance = DagsterInstance.ephemeral()
    resources = {"lake": LakeResource(root=landed.url)}
    runs = [materialize([landing_telemetry], partition_key=h, resources=resources, instance=instance) for h in HOURS]
    first = materialize([check_results], resources=resources, instance=instance)
    rows = _rows(landed).sort_values("partition_key")
    assert list(rows["partition_key"]) == HOURS
    assert list(rows["run_id"]) == [r.run_id for r in runs]
    assert set(rows["asset_key"]) == {"landing/telemetry"} and set(rows["check_name"]) == {"objects_readable"}
    failed = rows[~rows["passed"]]
    assert len(failed) >= 1 and set(failed["severity"]) == {"WARN"}
    assert failed["description"].str.match(r"unreadable_objects=[1-9]").all()  # the Markdown list stays out
    assert (rows["evaluated_date"] == rows["evaluated_at"].dt.date).all()
    metadata = first.asset_materializations_for_node("ops__check_results")[0].metadata
    assert metadata["evaluations"].value == 2 and metadata["failed"].value == len(failed)

    # The next copy starts after the runs the last one saw: nothing is copied twice.
    materialize([landing_telemetry], partition_key=HOURS[0], resources=resources, instance=instance)
    materialize([check_results], resources=resources, instance=instance)
    again = _rows(landed)
    assert len(again) == 3 and again.groupby(["run_id", "event_id"]).size().max() == 1
    latest = instance.get_latest_materialization_event(CHECK_RESULTS_ASSET_KEY)
    assert latest.asset_materialization.metadata["evaluations"].value == 1


def test_writing_the_same_evaluations_again_replaces_them(landed):
    """A retried step writes its rows again: merged on (run, event), never duplicated."""
    instance = DagsterInstance.ephemeral()
    resources = {"lake": LakeResource(root=landed.url)}
    materialize([landing_telemetry], partition_key=HOURS[0], resources=resources, instance=instance)
    materialize([check_results], resources=resources, instance=instance)
    rows = _rows(landed)
    assert write_check_results(landed, rows.to_dict("records")) == 1
    assert len(_rows(landed)) == 1
