"""`iot-lake import`: real series (NAB's AWS CloudWatch files, and imperfect CSV and Parquet files) landed
as Firehose delivers telemetry, registered in the historian, and curated by the real landing and Spark path."""

from __future__ import annotations

import csv
import gzip
import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
import sqlalchemy as sa
from click.testing import CliRunner
from deltalake import DeltaTable

from iot_lake.cli import main
from iot_lake.curated.records import Record, parse_line
from iot_lake.curated.registries import load_registry
from iot_lake.curated.telemetry_job import CURATED_TELEMETRY, curate_hour
from iot_lake.curated.typical import RegistryIndex, parse_typical
from iot_lake.fleet import METRICS
from iot_lake.lake import TELEMETRY_PREFIX, Lake, telemetry_hour_of_key
from iot_lake.simulate.deliveries import SimConfig
from iot_lake.simulate.historian import seed_historian
from iot_lake.simulate.runner import Simulator
from iot_lake.sources.historian import create_engine, device_metrics, devices, land_registry, sites
from iot_lake.sources.importer import NEW_METRIC_RANGE, week_shift_ms
from iot_lake.sources.telemetry import block_lines, land_inventory
from tests.iam_audit import SETUP_KEY
from tests.unavailable import unavailable

NAB = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "nab-dev"
CPU = "data/realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv"  # 4032 5-minute points from 2014-02-14 14:30 (a Friday)
NETWORK = "data/realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv"  # 1243 points over four days
DISK = "data/realAWSCloudwatch/ec2_disk_write_bytes_1ef3de.csv"  # repeats 03:00 twelve times on 2014-03-09 (US DST)
START = date(2026, 11, 16)  # a Monday
WEEK = timedelta(days=7)
FIREHOSE_NAME = re.compile(
    r"^landing/telemetry/\d{4}/\d{2}/\d{2}/\d{2}/iot-lake-import-1-\d{4}(-\d{2}){5}-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\.gz$"
)


def nab(name: str) -> Path:
    path = NAB / name
    if not path.exists():
        unavailable(
            f"the NAB corpus is not at {NAB} (../shared/datasets/nab-dev from the repo)", "the NAB import tests"
        )
    return path


def invoke(*args: str):
    return CliRunner(env={"COLUMNS": "200"}).invoke(main, ["import", *map(str, args)])


def run_import(tmp_path: Path, path: Path, *args: str, lake: str | None = None) -> dict:
    lake = lake or str(tmp_path / "lake")
    result = invoke(path, "--lake", lake, "--db", historian(tmp_path), "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def historian(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'historian.sqlite'}"


def write_csv(path: Path, rows: list[list], header=("timestamp", "value")) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def records(lake: Lake, tmp_path: Path, day: date) -> list[Record]:
    """Every landed line as the curated layer reads it, with the registry snapshot landed for ``day``."""
    engine = create_engine(historian(tmp_path))
    land_registry(lake, engine, day)
    engine.dispose()
    registry = load_registry(lake, day)
    parsed = []
    for obj in lake.list(TELEMETRY_PREFIX):
        for line in gzip.decompress(lake.read_bytes(obj.key)).decode().splitlines():
            parsed.append(parse_line(line, registry, telemetry_hour_of_key(obj.key)))
    return parsed


def objects(lake: Lake) -> dict[str, bytes]:
    return {o.key: lake.read_bytes(o.key) for o in lake.list(TELEMETRY_PREFIX)}


def test_a_nab_series_lands_as_firehose_delivers_it(tmp_path):
    path = nab(CPU)
    out = run_import(tmp_path, path, "--device", "nab-cpu-24ae8d", "--metric", "cpu_utilization", "--unit", "%")
    assert out["rejected"] == 0 and out["rows"] == out["read"] == 4032
    assert (out["device_id"], out["metric"], out["site_id"], out["unit"]) == (
        "nab-cpu-24ae8d",
        "cpu_utilization",
        "site-import",
        "%",
    )
    # Without --start the series keeps its own times.
    assert out["shift_seconds"] == 0 and out["first"] == "2014-02-14T14:30:00+00:00"
    assert out["last"] == "2014-02-28T14:25:00+00:00"

    lake = Lake(str(tmp_path / "lake"))
    assert sorted(objects(lake)) == sorted(out["objects"])
    assert all(FIREHOSE_NAME.match(key) for key in out["objects"])
    assert len(out["objects"]) == 14 * 24 + 1  # every arrival hour from 14:00 on the first day to 14:00 two weeks on
    parsed = records(lake, tmp_path, date(2014, 2, 14))
    assert all(isinstance(r, Record) for r in parsed), [r for r in parsed if not isinstance(r, Record)][:3]
    with path.open() as f:
        expected = [
            (datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC), float(row["value"]))
            for row in csv.DictReader(f)
        ]
    assert sorted((r.event_ts, r.value) for r in parsed) == expected
    assert {(r.unit, r.reported_unit, r.site_id) for r in parsed} == {("%", "%", "site-import")}
    assert len({r.message_id for r in parsed}) == 4032
    for obj_key in out["objects"]:  # each record in the object of the hour IoT Core received it
        hour = telemetry_hour_of_key(obj_key)
        for line in gzip.decompress(lake.read_bytes(obj_key)).decode().splitlines():
            record = json.loads(line)
            received = datetime.fromisoformat(record["ingested_at"])
            assert hour <= received < hour + timedelta(hours=1)
            assert received > datetime.fromisoformat(record["ts"])
            assert list(record) == [
                "device_id",
                "site_id",
                "metric",
                "value",
                "unit",
                "ts",
                "message_id",
                "ingested_at",
            ]


