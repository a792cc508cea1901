"""The streaming scorer (iot_lake.stream): landing records -> cases within a poll, the same cases the
hourly deviations asset opens when it re-scores the hour, on simulated faulty landings curated on Sail."""

from __future__ import annotations

import gzip
import json
import shlex
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa
from dagster import materialize
from deltalake import DeltaTable, write_deltalake

from assets.ops.deviations import DEVIATIONS_TABLE, FORECASTS_TABLE, deviations
from iot_lake.cases.schema import case_history, outbox
from iot_lake.cases.store import CaseStore
from iot_lake.curated.aggregates import refresh_aggregates
from iot_lake.curated.records import Record, parse_line
from iot_lake.curated.registries import load_registry
from iot_lake.curated.telemetry_job import CURATED_TELEMETRY, curate_batch
from iot_lake.lake import Lake, telemetry_hour_prefix
from iot_lake.simulate.deliveries import SimConfig
from iot_lake.simulate.historian import seed_historian
from iot_lake.simulate.runner import Simulator
from iot_lake.sources.historian import create_engine, land_registry
from iot_lake.sources.telemetry import land_inventory
from iot_lake.stream.scorer import StreamScorer, minute_means
from iot_lake.stream.service import run
from iot_lake.stream.sources import KinesisReader, LandingWatcher
from resources.cases import CasesResource
from resources.lake import LakeResource
from tests.conftest import START

LIVE = START + timedelta(hours=2)  # the hour in progress
NOW = LIVE + timedelta(minutes=59, seconds=30)
OFFSET = 50.0  # degC on re-sent copies of a series' readings: the minutes' means move half as much


def _land_registry(lake: Lake, sim: Simulator, root, day) -> None:
    url = f"sqlite:///{root}/historian.sqlite"
    seed_historian(url, sim.fleet, sim.cfg, day)
    engine = create_engine(url)
    land_registry(lake, engine, day)
    engine.dispose()


def _records(lines: list[str], registry, hour: datetime) -> list[Record]:
    return [r for r in (parse_line(line, registry, hour) for line in lines) if isinstance(r, Record)]


def _hour_lines(lake: Lake, hour: datetime) -> list[str]:
    out = []
    for obj in lake.list(telemetry_hour_prefix(hour)):
        try:
            out += gzip.decompress(lake.read_bytes(obj.key)).decode("utf-8", "replace").splitlines()
        except EOFError:  # a truncated object (the simulator's): its lines are read as far as they go
            continue
    return out


def _incident_lines(records: list[Record], since: datetime, ingested: datetime) -> tuple[str, str, list[str]]:
    """Copies (new message ids) of the first degC temperature series' readings since ``since``, OFFSET up."""
    temps = sorted(
        (r for r in records if r.metric == "temperature" and r.reported_unit == "degC" and r.event_ts >= since),
        key=lambda r: (r.device_id, r.event_ts),
    )
    device = temps[0].device_id
    lines = [
        json.dumps(
            {
                "device_id": r.device_id,
                "site_id": r.site_id,
                "metric": r.metric,
                "value": round(r.reported_value + OFFSET, 4),
                "unit": "degC",
                "ts": r.event_ts.isoformat().replace("+00:00", "Z"),
                "message_id": str(uuid.uuid4()),
                "ingested_at": ingested.isoformat().replace("+00:00", "Z"),
            }
        )
        for r in temps
        if r.device_id == device
    ]
    return device, "temperature", lines


def _forecasts(actuals: pd.DataFrame, origin: datetime) -> pd.DataFrame:
    """A good forecast of the 5-minute buckets (their own means), its band a few readings' noise wide."""
    buckets = actuals.assign(bucket_start=actuals["bucket_start"].dt.floor("5min"))
    yhat = buckets.groupby(["device_id", "metric", "bucket_start"], as_index=False)["mean"].mean()
    spread = actuals.groupby(["device_id", "metric"])["mean"].std().rename("sd").reset_index()
    out = yhat.merge(spread, on=["device_id", "metric"]).rename(columns={"mean": "yhat"})
    half = np.maximum(out["sd"].to_numpy(), 0.5)
    for level, z in (("80", 1.28), ("95", 1.96)):
        out[f"lo_{level}"], out[f"hi_{level}"] = out["yhat"] - z * half, out["yhat"] + z * half
    out["bucket_start"] = out["bucket_start"].astype("datetime64[us, UTC]")
    return out.drop(columns="sd").assign(
        origin=pd.Timestamp(origin).as_unit("us"), model_version="test-v1", origin_date=origin.date()
    )


