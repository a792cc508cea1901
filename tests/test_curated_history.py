"""Curated history on Sail: the historian's extracted readings validated into curated telemetry, with
exact row accounting, quarantine, dedupe across extracts, telemetry's precedence in either arrival
order, and schema drift reported instead of failing."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from iot_lake.curated.aggregates import AGGREGATE_TABLES, refresh_aggregates
from iot_lake.curated.history_job import QUARANTINE_HISTORIAN, curate_days, validate_part
from iot_lake.curated.precedence import HISTORIAN_SOURCE, PERIOD_SECONDS
from iot_lake.curated.records import Record, parse_reading
from iot_lake.curated.registries import load_registry
from iot_lake.curated.telemetry_job import CURATED_TELEMETRY, curate_batch
from iot_lake.curated.typical import RegistryIndex
from iot_lake.lake import Lake
from iot_lake.simulate.historian import seed_historian
from iot_lake.sources.historian import create_engine, land_readings, land_registry
from iot_lake.sources.readings import READINGS_SCHEMA, readings_manifest_key, readings_prefix
from iot_lake.sources.telemetry import land_inventory
from tests.conftest import START, simulate

HOURS = 2  # of telemetry, from START
DAY1 = START.date()  # the real extract: the two seeded history days before START
DAY2 = DAY1 + timedelta(days=1)  # a landed extract with every kind of imperfect row
EXTRACTED = datetime(2026, 11, 21, 0, 40, tzinfo=UTC)  # when DAY2's extract ran
TELEMETRY_HOURS = [START + timedelta(hours=h) for h in range(HOURS)]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Two hours of telemetry from START (landed, inventoried), the registry, and the extract of DAY1
    holding the two days of history the historian was seeded with."""
    root = tmp_path_factory.mktemp("history_base")
    lake, sim = simulate(root, hours=HOURS, devices=3, history_days=2)
    url = f"sqlite:///{root}/historian.sqlite"
    seed_historian(url, sim.fleet, sim.cfg, DAY1)
    engine = create_engine(url)
    land_registry(lake, engine, DAY1)
    land_readings(lake, engine, DAY1, now=START + timedelta(hours=HOURS))
    engine.dispose()
    for hour in TELEMETRY_HOURS:
        land_inventory(lake, hour)
    return root, sim.fleet


@pytest.fixture
def lake(base, tmp_path) -> Lake:
    """A private copy of the base lake, for a test to curate into."""
    root, _ = base
    shutil.copytree(root, tmp_path / "lake")
    return Lake(str(tmp_path / "lake"))


def copy_of(lake: Lake, path) -> Lake:
    shutil.copytree(lake.url, path)
    return Lake(str(path))


def _part(lake: Lake, day) -> str:
    return f"{readings_prefix(day)}/part-00000.parquet"


def land_extract(lake: Lake, day, table: pa.Table, extracted_at: datetime = EXTRACTED) -> None:
    """An extract day as the extract lands it: one Parquet part and the manifest naming it."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    lake.write_bytes(_part(lake, day), sink.getvalue().to_pybytes())
    manifest = {
        "day": day.isoformat(),
        "low": None,
        "high": extracted_at.isoformat(),
        "rows": table.num_rows,
        "files": [_part(lake, day)],
        "extracted_at": extracted_at.isoformat(),
    }
    lake.write_text(readings_manifest_key(day), json.dumps(manifest))


def day1_rows(lake: Lake) -> list[dict]:
    with lake.open(_part(lake, DAY1)) as f:
        return pq.read_table(f).to_pylist()


def imperfect_extract(lake: Lake, fleet) -> list[dict]:
    """DAY2's rows: a correction and an unchanged re-load of DAY1 readings, a new reading twice, a
    reading in a period telemetry covers, and one of each way a historian row goes wrong."""
    device = fleet.devices[0]
    temperature = device.metrics["temperature"].unit
    first, second = day1_rows(lake)[:2]
    loaded = EXTRACTED - timedelta(minutes=30)
    reading = {"device_id": device.device_id, "metric": "temperature", "unit": temperature, "loaded_at": loaded}
    rows = [
        {**first, "value": first["value"] + 1.5, "loaded_at": loaded},  # corrected in the historian
        {**second, "loaded_at": loaded},  # loaded again, unchanged
        {**reading, "recorded_at": START + timedelta(hours=5), "value": 20.0},  # new, and twice in this part
        {**reading, "recorded_at": START + timedelta(hours=5), "value": 20.0},
        {**reading, "recorded_at": START + timedelta(minutes=15), "value": 21.0},  # a period telemetry covers
        {**reading, "device_id": "dev-9999", "recorded_at": START, "value": 20.0},
        {**reading, "metric": "pressure", "unit": "bar", "recorded_at": START, "value": 3.0},
        {**reading, "metric": "power", "unit": "kW", "recorded_at": START, "value": 5000.0},
        {**reading, "recorded_at": START + timedelta(hours=6), "value": None},
        {**reading, "recorded_at": loaded + timedelta(hours=1), "value": 20.0},  # recorded after it was loaded
        {**reading, "recorded_at": datetime(1970, 1, 1, tzinfo=UTC), "value": 20.0},  # a clock never set
    ]
    for i, row in enumerate(rows):
        row["reading_id"] = 1_000_000 + i
    land_extract(lake, DAY2, pa.Table.from_pylist(rows, schema=READINGS_SCHEMA))
    return rows


def curate_telemetry(spark, lake: Lake):
    """The telemetry job's curate and aggregate steps for the landed hours (one batch); its first
    hour's report."""
    reports = curate_batch(spark, lake, TELEMETRY_HOURS)
    dates = sorted({d for r in reports for d in r.event_dates})
    refresh_aggregates(spark, lake, TELEMETRY_HOURS, dates, CURATED_TELEMETRY)
    return reports[0]