@pytest.mark.parametrize("start", [START + timedelta(days=d) for d in range(7)] + [date(2010, 1, 1)])
def test_start_shifts_whole_weeks_keeping_weekday_and_time_of_day(start):
    first = datetime(2014, 2, 14, 14, 30, tzinfo=UTC)
    shift = timedelta(milliseconds=week_shift_ms(int(first.timestamp() * 1000), start))
    shifted = first + shift
    assert shift % WEEK == timedelta(0)
    begin = datetime(start.year, start.month, start.day, tzinfo=UTC)
    assert begin <= shifted < begin + WEEK
    assert (shifted.weekday(), shifted.time()) == (first.weekday(), first.time())


def test_start_through_the_cli_on_a_nab_series(tmp_path):
    out = run_import(
        tmp_path, nab(CPU), "--device", "nab-cpu", "--metric", "cpu_utilization", "--unit", "%", "--start", "2026-11-16"
    )
    first, last = datetime.fromisoformat(out["first"]), datetime.fromisoformat(out["last"])
    assert first == datetime(2026, 11, 20, 14, 30, tzinfo=UTC)  # Friday 14:30, as on 2014-02-14
    assert out["shift_seconds"] == (first - datetime(2014, 2, 14, 14, 30, tzinfo=UTC)).total_seconds()
    assert out["shift_seconds"] % WEEK.total_seconds() == 0
    assert last - first == datetime(2014, 2, 28, 14, 25) - datetime(2014, 2, 14, 14, 30)
    assert out["objects"][0].startswith("landing/telemetry/2026/11/20/14/")
    parsed = records(Lake(str(tmp_path / "lake")), tmp_path, date(2026, 11, 20))
    assert min(r.event_ts for r in parsed) == first and max(r.event_ts for r in parsed) == last
    bad = invoke(nab(CPU), "--device", "x", "--metric", "m", "--unit", "%", "--start", "16/11/2026")
    assert bad.exit_code == 2 and "'16/11/2026' is not a day (YYYY-MM-DD)" in bad.output


