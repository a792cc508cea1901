"""Nightly Delta maintenance with delta-rs on tables Sail wrote, and Sail working on them afterwards."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

from deltalake import DeltaTable

from iot_lake.curated.aggregates import AGGREGATE_TABLES, refresh_aggregates
from iot_lake.curated.object_counts import OBJECT_COUNTS
from iot_lake.curated.state import DEVICE_STATE, refresh_state
from iot_lake.curated.telemetry_job import CURATED_TELEMETRY, curate_hour
from jobs.maintenance import MaintenanceConfig, delta_maintenance_job, maintain_table
from resources.lake import LakeResource
from tests.conftest import HOURS, START
from tests.delta_age import age_table


def _snapshot(lake, key):
    rows = DeltaTable(lake.path(key)).to_pyarrow_table().to_pylist()
    return sorted(json.dumps(r, default=str, sort_keys=True) for r in rows)


def _metadata(result):
    return next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT").step_output_data.metadata


def _files(lake, key):
    return [p for p in lake.fs.find(lake.path(key)) if p.endswith(".parquet") and "_delta_log" not in p]


def test_compaction_and_vacuum_keep_every_row_and_sail_keeps_writing(landed, spark):
    for h in range(HOURS):
        hour = START + timedelta(hours=h)
        dates = curate_hour(spark, landed, hour).event_dates
        refresh_aggregates(spark, landed, hour, dates, CURATED_TELEMETRY)
        refresh_state(spark, landed, hour, dates, CURATED_TELEMETRY)  # unpartitioned: compacted whole
    keys = [CURATED_TELEMETRY, *AGGREGATE_TABLES.values(), "quarantine/telemetry", DEVICE_STATE, OBJECT_COUNTS]
    before = {k: _snapshot(landed, k) for k in keys}
    files_before = {k: len(DeltaTable(landed.path(k)).file_uris()) for k in keys}

    # A retention of 0 asked for is raised to 24 h: the files compaction just replaced stay for now.
    config = {"ops": {"maintain_delta_tables": {"config": {"compact_days": 30, "retention_hours": 0}}}}
    result = delta_maintenance_job.execute_in_process(
        run_config=config, resources={"lake": LakeResource(root=landed.url)}
    )
    assert result.success
    metadata = _metadata(result)
    assert metadata["tables"].value == len(keys) and metadata["files_removed"].value > 0
    assert len(_files(landed, CURATED_TELEMETRY)) > len(DeltaTable(landed.path(CURATED_TELEMETRY)).file_uris())
    # Two days on, the next night's run deletes them.
    for k in keys:
        age_table(landed.path(k))
    result = delta_maintenance_job.execute_in_process(
        run_config=config, resources={"lake": LakeResource(root=landed.url)}
    )
    assert result.success and _metadata(result)["files_vacuumed"].value > 0

    for k in keys:
        assert _snapshot(landed, k) == before[k], k  # same rows, fewer files
        live = DeltaTable(landed.path(k)).file_uris()
        assert len(live) <= files_before[k]
        assert len(_files(landed, k)) == len(live)  # vacuum deleted every file no version needs
    assert len(DeltaTable(landed.path(CURATED_TELEMETRY)).file_uris()) < files_before[CURATED_TELEMETRY]

    # Sail reads the compacted, checkpointed tables and MERGEs into them as before.
    again = curate_hour(spark, landed, START + timedelta(hours=1))
    assert again.accounted and again.curated_new == 0
    assert spark.read.format("delta").load(landed.uri(CURATED_TELEMETRY)).count() == len(before[CURATED_TELEMETRY])
    refresh_aggregates(spark, landed, START, again.event_dates, CURATED_TELEMETRY)
    assert _snapshot(landed, AGGREGATE_TABLES["1min"]) == before[AGGREGATE_TABLES["1min"]]
    refresh_state(spark, landed, START, again.event_dates, CURATED_TELEMETRY)
    assert _snapshot(landed, DEVICE_STATE) == before[DEVICE_STATE]


def test_a_killed_local_writers_staged_file_is_deleted_once_past_the_retention(tmp_path):
    """A local write is staged as ``name#N`` and renamed when done; a writer killed in between leaves
    the staged file, which delta-rs's vacuum does not list. Maintenance deletes it after the retention,
    never before (it may be a concurrent writer's file in flight)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    lake = LakeResource(root=str(tmp_path / "lake"))
    key = "curated/weather"
    path = lake.lake().path(key)
    write_deltalake(path, pa.table({"observed_date": ["2026-11-20"], "v": [1.0]}), partition_by=["observed_date"])
    [live] = DeltaTable(path).file_uris()
    live_path = Path(live.removeprefix("file://"))
    staged = live_path.with_name(live_path.name.replace(".parquet", "-killed.parquet#1"))
    staged.write_bytes(live_path.read_bytes())
    config = MaintenanceConfig(retention_hours=0)

    maintain_table(lake, key, "observed_date", config, today=date(2026, 11, 20))
    assert staged.exists()  # fresh: perhaps a writer still at work
    age_table(path)
    report = maintain_table(lake, key, "observed_date", config, today=date(2026, 11, 20))
    assert not staged.exists() and report["files_vacuumed"] >= 1
    assert DeltaTable(path).to_pyarrow_table().to_pylist() == [{"observed_date": "2026-11-20", "v": 1.0}]