def _curate(spark, lake: Lake, hours: list[datetime]) -> None:
    """What the telemetry run does with landing hours: curate them, then their 1- and 5-minute aggregates."""
    for hour in hours:
        land_inventory(lake, hour)
    reports = curate_batch(spark, lake, hours)
    dates = sorted({d for r in reports for d in r.event_dates})
    refresh_aggregates(spark, lake, hours, dates, CURATED_TELEMETRY)


@pytest.fixture(scope="module")
def live_lake(tmp_path_factory, spark):
    """Three hours landed (with the simulator's bad lines, duplicates, late and truncated objects), curated
    on Sail, a forecast, and the deviations of the two hours before the one in progress."""
    root = tmp_path_factory.mktemp("stream")
    lake = Lake(str(root / "lake"))
    sim = Simulator(SimConfig(devices=3, seed=11, interval_s=20, anomaly_rate=0.0, truncated_rate=0.05), lake)
    _land_registry(lake, sim, root, START.date())
    sim.backfill(START, LIVE + timedelta(hours=1))
    hours = [START + timedelta(hours=h) for h in range(3)]
    _curate(spark, lake, hours)
    actuals = DeltaTable(lake.uri("curated/telemetry_1min")).to_pandas()
    write_deltalake(
        lake.uri(FORECASTS_TABLE),
        pa.Table.from_pandas(_forecasts(actuals, START - timedelta(hours=1)), preserve_index=False),
        partition_by=["origin_date"],
    )
    cases_url = f"sqlite:///{root}/cases.sqlite"
    resources = {
        "lake": LakeResource(root=lake.url),
        "cases": CasesResource(url=cases_url, lake_root=lake.url),
    }
    for hour in hours[:2]:
        materialize([deviations], partition_key=hour.strftime("%Y-%m-%d-%H:%M"), resources=resources)
    return lake, cases_url, resources


def _stream_once(lake: Lake, url: str) -> tuple[StreamScorer, list]:
    reports = []
    with CaseStore(url) as store:
        scorer = StreamScorer(lake, store, clock=lambda: NOW)
        source = LandingWatcher(lake, scorer.registry, clock=lambda: NOW)
        run(source, scorer, once=True, on_step=reports.append)
    return scorer, reports


def _store_state(url: str) -> tuple:
    with CaseStore(url) as store:
        cases = [(c.case_key, c.status, c.severity) for c in store.list_cases()]
        with store.engine.connect() as conn:
            events = conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar()
            history = conn.execute(sa.select(sa.func.count()).select_from(case_history)).scalar()
    return cases, events, history