def _table(lake: Lake, key: str) -> pa.Table:
    return DeltaTable(lake.path(key)).to_pyarrow_table()


def _rows(lake: Lake, key: str, digits: int = 9) -> set[str]:
    """A table's rows, comparable between runs (floats rounded: a sum's order may differ)."""
    out = set()
    for row in _table(lake, key).to_pylist():
        row = {k: round(v, digits) if isinstance(v, float) else v for k, v in row.items()}
        out.add(json.dumps(row, default=str, sort_keys=True))
    return out


def _historian(lake: Lake) -> list[dict]:
    return [r for r in _table(lake, CURATED_TELEMETRY).to_pylist() if r["source_object"].startswith(HISTORIAN_SOURCE)]


def _period(ts: datetime) -> int:
    return int(ts.timestamp()) // PERIOD_SECONDS


def _covered(lake: Lake) -> set[tuple]:
    """The (device, metric, 15-minute period) curated telemetry covers."""
    rows = _table(lake, CURATED_TELEMETRY).to_pylist()
    return {
        (r["device_id"], r["metric"], _period(r["event_ts"]))
        for r in rows
        if not r["source_object"].startswith(HISTORIAN_SOURCE)
    }


def test_the_extract_becomes_curated_telemetry_with_a_bucket_per_reading(lake, spark):
    landed = day1_rows(lake)
    run = curate_days(spark, lake, [DAY1])
    [report] = run.reports
    assert report.accounted, report
    assert report.rows_read == report.rows_in_manifest == report.curated_new == len(landed) > 0
    assert report.event_dates == [str(DAY1 - timedelta(days=2)), str(DAY1 - timedelta(days=1))]
    assert not run.drift

    rows = _historian(lake)
    assert len(rows) == len(landed)
    by_key = {(r["device_id"], r["metric"], r["event_ts"]): r for r in rows}
    for src in landed[:50]:
        row = by_key[(src["device_id"], src["metric"], src["recorded_at"])]
        assert (
            row["message_id"] == f"historian:{src['device_id']}:{src['metric']}:{int(src['recorded_at'].timestamp())}"
        )
        assert row["ingested_at"] == src["loaded_at"] and row["source_object"] == _part(lake, DAY1)
        assert row["reported_value"] == src["value"] and row["reported_unit"] == src["unit"]
    # An imperial device's readings are stored in canonical units, as its telemetry is.
    assert {r["unit"] for r in rows} <= {"degC", "mm/s", "kPa", "kW"}
    assert any(r["reported_unit"] in ("degF", "psi") for r in rows)
    # One bucket per reading at both grains, every 15 minutes of the history.
    for grain, table in AGGREGATE_TABLES.items():
        buckets = _table(lake, table).to_pylist()
        assert len(buckets) == len(rows), grain
        assert {b["readings"] for b in buckets} == {1}
        assert all(b["bucket_start"].minute % 15 == 0 for b in buckets)
        assert all(
            b["mean"] == b["last"] == by_key[(b["device_id"], b["metric"], b["bucket_start"])]["value"] for b in buckets
        )