def test_irregular_timestamps_in_any_notation(tmp_path):
    t0 = datetime(2026, 3, 28, 22, 55, 13, 250000, tzinfo=UTC)
    gaps = [7, 50 * 60, 61, 3599, 5, 2 * 3600 + 17, 30, 900]
    times = [t0]
    for gap in gaps:
        times.append(times[-1] + timedelta(seconds=gap))
    notations = [
        lambda t: t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],  # naive: UTC
        lambda t: t.isoformat().replace("+00:00", "Z"),
        lambda t: t.astimezone(ZoneInfo("Europe/Berlin")).isoformat(),  # across its DST change
        lambda t: t.astimezone(ZoneInfo("America/Sao_Paulo")).isoformat(timespec="milliseconds"),
    ]
    rows = [[notations[i % 4](t), "x", 20.0 + i] for i, t in enumerate(times)]
    path = write_csv(tmp_path / "irregular.csv", list(reversed(rows)), header=("Time", "note", "Reading"))
    out = run_import(tmp_path, path, "--device", "pump-7", "--metric", "temperature", "--unit", "degC")
    assert (out["timestamp_column"], out["value_column"]) == ("Time", "Reading")
    assert out["rows"] == len(times) and out["rejected"] == 0
    parsed = records(Lake(str(tmp_path / "lake")), tmp_path, t0.date())
    assert sorted((r.event_ts, r.value) for r in parsed) == [(t, 20.0 + i) for i, t in enumerate(times)]
    arrival_hours = {(t + timedelta(seconds=1)).replace(minute=0, second=0, microsecond=0) for t in times}
    assert sorted(telemetry_hour_of_key(k) for k in out["objects"]) == sorted(arrival_hours)

    epoch_s = write_csv(tmp_path / "epoch_s.csv", [[int(t.timestamp()), 1.0] for t in times])
    epoch_ms = write_csv(tmp_path / "epoch_ms.csv", [[int(t.timestamp() * 1000), 1.0] for t in times])
    for path, first in ((epoch_s, t0.replace(microsecond=0)), (epoch_ms, t0)):
        got = run_import(tmp_path, path, "--device", "pump-8", "--metric", "temperature", "--unit", "degC")
        assert datetime.fromisoformat(got["first"]) == first and got["rows"] == len(times)