def test_a_landed_deviation_opens_the_case_the_hourly_asset_keeps(live_lake, spark):
    lake, url, resources = live_lake
    registry = load_registry(lake, LIVE.date())
    before = {c[0] for c in _store_state(url)[0]}
    # Poison beside the incident: malformed, non-finite, unknown device, and a gzip stream cut short.
    junk = "\n".join(['{"device_id": "dev-0001", "metric"', '{"value": NaN}', '{"device_id": "nobody"}', "x" * 5000])
    lake.write_bytes(f"{telemetry_hour_prefix(LIVE)}/junk-{uuid.uuid4()}.gz", gzip.compress(junk.encode()))
    lake.write_bytes(f"{telemetry_hour_prefix(LIVE)}/cut-{uuid.uuid4()}.gz", gzip.compress(junk.encode() * 50)[:300])
    records = _records(_hour_lines(lake, LIVE), registry, LIVE)
    device, metric, lines = _incident_lines(records, LIVE + timedelta(minutes=45), NOW - timedelta(seconds=5))
    key = f"{telemetry_hour_prefix(LIVE)}/iot-lake-telemetry-1-{LIVE:%Y-%m-%d-%H}-59-00-{uuid.uuid4()}.gz"
    lake.write_bytes(key, gzip.compress(("\n".join(lines) + "\n").encode()))

    scorer, reports = _stream_once(lake, url)
    assert reports[0].rejected >= 4  # the junk was judged like the curated job judges it, and passed over
    cases, events, history = _store_state(url)
    opened = [c for c in cases if c[0] not in before]
    assert [c[0].split("|")[:2] for c in opened] == [[device, metric]]
    start = datetime.fromisoformat(opened[0][0].split("|")[2])
    assert LIVE + timedelta(minutes=45) <= start <= LIVE + timedelta(minutes=50)
    streamed = scorer.last_scored[LIVE].sort_values(["device_id", "metric", "ts"]).reset_index(drop=True)
    # The series' states at the hour's start: those the asset's run of the hour before kept.
    assert scorer.hours[LIVE].built.startswith("12 series' states kept")  # 3 devices, 4 metrics

    # A restart reads the window again: nothing new opens, no event is sent twice.
    _stream_once(lake, url)
    assert _store_state(url) == (cases, events, history)

    # The system of record: the landing sensor's run curates the hour with the object, the deviations
    # asset re-scores it, and the case is the stream's case, not a second one.
    _curate(spark, lake, [LIVE])
    materialize([deviations], partition_key=LIVE.strftime("%Y-%m-%d-%H:%M"), resources=resources)
    assert [c[0] for c in _store_state(url)[0]] == [c[0] for c in cases]
    stored = DeltaTable(lake.uri(DEVIATIONS_TABLE)).to_pandas()
    stored = stored[stored["ts"] >= pd.Timestamp(LIVE)].sort_values(["device_id", "metric", "ts"])
    stored = stored.reset_index(drop=True)
    # The same minutes, means, bands and flags: the stream ran the asset's scorer on the asset's inputs.
    assert len(stored) == len(streamed)
    pd.testing.assert_frame_equal(
        streamed[["device_id", "metric", "ts", "is_anomalous"]].astype({"ts": "datetime64[us, UTC]"}),
        stored[["device_id", "metric", "ts", "is_anomalous"]].astype({"ts": "datetime64[us, UTC]"}),
    )
    for column in ("actual", "expected_hi", "score"):
        np.testing.assert_allclose(streamed[column], stored[column], rtol=1e-9, atol=1e-9)


def test_minute_means_are_the_curated_aggregates(live_lake):
    """Each minute's mean from the window's records (first copies only) is curated/telemetry_1min's."""
    lake, url, _ = live_lake
    with CaseStore(url) as store:
        scorer = StreamScorer(lake, store, clock=lambda: NOW)
        source = LandingWatcher(lake, scorer.registry, clock=lambda: NOW)
        scorer.add(source.poll())
    ours = minute_means(scorer.records[scorer.records["event_ts"] < pd.Timestamp(LIVE)])
    theirs = DeltaTable(lake.uri("curated/telemetry_1min")).to_pandas()
    theirs = theirs[(theirs["bucket_start"] >= ours["bucket_start"].min()) & (theirs["bucket_start"] < LIVE)]
    joined = ours.merge(theirs, on=["device_id", "metric", "bucket_start"], how="outer", indicator=True)
    assert (joined["_merge"] == "both").all() and len(joined) > 500
    np.testing.assert_allclose(joined["mean_x"], joined["mean_y"], rtol=1e-12)