def test_an_imperfect_extract_is_quarantined_deduplicated_and_accounted(lake, base, spark):
    _, fleet = base
    curate_days(spark, lake, [DAY1])
    rows = imperfect_extract(lake, fleet)
    [report] = curate_days(spark, lake, [DAY2]).reports
    assert report.accounted, report
    assert (report.rows_read, report.curated_new, report.curated_updated) == (11, 2, 1)
    assert (report.duplicates_in_batch, report.duplicates_existing, report.quarantined) == (1, 1, 6)
    assert report.quarantine_reasons == {
        "clock_skew": 2,
        "missing_field": 1,
        "out_of_range": 1,
        "unknown_device": 1,
        "unknown_unit": 1,
    }
    quarantine = _table(lake, QUARANTINE_HISTORIAN).to_pylist()
    assert len(quarantine) == 6
    assert all(q["source_object"] == _part(lake, DAY2) and q["raw_row"] and q["detail"] for q in quarantine)
    details = {q["reason"]: q["detail"] for q in quarantine if q["reason"] != "clock_skew"}
    assert details["missing_field"] == "value" and details["unknown_device"] == "dev-9999"
    assert {q["row_number"] for q in quarantine} == {6, 7, 8, 9, 10, 11}

    # The correction replaced the stored reading; the historian's latest load wins.
    corrected = rows[0]
    stored = [
        r
        for r in _historian(lake)
        if (r["device_id"], r["metric"], r["event_ts"])
        == (corrected["device_id"], corrected["metric"], corrected["recorded_at"])
    ]
    assert [r["reported_value"] for r in stored] == [corrected["value"]]
    assert stored[0]["source_object"] == _part(lake, DAY2)
    [bucket] = [
        b
        for b in _table(lake, AGGREGATE_TABLES["1min"]).to_pylist()
        if (b["device_id"], b["metric"], b["bucket_start"])
        == (corrected["device_id"], corrected["metric"], corrected["recorded_at"])
    ]
    assert bucket["mean"] == stored[0]["value"]

    # Re-runs change nothing, and re-running the older extract does not undo the correction.
    curated, aggregates = _rows(lake, CURATED_TELEMETRY), _rows(lake, AGGREGATE_TABLES["5min"])
    quarantined = _rows(lake, QUARANTINE_HISTORIAN)
    [again] = curate_days(spark, lake, [DAY2]).reports
    assert again.accounted and again.curated_new == again.curated_updated == 0 and again.duplicates_existing == 4
    [older] = curate_days(spark, lake, [DAY1]).reports
    assert older.accounted and older.curated_new == older.curated_updated == 0
    assert _rows(lake, CURATED_TELEMETRY) == curated
    assert _rows(lake, AGGREGATE_TABLES["5min"]) == aggregates
    assert _rows(lake, QUARANTINE_HISTORIAN) == quarantined


def test_both_extracts_in_one_run_curate_what_they_curate_one_after_the_other(lake, base, spark, tmp_path):
    _, fleet = base
    imperfect_extract(lake, fleet)
    other = copy_of(lake, tmp_path / "other")
    curate_days(spark, lake, [DAY1])
    curate_days(spark, lake, [DAY2])
    reports = curate_days(spark, other, [DAY1, DAY2]).reports
    assert all(r.accounted for r in reports), reports
    # The corrected reading's DAY1 copy gives way to DAY2's; the unchanged reading's DAY2 copy to
    # DAY1's (the first load of a value stays), beside DAY2's own repeated row.
    assert [r.duplicates_in_batch for r in reports] == [1, 2]
    assert _rows(other, CURATED_TELEMETRY) == _rows(lake, CURATED_TELEMETRY)
    assert _rows(other, AGGREGATE_TABLES["1min"]) == _rows(lake, AGGREGATE_TABLES["1min"])