def test_hourly_cadence_lands_one_object_per_hour(tmp_path):
    t0 = datetime(2026, 11, 18, 0, 0, tzinfo=UTC)
    rows = [[(t0 + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ"), 400 + h] for h in range(48)]
    out = run_import(
        tmp_path, write_csv(tmp_path / "hourly.csv", rows), "--device", "meter-1", "--metric", "power", "--unit", "kW"
    )
    assert out["rows"] == 48 and len(out["objects"]) == 48
    assert [telemetry_hour_of_key(k) for k in out["objects"]] == [t0 + timedelta(hours=h) for h in range(48)]
    lake = Lake(str(tmp_path / "lake"))
    assert all(len(gzip.decompress(b).splitlines()) == 1 for b in objects(lake).values())


def test_bad_rows_are_reported_with_their_row_and_reason(tmp_path):
    path = tmp_path / "faulty.csv"
    path.write_text(
        "timestamp,value\n"  # line 1
        "2026-11-18 00:00:00,1.5\n"
        "yesterday,2.0\n"
        ",2.5\n"
        "2026-11-18 00:10:00,abc\n"
        "2026-11-18 00:15:00,NaN\n"
        "2026-11-18 00:20:00,inf\n"
        "2026-11-18 00:25:00,\n"
        "2026-11-18 00:00:00,9.9\n"  # line 9: the time of line 2 again
        "2026-11-18 00:30:00,3.0,extra\n"
        "\n"  # a blank line is no row
        "2026-02-30 00:35:00,3.5\n"  # line 12
        "2026-11-18 00:40:00,4.0\n"
    )
    out = run_import(tmp_path, path, "--device", "dev-x", "--metric", "vibration", "--unit", "mm/s")
    assert (out["rows"], out["rejected"], out["read"]) == (2, 9, 11)
    assert [(r["row"], r["reason"]) for r in out["rejected_rows"]] == [
        (3, "not a time: 'yesterday'"),
        (4, "missing timestamp"),
        (5, "not a number: 'abc'"),
        (6, "not a finite number: 'NaN'"),
        (7, "not a finite number: 'inf'"),
        (8, "missing value"),
        (9, "duplicate timestamp (row 2 has it)"),
        (10, "3 fields where the header has 2"),
        (12, "not a time: '2026-02-30 00:35:00'"),
    ]
    # A value the metric cannot take is rejected here, not landed to be quarantined.
    path.write_text("timestamp,value\n2026-11-18 00:00:00,1.5\n2026-11-18 00:05:00,-3\n")
    out = run_import(tmp_path, path, "--device", "dev-x", "--metric", "vibration", "--unit", "mm/s")
    assert out["rejected_rows"] == [{"row": 3, "reason": "outside the range of the metric, [0, 100] mm/s"}]

    table = invoke(
        path,
        "--device",
        "dev-x",
        "--metric",
        "vibration",
        "--unit",
        "mm/s",
        "--lake",
        tmp_path / "lake",
        "--db",
        historian(tmp_path),
    )
    assert table.exit_code == 0, table.output
    assert "rejected rows" in table.output and "outside the range of the metric" in table.output


def test_no_good_rows_or_a_missing_file_or_column_fail_clearly(tmp_path):
    lake, db = tmp_path / "lake", historian(tmp_path)
    empty = write_csv(tmp_path / "bad.csv", [["soon", 1], ["2026-11-18 00:00", "n/a"]])
    result = invoke(empty, "--device", "dev-x", "--metric", "power", "--unit", "kW", "--lake", lake, "--db", db)
    assert result.exit_code == 1
    assert "no good rows in" in result.output and "row 2: not a time: 'soon'" in result.output
    assert "row 3: not a number: 'n/a'" in result.output
    assert not list(Lake(str(lake)).list(TELEMETRY_PREFIX)) and not (tmp_path / "historian.sqlite").exists()
    # Values the metric cannot take leave no good row either: the registry is left as it was.
    negative = write_csv(tmp_path / "negative.csv", [["2026-11-18 00:00", -1], ["2026-11-18 00:05", -2]])
    result = invoke(negative, "--device", "dev-x", "--metric", "power", "--unit", "kW", "--lake", lake, "--db", db)
    assert result.exit_code == 1 and "row 3: outside the range of the metric, [0, 1000] kW" in result.output
    with create_engine(db).connect() as conn:
        assert conn.execute(sa.select(devices)).all() == conn.execute(sa.select(device_metrics)).all() == []
    assert not list(Lake(str(lake)).list(TELEMETRY_PREFIX))

    good = write_csv(tmp_path / "good.csv", [["2026-11-18 00:00", 1]], header=("when", "kw", "kvar"))
    options = {"--device": "dev-x", "--metric": "power", "--unit": "kW", "--lake": lake, "--db": db}
    for path, changed, message in [
        (tmp_path / "nope.csv", {}, "does not exist"),
        (good, {"--timestamp-column": "ts"}, "no column 'ts' in the file (columns: when, kw, kvar)"),
        (good, {}, "cannot tell which column holds the timestamps"),
        (good, {"--timestamp-column": "when"}, "cannot tell which column holds the values"),
        (good, {"--timestamp-column": "when", "--value-column": "watts"}, "no column 'watts'"),
        (good, {"--device": "../etc"}, "invalid device id '../etc'"),
        (good, {"--metric": "CPU"}, "invalid metric id 'CPU'"),
        (good, {"--unit": "m s"}, "invalid unit 'm s'"),
    ]:
        result = invoke(path, *[x for kv in {**options, **changed}.items() for x in kv])
        assert result.exit_code == 2 and message in result.output, (changed, result.output)
    twice = write_csv(tmp_path / "twice.csv", [["2026-11-18 00:00", 1, 2]], header=("timestamp", "value", "value"))
    result = invoke(twice, *[x for kv in options.items() for x in kv])
    assert result.exit_code == 1 and "the header names a column twice (timestamp, value, value)" in result.output
    (tmp_path / "series.txt").write_text("timestamp,value\n")
    result = invoke(
        tmp_path / "series.txt", "--device", "d", "--metric", "m", "--unit", "u", "--lake", lake, "--db", db
    )
    assert result.exit_code == 1 and "only .csv and .parquet files can be imported" in result.output


def test_parquet_input(tmp_path):
    times = pd.date_range("2026-11-18 06:00", periods=30, freq="10min", tz="Europe/Amsterdam")
    values = [float(i) for i in range(30)]
    values[4] = float("nan")
    table = pa.table(
        {"event_time": pa.array(list(times)), "pressure_kpa": pa.array(values, pa.float64()), "site": ["a"] * 30}
    )
    path = tmp_path / "series.parquet"
    pq.write_table(table, path)
    out = run_import(
        tmp_path, path, "--device", "press-1", "--metric", "pressure", "--unit", "kPa", "--value-column", "pressure_kpa"
    )
    assert out["timestamp_column"] == "event_time"  # the one timestamp-typed column
    assert (out["rows"], out["rejected_rows"]) == (29, [{"row": 5, "reason": "missing value"}])
    assert out["first"] == "2026-11-18T05:00:00+00:00"  # Amsterdam is UTC+1 in November

    epoch = tmp_path / "epoch.parquet"
    pq.write_table(
        pa.table(
            {"ts": pa.array([1_795_000_000_000 + i * 60_000 for i in range(5)], pa.int64()), "value": [1, 2, 3, 4, 5]}
        ),
        epoch,
    )
    out = run_import(tmp_path, epoch, "--device", "press-2", "--metric", "pressure", "--unit", "psi")
    assert out["rows"] == 5 and out["first"] == datetime.fromtimestamp(1_795_000_000, tz=UTC).isoformat()
    assert out["canonical_unit"] == "kPa"  # a known metric keeps its canonical unit; psi converts to it
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    result = invoke(
        tmp_path / "broken.parquet",
        "--device",
        "d",
        "--metric",
        "power",
        "--unit",
        "kW",
        "--lake",
        tmp_path / "lake",
        "--db",
        historian(tmp_path),
    )
    assert result.exit_code == 1 and "is not a readable Parquet file" in result.output


def test_reimport_writes_the_same_objects_with_the_same_bytes(tmp_path):
    path = nab(DISK)
    args = ("--device", "nab-disk", "--metric", "disk_write_bytes", "--unit", "B", "--start", "2026-11-16")
    first = run_import(tmp_path, path, *args)
    assert first["rejected"] == 11  # the 12 rows stamped 2014-03-09 03:00: the first is kept
    lake = Lake(str(tmp_path / "lake"))
    before = objects(lake)
    again = run_import(tmp_path, path, *args)
    assert objects(lake) == before  # the same keys, byte for byte, and nothing added
    assert again["registered"] == {"site": False, "device": False, "metric": False}
    assert {k: v for k, v in again.items() if k != "registered"} == {
        k: v for k, v in first.items() if k != "registered"
    }


def _dump(url: str) -> dict[str, list]:
    with create_engine(url).connect() as conn:
        return {t.name: sorted(map(tuple, conn.execute(sa.select(t)).all())) for t in (sites, devices, device_metrics)}


def test_registry_gets_what_is_missing_and_nothing_existing_changes(tmp_path):
    db = historian(tmp_path)
    sim = Simulator(SimConfig(devices=3, seed=5, history_days=0), Lake(str(tmp_path / "sim")))
    seed_historian(db, sim.fleet, sim.cfg, date(2026, 11, 16))
    seeded = _dump(db)
    rows = [[f"2026-11-18 00:{m:02d}:00", 70.0 + m] for m in range(0, 60, 5)]
    path = write_csv(tmp_path / "series.csv", rows)

    # A new device with a new metric, on the default site: three rows, the metric in its own unit, widely ranged.
    out = run_import(tmp_path, path, "--device", "nab-1", "--metric", "cpu_utilization", "--unit", "%")
    assert out["registered"] == {"site": True, "device": True, "metric": True}
    now = _dump(db)
    added = {t: sorted(set(now[t]) - set(seeded[t])) for t in now}
    assert all(set(seeded[t]) <= set(now[t]) for t in now)
    assert [r[:5] for r in added["sites"]] == [("site-import", "site-import", 0.0, 0.0, "UTC")]
    assert [r[:5] for r in added["devices"]] == [("nab-1", "site-import", "imported", "-", date(2026, 11, 18))]
    assert [r[:6] for r in added["device_metrics"]] == [("nab-1", "cpu_utilization", "%", "%", *NEW_METRIC_RANGE)]

    # An existing device keeps its site and rows; a metric it lacks is added with the fleet's unit and range.
    existing = sim.fleet.devices[0]
    out = run_import(tmp_path, path, "--device", existing.device_id, "--metric", "temperature", "--unit", "degF")
    assert out["registered"] == {"site": False, "device": False, "metric": False}
    assert out["site_id"] == existing.site_id and out["canonical_unit"] == "degC"
    run_import(tmp_path, path, "--device", existing.device_id, "--metric", "cpu_utilization", "--unit", "%")
    after = _dump(db)
    assert after["sites"] == now["sites"] and after["devices"] == now["devices"]
    assert sorted(set(after["device_metrics"]) - set(now["device_metrics"]))[0][:6] == (
        existing.device_id,
        "cpu_utilization",
        "%",
        "%",
        *NEW_METRIC_RANGE,
    )
    # A new device with a known metric: the fleet's canonical unit and physical range.
    run_import(
        tmp_path, path, "--device", "boiler-9", "--metric", "temperature", "--unit", "degF", "--site", "site-north"
    )
    spec = METRICS["temperature"]
    with create_engine(db).connect() as conn:
        row = conn.execute(sa.select(device_metrics).where(device_metrics.c.device_id == "boiler-9")).mappings().one()
        assert (
            conn.execute(sa.select(devices.c.site_id).where(devices.c.device_id == "boiler-9")).scalar() == "site-north"
        )
    assert (row["unit"], row["canonical_unit"], row["min_value"], row["max_value"]) == (
        "degF",
        "degC",
        spec.min_value,
        spec.max_value,
    )

    # Contradictions fail before anything is written.
    unchanged = _dump(db)
    for args, message in [
        (
            ("--device", existing.device_id, "--site", "site-import"),
            f"device {existing.device_id} is registered at site {existing.site_id}",
        ),
        (
            ("--device", "boiler-10", "--metric", "temperature", "--unit", "bar"),
            "temperature is registered in degC, and bar does not convert to it",
        ),
    ]:
        options = {"--metric": "cpu_utilization", "--unit": "%", **dict(zip(args[::2], args[1::2]))}
        result = invoke(path, *[x for kv in options.items() for x in kv], "--lake", tmp_path / "lake", "--db", db)
        assert result.exit_code == 1 and message in result.output, result.output
    assert _dump(db) == unchanged


def test_imported_lines_take_the_curated_fast_path(tmp_path):
    """The typical-line path accepts every imported line, with parse_line's verdicts (a new unit included)."""
    out = run_import(
        tmp_path, nab(CPU), "--device", "nab-cpu", "--metric", "cpu_utilization", "--unit", "%", "--start", "2026-11-16"
    )
    lake = Lake(str(tmp_path / "lake"))
    slow = records(lake, tmp_path, date(2026, 11, 20))
    registry = load_registry(lake, date(2026, 11, 20))
    lines = [line for key in out["objects"] for line in gzip.decompress(lake.read_bytes(key)).splitlines()]
    typical = parse_typical(block_lines(b"\n".join(lines)), RegistryIndex.of(registry))
    assert len(typical.rest) == 0 and typical.records.num_rows == out["rows"]
    fast = typical.records.to_pylist()
    assert [(r["event_ts"], r["value"], r["unit"], r["message_id"]) for r in fast] == [
        (r.event_ts, r.value, r.unit, r.message_id) for r in slow
    ]


def test_the_landing_sensor_requests_a_run_per_imported_hour(tmp_path):
    # The control plane, imported here: the other tests of the importer need none of it.
    from dagster import DagsterInstance, build_sensor_context

    from resources.lake import LakeResource
    from sensors.landing import landing_sensor

    def tick(lake: str):
        resources = {"lake": LakeResource(root=lake)}
        return landing_sensor(build_sensor_context(instance=DagsterInstance.ephemeral(), resources=resources))

    args = ("--device", "nab-net", "--metric", "network_in", "--unit", "B")
    shifted = run_import(tmp_path, nab(NETWORK), *args, "--start", "2026-11-16")
    result = tick(str(tmp_path / "lake"))
    assert sorted(r.partition_key for r in result.run_requests) == sorted(
        f"{telemetry_hour_of_key(k):%Y-%m-%d-%H:%M}" for k in shifted["objects"]
    )
    assert {(r.job_name, r.tags["iot_lake/new_objects"]) for r in result.run_requests} == {
        ("telemetry_hourly_job", "1")
    }
    # Left at its own time (2013), the series is outside the partitions: recorded, never run.
    run_import(tmp_path, nab(NETWORK), *args, lake=str(tmp_path / "as-recorded"))
    result = tick(str(tmp_path / "as-recorded"))
    assert result.run_requests == [] and len(result.asset_events) == len(shifted["objects"])
    reasons = {e.metadata["unreadable_reason"].value for e in result.asset_events}
    assert all(r.startswith("outside the partitions of telemetry_hourly_job (2013-10-") for r in reasons)


def test_imported_hours_are_inventoried_and_curated_with_every_row_accounted(tmp_path, spark):
    path = nab(CPU)
    args = ("--device", "nab-cpu", "--metric", "cpu_utilization", "--unit", "%", "--start", "2026-11-16")
    out = run_import(tmp_path, path, *args)
    lake = Lake(str(tmp_path / "lake"))
    engine = create_engine(historian(tmp_path))
    land_registry(lake, engine, date(2026, 11, 20))  # what landing/device_registry does for the first day
    engine.dispose()
    hours = [telemetry_hour_of_key(k) for k in out["objects"]]
    inventories = {h: land_inventory(lake, h) for h in hours}
    assert sum(i.totals["records"] for i in inventories.values()) == out["rows"]
    assert all(i.totals["malformed_lines"] == i.totals["unreadable_objects"] == 0 for i in inventories.values())

    first_hours = hours[:3]
    reports = [curate_hour(spark, lake, h) for h in first_hours]
    landed = [i.totals["records"] for h, i in inventories.items() if h in first_hours]
    assert [r.accounted for r in reports] == [True] * 3
    assert [(r.curated_new, r.quarantined, r.duplicates_in_batch) for r in reports] == [(n, 0, 0) for n in landed]
    curated = DeltaTable(lake.path(CURATED_TELEMETRY)).to_pyarrow_table().to_pylist()
    assert len(curated) == sum(landed) == 6 + 12 + 12  # from 14:30 on the first hour, then 12 an hour
    assert {(c["device_id"], c["metric"], c["site_id"], c["unit"]) for c in curated} == {
        ("nab-cpu", "cpu_utilization", "site-import", "%")
    }
    with path.open() as f:
        head = [float(row["value"]) for row, _ in zip(csv.DictReader(f), range(30))]
    assert [c["value"] for c in sorted(curated, key=lambda c: c["event_ts"])] == head

    # Re-importing lands the same records: the curated job finds every one already there.
    run_import(tmp_path, path, *args)
    land_inventory(lake, first_hours[1])
    again = curate_hour(spark, lake, first_hours[1])
    assert (again.curated_new, again.duplicates_existing, again.accounted) == (0, 12, True)
    assert DeltaTable(lake.path(CURATED_TELEMETRY)).to_pyarrow_table().num_rows == len(curated)


def test_an_s3_lake_gets_the_same_objects(tmp_path, lake_root, monkeypatch):
    # A person runs the import with their own credentials, not as the control plane's role: it lands
    # objects as Firehose would, which the Dagster role may not write (the IAM audit checks that).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", SETUP_KEY)
    s3fs.S3FileSystem.clear_instance_cache()
    path = nab(NETWORK)
    args = ("--device", "nab-net", "--metric", "network_in", "--unit", "B", "--start", "2026-11-16")
    on_s3 = run_import(tmp_path, path, *args, lake=lake_root)
    local = run_import(tmp_path, path, *args)
    assert on_s3["objects"] == local["objects"] and on_s3["rows"] == 1243
    assert objects(Lake(lake_root)) == objects(Lake(str(tmp_path / "lake")))
    hour = telemetry_hour_of_key(on_s3["objects"][1])
    assert land_inventory(Lake(lake_root), hour).totals["records"] == 12
    no_db = invoke(path, *args, "--lake", lake_root)
    assert no_db.exit_code == 2 and "an s3:// lake has no embedded historian: pass --db" in no_db.output