def test_kinesis_records_open_a_case_from_the_stream_itself(aws, tmp_path):
    """In prod the stream reads the Kinesis data stream Firehose reads (moto's here; the consumer's
    calls are checked against the Dagster role's policy by the ``aws`` fixture)."""
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    scratch, lake = Lake(str(tmp_path / "scratch")), Lake(str(tmp_path / "lake"))
    sim = Simulator(SimConfig(devices=2, seed=5, interval_s=30, anomaly_rate=0.0, truncated_rate=0.0), scratch)
    _land_registry(lake, sim, tmp_path, hour.date())
    sim.backfill(hour - timedelta(hours=1), now)
    lines = [line for h in (hour - timedelta(hours=1), hour) for line in _hour_lines(scratch, h)]
    records = _records(lines, load_registry(lake, hour.date()), hour)
    clean = minute_means(
        pd.DataFrame(
            [(r.device_id, r.site_id, r.metric, r.value, r.event_ts, r.message_id) for r in records],
            columns=["device_id", "site_id", "metric", "value", "event_ts", "message_id"],
        ).astype({"event_ts": "datetime64[us, UTC]"})
    )
    write_deltalake(
        lake.uri(FORECASTS_TABLE),
        pa.Table.from_pandas(_forecasts(clean, hour - timedelta(hours=2)), preserve_index=False),
        partition_by=["origin_date"],
    )
    # On a minute: the case's start is a minute, and the shift must begin on one to be found there.
    since = max(hour, (now - timedelta(minutes=20)).replace(second=0, microsecond=0))
    device, metric, shifted = _incident_lines(records, since, now)

    stream = f"telemetry-{uuid.uuid4().hex[:8]}"
    client = aws.client("kinesis")
    client.create_stream(StreamName=stream, ShardCount=2)
    client.get_waiter("stream_exists").wait(StreamName=stream)
    put = [{"Data": (line + "\n").encode(), "PartitionKey": str(i % 7)} for i, line in enumerate(lines)]
    put.append({"Data": b'{"broken": ', "PartitionKey": "x"})  # a bad record does not stall the shard
    for i in range(0, len(put), 500):
        client.put_records(StreamName=stream, Records=put[i : i + 500])

    url = f"sqlite:///{tmp_path}/cases.sqlite"
    with CaseStore(url) as store:
        scorer = StreamScorer(lake, store)
        reader = KinesisReader(stream, scorer.registry)
        first = scorer.add(reader.poll())
        assert first.rejected >= 1 and first.minutes > 0 and not store.list_cases()
        client.put_records(
            StreamName=stream, Records=[{"Data": line.encode(), "PartitionKey": "s"} for line in shifted]
        )
        scorer.add(reader.poll())
        cases = store.list_cases()
    assert reader.read == len(put) + len(shifted)
    assert [(c.device_id, c.metric) for c in cases] == [(device, metric)]
    assert cases[0].incident_start >= since


def test_the_production_unit_reads_the_stream_its_environment_names(aws, tmp_path, monkeypatch):
    """deploy/systemd/iot-lake-stream.service runs `iot-lake stream` with the environment file, where
    IOT_LAKE_TELEMETRY_STREAM (the CDK stack's IotLakeTelemetryStream output) names its source."""
    from click.testing import CliRunner

    from iot_lake.cli import main

    unit = (Path(__file__).parents[1] / "deploy" / "systemd" / "iot-lake-stream.service").read_text()
    lines = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert lines["EnvironmentFile"] == "/etc/iot-lake/env" and lines["Restart"] == "always"
    argv = shlex.split(lines["ExecStart"])
    assert argv[0] == "/opt/iot-lake/.venv/bin/iot-lake" and argv[1:] == ["stream"]

    stream = f"telemetry-{uuid.uuid4().hex[:8]}"
    aws.client("kinesis").create_stream(StreamName=stream, ShardCount=1)
    aws.client("kinesis").get_waiter("stream_exists").wait(StreamName=stream)
    monkeypatch.setenv("IOT_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("IOT_LAKE_TELEMETRY_STREAM", stream)
    result = CliRunner().invoke(main, [*argv[1:], "--once"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"streaming {stream} into the cases" in result.output  # the stream, not the landing prefix
    assert "0 records (0 lines rejected)" in result.output


def test_the_cli_runs_one_step_on_an_empty_window(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from iot_lake.cli import main

    monkeypatch.setenv("IOT_LAKE_ROOT", str(tmp_path / "lake"))
    result = CliRunner().invoke(main, ["stream", "--once"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "0 records (0 lines rejected), 0 minutes of 0 series scored" in result.output