def test_telemetry_wins_in_either_arrival_order(lake, base, spark, tmp_path):
    """History curated after telemetry leaves out the periods telemetry has; telemetry curated after
    history displaces the historian rows of its periods. Both orders end in the same tables."""
    _, fleet = base
    overlapping = imperfect_extract(lake, fleet)[4]
    later = copy_of(lake, tmp_path / "telemetry_later")

    # Telemetry first, then the history.
    curate_telemetry(spark, lake)
    reports = curate_days(spark, lake, [DAY1, DAY2]).reports
    assert all(r.accounted for r in reports), reports
    # The devices' clocks put some telemetry before START, in the history's last periods.
    covered = _covered(lake)
    expected = [(r["device_id"], r["metric"], _period(r["recorded_at"])) in covered for r in day1_rows(lake)]
    assert [r.overlapped_by_telemetry for r in reports] == [sum(expected), 1]

    # The history first, then telemetry.
    curate_days(spark, later, [DAY1, DAY2])
    key = (overlapping["device_id"], overlapping["metric"], overlapping["recorded_at"])
    assert key in {(r["device_id"], r["metric"], r["event_ts"]) for r in _historian(later)}
    report = curate_telemetry(spark, later)
    assert report.historian_displaced == sum(expected) + 1

    for result in (lake, later):
        covered = _covered(result)
        assert (key[0], key[1], _period(key[2])) in covered
        assert not [r for r in _historian(result) if (r["device_id"], r["metric"], _period(r["event_ts"])) in covered]
        for table in AGGREGATE_TABLES.values():
            # No bucket keeps the historian's value: a bucket holds telemetry readings only.
            assert not [
                b
                for b in _table(result, table).to_pylist()
                if (b["device_id"], b["metric"], b["bucket_start"]) == key and b["readings"] == 1 and b["mean"] == 21.0
            ]
    assert _rows(later, CURATED_TELEMETRY) == _rows(lake, CURATED_TELEMETRY)
    for table in AGGREGATE_TABLES.values():
        assert _rows(later, table) == _rows(lake, table)

    # Re-running either side changes nothing.
    before = {key: _rows(later, key) for key in (CURATED_TELEMETRY, *AGGREGATE_TABLES.values())}
    [_, again] = curate_days(spark, later, [DAY1, DAY2]).reports
    assert again.accounted and again.overlapped_by_telemetry == 1 and again.curated_new == 0
    assert curate_telemetry(spark, later).historian_displaced == 0
    assert {key: _rows(later, key) for key in before} == before


def _rewrite_part(lake: Lake, change) -> pa.Table:
    with lake.open(_part(lake, DAY1)) as f:
        table = change(pq.read_table(f))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    lake.write_bytes(_part(lake, DAY1), sink.getvalue().to_pybytes())
    return table


def _retyped(table: pa.Table) -> pa.Table:
    columns = {
        "reading_id": pc.cast(table["reading_id"], pa.int32()),
        "recorded_at": pc.cast(table["recorded_at"], pa.timestamp("ms")),  # naive: UTC, as the historian keeps it
        "value": pc.cast(table["value"], pa.string()),
    }
    for name, column in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


DRIFTS = {
    "added": (
        lambda t: t.append_column("quality", pa.array(["good"] * t.num_rows)),
        {"added": {"quality": "string"}},
        "all curated",
    ),
    "renamed": (
        lambda t: t.rename_columns(["reading_value" if c == "value" else c for c in t.column_names]),
        {"added": {"reading_value": "double"}, "missing": {"value": "double"}, "renamed": {"value": "reading_value"}},
        "missing_field",
    ),
    "retyped": (
        _retyped,
        {
            "retyped": {
                "reading_id": "int64 -> int32 (cast)",
                "recorded_at": "timestamp[us, tz=UTC] -> timestamp[ms] (cast)",
                "value": "double -> string (rows rejected)",
            }
        },
        "mistyped_field",
    ),
}


@pytest.mark.parametrize("kind", list(DRIFTS))
def test_schema_drift_is_reported_with_its_differences_and_never_fails_the_run(lake, spark, kind):
    change, differences, outcome = DRIFTS[kind]
    landed = _rewrite_part(lake, change)
    run = curate_days(spark, lake, [DAY1])
    [report] = run.reports
    assert report.accounted and report.rows_read == landed.num_rows and report.drifted_files == 1
    [drift] = run.drift.values()
    assert {k: v for k, v in vars(drift).items() if v} == differences
    if outcome == "all curated":
        assert report.curated_new == landed.num_rows and report.quarantined == 0
        return
    # The rows the drifted column leaves without a value are quarantined, saying why.
    assert report.quarantined == landed.num_rows and report.quarantine_reasons == {outcome: landed.num_rows}
    detail = _table(lake, QUARANTINE_HISTORIAN).column("detail")[0].as_py()
    expected = {
        "missing_field": "value (the part has no column value: schema drift)",
        "mistyped_field": "value is str, expected a number",
    }
    assert detail == expected[outcome]


