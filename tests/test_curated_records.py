"""The curated record contract: every landing line is a Record or a Rejection with a reason."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest

from iot_lake.curated.records import REASONS, Record, Registry, Rejection, parse_line, parse_time
from iot_lake.fleet import METRICS, build_fleet
from iot_lake.lake import TELEMETRY_PREFIX
from iot_lake.simulate.faults import BAD_KINDS, corrupt
from tests.conftest import simulate, truth_objects


def registry_of(fleet) -> Registry:
    return Registry.from_rows(
        [{"device_id": d.device_id, "site_id": d.site_id} for d in fleet.devices],
        [
            {
                "device_id": d.device_id,
                "metric": m.metric,
                "unit": m.unit,
                "canonical_unit": METRICS[m.metric].unit,
                "min_value": METRICS[m.metric].min_value,
                "max_value": METRICS[m.metric].max_value,
            }
            for d in fleet.devices
            for m in d.metrics.values()
        ],
    )


FLEET = build_fleet(20, seed=42)
REGISTRY = registry_of(FLEET)
IMPERIAL = next(d for d in FLEET.devices if d.metrics["temperature"].unit == "degF")
METRIC_DEVICE = next(d for d in FLEET.devices if d.metrics["temperature"].unit == "degC")


def line(**fields) -> str:
    base = {
        "device_id": METRIC_DEVICE.device_id,
        "site_id": METRIC_DEVICE.site_id,
        "metric": "temperature",
        "value": 48.5,
        "unit": "degC",
        "ts": "2026-11-20T10:00:00.250Z",
        "message_id": "6f1c1a52-0c3f-4b53-a2a4-1e1a8d3f0c11",
        "ingested_at": "2026-11-20T10:00:00.900Z",
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


def test_every_timestamp_format_normalises_to_the_same_utc_instant():
    instant = datetime(2026, 11, 20, 10, 0, 0, 250000, tzinfo=UTC)
    for ts in (
        "2026-11-20T10:00:00.250Z",
        "2026-11-20T15:30:00.250+05:30",
        "2026-11-20T04:00:00.250-06:00",
        int(instant.timestamp() * 1000),
        "2026-11-20T10:00:00.250",
    ):
        rec = parse_line(line(ts=ts), REGISTRY)
        assert isinstance(rec, Record) and rec.event_ts == instant, ts


def test_imperial_units_are_normalised_to_canonical():
    rec = parse_line(line(device_id=IMPERIAL.device_id, value=212.0, unit="degF"), REGISTRY)
    assert isinstance(rec, Record)
    assert (rec.value, rec.unit, rec.reported_value, rec.reported_unit) == (pytest.approx(100.0), "degC", 212.0, "degF")
    assert rec.site_id == IMPERIAL.site_id
    psi_device = next(d for d in FLEET.devices if d.metrics["pressure"].unit == "psi")
    rec = parse_line(line(device_id=psi_device.device_id, metric="pressure", value=100.0, unit="psi"), REGISTRY)
    assert rec.value == pytest.approx(689.4757) and rec.unit == "kPa"
    # A device that leaves the unit out reports in its registered unit.
    rec = parse_line(line(device_id=IMPERIAL.device_id, value=32.0, unit=...), REGISTRY)
    assert rec.value == pytest.approx(0.0) and rec.reported_unit == "degF"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"device_id": "dev-0001", "val', "malformed_json"),
        ("[1, 2, 3]", "malformed_json"),
        (line(message_id=...), "missing_field"),
        (line(value=None), "missing_field"),
        (line(value="n/a"), "mistyped_field"),
        (line(value=True), "mistyped_field"),
        (line(device_id=404), "mistyped_field"),
        (line(ts="yesterday 3pm"), "bad_timestamp"),
        (line(ts=True), "bad_timestamp"),
        (line(value=float("nan")), "non_finite_value"),
        (line(value=float("-inf")), "non_finite_value"),
        (line(device_id="dev-9123"), "unknown_device"),
        (line(metric="humidity"), "unknown_metric"),
        (line(unit="bar"), "unknown_unit"),
        (line(device_id=IMPERIAL.device_id, unit="degC", value=900.0), "out_of_range"),
        (line(value=-41.0), "out_of_range"),
        (line(ts="2026-11-20T11:00:00Z"), "clock_skew"),
        (line(ts="2026-11-13T09:59:00Z"), "clock_skew"),  # more than 7 days before its ingestion
        (line(ts=0), "clock_skew"),  # a clock reset to the epoch
    ],
)
def test_each_defect_is_rejected_with_its_reason(text, reason):
    result = parse_line(text, REGISTRY)
    assert isinstance(result, Rejection) and result.reason == reason and result.detail
    assert result.reason in REASONS


def test_rejections_keep_the_ids_they_could_read():
    result = parse_line(line(value="n/a"), REGISTRY)
    assert (result.device_id, result.metric) == (METRIC_DEVICE.device_id, "temperature")
    assert parse_line(line(device_id=404), REGISTRY).device_id is None


def test_every_simulated_fault_is_caught():
    record = json.loads(line())
    expected = {
        "malformed_json": {"malformed_json"},
        "missing_field": {"missing_field"},
        "mistyped_field": {"mistyped_field", "bad_timestamp"},
        "non_finite": {"non_finite_value"},
        "impossible_value": {"out_of_range"},
        "unknown_device": {"unknown_device"},
    }
    for kind in BAD_KINDS:
        for seed in range(40):
            result = parse_line(corrupt(record, kind, np.random.default_rng(seed)), REGISTRY)
            assert isinstance(result, Rejection) and result.reason in expected[kind], (kind, seed, result)


def test_parse_verdicts_match_the_simulators_truth(tmp_path):
    lake, sim = simulate(tmp_path, hours=6, devices=20, bad_rate=0.05, truncated_rate=0)
    registry = registry_of(sim.fleet)
    truth = truth_objects(lake)
    reasons = Counter()
    for obj in lake.list(TELEMETRY_PREFIX):
        results = [parse_line(x, registry) for x in gzip.decompress(lake.read_bytes(obj.key)).decode().splitlines()]
        rejected = [r for r in results if isinstance(r, Rejection)]
        assert len(rejected) == sum(truth[obj.key]["bad"].values()), obj.key  # no false positive, none missed
        reasons.update(r.reason for r in rejected)
    assert set(reasons) >= {
        "malformed_json",
        "missing_field",
        "mistyped_field",
        "non_finite_value",
        "out_of_range",
        "unknown_device",
    }


def test_parse_time_rejects_what_is_not_a_time():
    for bad in ("", "2026-13-01T00:00:00Z", 1.5, None, [2026]):
        with pytest.raises((ValueError, TypeError)):
            parse_time(bad)


def test_a_line_without_ingested_at_is_judged_against_its_landing_hour():
    from datetime import datetime

    hour = datetime(2026, 11, 20, 10, tzinfo=UTC)
    record = json.loads(line())
    del record["ingested_at"]
    at = {
        ts: parse_line(json.dumps({**record, "ts": ts}), REGISTRY, hour)
        for ts in ("2026-11-20T11:05:00Z", "2026-11-20T11:05:01Z", "2026-11-13T10:00:00Z", "2026-11-13T09:59:59Z")
    }
    assert [isinstance(r, Record) for r in at.values()] == [True, False, True, False]
    assert "landing hour" in at["2026-11-20T11:05:01Z"].detail
    assert isinstance(
        parse_line(json.dumps({**record, "ts": "2026-11-20T11:05:01Z"}), REGISTRY), Record
    )  # no hour: no judge