def test_a_compatible_type_change_curates_the_same_rows(lake, spark, tmp_path):
    """Another timestamp unit (naive: UTC, as the historian keeps it) and a narrower integer are cast,
    so the part curates exactly what the expected schema would have."""
    reference = copy_of(lake, tmp_path / "reference")
    curate_days(spark, reference, [DAY1])

    def retype(table: pa.Table) -> pa.Table:
        for name, to in (
            ("recorded_at", pa.timestamp("ms")),
            ("loaded_at", pa.timestamp("ms")),
            ("reading_id", pa.int32()),
        ):
            table = table.set_column(table.schema.get_field_index(name), name, pc.cast(table[name], to))
        return table

    _rewrite_part(lake, retype)
    run = curate_days(spark, lake, [DAY1])
    assert run.reports[0].drifted_files == 1 and run.reports[0].quarantined == 0
    assert _rows(lake, CURATED_TELEMETRY) == _rows(reference, CURATED_TELEMETRY)


def test_fast_path_gives_parse_readings_verdict_on_every_row(lake, base, spark):
    """validate_part decides typical rows column-wise: its verdicts must be parse_reading's."""
    _, fleet = base
    rows = imperfect_extract(lake, fleet) + day1_rows(lake)[:200]
    registry = load_registry(lake, DAY2)
    table = pa.Table.from_pylist(rows, schema=READINGS_SCHEMA)
    origin = {"source_object": "x", "landing_date": DAY2, "first_row": 1}
    parsed = pa.Table.from_batches(list(validate_part(table, registry, RegistryIndex.of(registry), EXTRACTED, origin)))
    verdicts = {r["row_number"]: r for r in parsed.to_pylist()}
    assert sorted(verdicts) == list(range(1, len(rows) + 1))
    for number, row in enumerate(rows, start=1):
        fields = {**row, "ts": row["recorded_at"], "ingested_at": row["loaded_at"], "message_id": "historian:"}
        expected = parse_reading(fields, registry, EXTRACTED)
        got = verdicts[number]
        if isinstance(expected, Record):
            assert got["status"] == "ok", (row, got)
            assert (got["value"], got["unit"], got["event_ts"], got["site_id"]) == (
                expected.value,
                expected.unit,
                expected.event_ts,
                expected.site_id,
            )
        else:
            assert (got["status"], got["reason"]) == ("rejected", expected.reason), (row, got)


def test_missing_inputs_fail_with_a_clear_message(lake, spark):
    with pytest.raises(RuntimeError, match="materialize landing/historical_readings"):
        curate_days(spark, lake, [DAY2])


def test_the_asset_reports_accounting_and_drift_as_checks_through_dagster(lake, base, spark):
    """Materialized through Dagster for a range of extract days (one run, one Spark session): the
    row accounting passes, and a part with a new column curates and warns with the difference."""
    from dagster import AssetCheckSeverity, DagsterInstance, materialize

    from assets.curated.history import CURATED_HISTORY_KEY, curated_historical_readings
    from jobs.main import RANGE_END, RANGE_START
    from resources.lake import LakeResource
    from resources.spark import SparkRunner

    _, fleet = base
    imperfect_extract(lake, fleet)
    _rewrite_part(lake, DRIFTS["added"][0])
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [curated_historical_readings],
            instance=instance,
            tags={RANGE_START: str(DAY1), RANGE_END: str(DAY2)},
            resources={"lake": LakeResource(root=lake.url), "spark": SparkRunner(mode="local")},
        )
        assert result.success
        assert instance.get_materialized_partitions(CURATED_HISTORY_KEY) == {str(DAY1), str(DAY2)}
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["row_accounting"].passed
    schema = checks["landed_schema"]
    assert not schema.passed and schema.severity == AssetCheckSeverity.WARN
    [kind] = schema.metadata["differences"].value["kinds"]
    assert kind == {"added": {"quality": "string"}, "files": [_part(lake, DAY1)]}
    materializations = result.asset_materializations_for_node("curated__historical_readings")
    assert len(materializations) == 2  # the run's one report, on each day of its range
    metadata = {k: v.value for k, v in materializations[0].metadata.items()}
    assert metadata["quarantined"] == 6 and metadata["drifted_files"] == 1
    # One run of both days: DAY2's correction is new, the rest of its reading copies duplicates.
    assert (metadata["curated_new"], metadata["curated_updated"]) == (len(day1_rows(lake)) + 2, 0)
    assert (metadata["duplicates_in_batch"], metadata["dagster/row_count"]) == (3, metadata["curated_new"])
