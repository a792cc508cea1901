"""Properties of the simulated sources, checked against the data as it landed."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from iot_lake.fleet import METRICS, build_fleet
from iot_lake.lake import TELEMETRY_PREFIX, Lake
from iot_lake.simulate.anomalies import KINDS
from iot_lake.simulate.deliveries import SimConfig, series_day
from iot_lake.simulate.runner import Simulator, anomalies_key
from iot_lake.simulate.signals import plant_load, weather_at
from iot_lake.units import to_canonical
from tests.conftest import START, read_lines, simulate, truth_objects

FIREHOSE_KEY = re.compile(
    r"^landing/telemetry/(\d{4})/(\d{2})/(\d{2})/(\d{2})/iot-lake-telemetry-1-\1-\2-\3-\4-\d{2}-\d{2}-[0-9a-f-]{36}\.gz$"
)
FIELDS = {"device_id", "site_id", "metric", "value", "unit", "ts", "message_id", "ingested_at"}


def _ts_ms(value) -> float:
    if isinstance(value, int):
        return float(value)
    return pd.Timestamp(value).tz_convert("UTC").value / 1e6


def classify(line: str, fleet) -> str:
    """An independent verdict on one delivered line, from the landing contract alone."""
    try:
        rec = json.loads(line)
    except ValueError:
        return "malformed_json"
    if not isinstance(rec, dict):
        return "malformed_json"
    if not {"device_id", "metric", "value", "ts", "message_id"} <= rec.keys():
        return "missing_field"
    if not isinstance(rec["device_id"], str) or isinstance(rec["value"], str):
        return "mistyped_field"
    try:
        _ts_ms(rec["ts"])
    except ValueError:
        return "mistyped_field"
    if not math.isfinite(rec["value"]):
        return "non_finite"
    devices = {d.device_id: d for d in fleet.devices}
    if rec["device_id"] not in devices:
        return "unknown_device"
    spec = METRICS[rec["metric"]]
    if not spec.min_value <= to_canonical(rec["value"], rec["unit"], spec.unit) <= spec.max_value:
        return "impossible_value"
    return "ok"


def test_landing_objects_follow_the_firehose_layout(two_days):
    lake, _ = two_days
    keys = [o.key for o in lake.list(TELEMETRY_PREFIX)]
    assert len(keys) == 48 * 12  # one object per 5-minute buffer
    assert all(FIREHOSE_KEY.match(k) for k in keys), [k for k in keys if not FIREHOSE_KEY.match(k)][:3]
    good = [json.loads(line) for line in read_lines(lake)[:5000] if classify(line, two_days[1].fleet) == "ok"]
    assert good and all(set(r) == FIELDS for r in good)
    assert all(_ts_ms(r["ingested_at"]) >= _ts_ms(r["ts"]) for r in good)


def test_bad_input_rates_are_as_configured(tmp_path):
    lake, sim = simulate(tmp_path, hours=24, bad_rate=0.05, duplicate_rate=0.03, late_rate=0.02, truncated_rate=0)
    lines = read_lines(lake)
    verdicts = Counter(classify(line, sim.fleet) for line in lines)
    bad = sum(v for k, v in verdicts.items() if k != "ok")
    assert bad / len(lines) == pytest.approx(0.05, rel=0.1)
    for kind in (
        "malformed_json",
        "missing_field",
        "mistyped_field",
        "non_finite",
        "impossible_value",
        "unknown_device",
    ):
        assert verdicts[kind] / len(lines) == pytest.approx(0.05 / 6, rel=0.35), kind

    ids = Counter()
    first_delay: dict[str, float] = {}  # a record is late by its first arrival, not by a retry
    for line in lines:
        try:
            rec = json.loads(line)
            delay = _ts_ms(rec["ingested_at"]) - _ts_ms(rec["ts"])
            rec["message_id"]
        except (ValueError, KeyError, TypeError):
            continue
        ids[rec["message_id"]] += 1
        first_delay[rec["message_id"]] = min(delay, first_delay.get(rec["message_id"], delay))
    duplicates = sum(n - 1 for n in ids.values())
    assert duplicates / len(lines) == pytest.approx(0.03, rel=0.15)
    late = sum(d > 10 * 60_000 for d in first_delay.values())
    assert late / len(first_delay) == pytest.approx(0.02, rel=0.2)

    # The truth written next to the data agrees with the independent verdicts.
    truth = truth_objects(lake)
    assert sum(t["lines"] for t in truth.values()) == len(lines)
    assert sum(sum(t["bad"].values()) for t in truth.values()) == bad


def test_no_faults_when_rates_are_zero(tmp_path):
    lake, sim = simulate(tmp_path, hours=6, bad_rate=0, duplicate_rate=0, late_rate=0, truncated_rate=0)
    lines = read_lines(lake)
    assert lines and {classify(line, sim.fleet) for line in lines} == {"ok"}


def test_late_records_arrive_out_of_order_in_later_hours(two_days):
    lake, _ = two_days
    out_of_order = 0
    for obj in list(lake.list(TELEMETRY_PREFIX))[12:36]:
        try:
            recs = [json.loads(x) for x in gzip.decompress(lake.read_bytes(obj.key)).decode().splitlines()]
        except (EOFError, ValueError):
            continue
        hour_start = datetime.strptime("/".join(obj.key.split("/")[2:6]), "%Y/%m/%d/%H").replace(tzinfo=UTC)
        for r in recs:
            if isinstance(r, dict) and "ts" in r:
                try:
                    out_of_order += _ts_ms(r["ts"]) < hour_start.timestamp() * 1000 - 10 * 60_000
                except (ValueError, TypeError):
                    pass
    assert out_of_order > 0


def test_truncated_objects_are_exactly_the_labelled_ones(two_days):
    lake, _ = two_days
    truth = truth_objects(lake)
    broken = set()
    for obj in lake.list(TELEMETRY_PREFIX):
        try:
            gzip.decompress(lake.read_bytes(obj.key))
        except EOFError:
            broken.add(obj.key)
    labelled = {k for k, t in truth.items() if t["truncated_at_byte"]}
    assert broken == labelled and len(broken) >= 10  # 5% of 576 objects


def test_same_seed_same_bytes_and_rerun_overwrites(tmp_path):
    def digest(lake: Lake) -> dict[str, str]:
        return {o.key: hashlib.sha256(lake.read_bytes(o.key)).hexdigest() for o in lake.list("landing")}

    a, _ = simulate(tmp_path / "a", hours=3)
    b, _ = simulate(tmp_path / "b", hours=3)
    c, _ = simulate(tmp_path / "c", hours=3, seed=8)
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)
    simulate(tmp_path / "a", hours=3)  # a re-run into the same lake duplicates nothing
    assert digest(a) == digest(b)


def test_follow_mode_delivers_the_same_objects_as_a_backfill(tmp_path):
    cfg = SimConfig(devices=3, seed=11)
    backfill = Simulator(cfg, Lake(str(tmp_path / "backfill")))
    backfill.backfill(START, START + timedelta(hours=1))

    follow = Simulator(cfg, Lake(str(tmp_path / "follow")))
    clock = iter(START.timestamp() + 300 * i + 2 for i in range(1, 100))
    naps = []
    report = follow.follow(START, clock=lambda: next(clock), sleep=naps.append, max_windows=12)
    assert report.objects == 12 and report.end == (START + timedelta(hours=1)).isoformat()

    def contents(lake):
        return {o.key: lake.read_bytes(o.key) for o in lake.list(TELEMETRY_PREFIX)}

    assert contents(follow.lake) == contents(backfill.lake)


def test_anomalies_are_labelled_exactly_where_injected(tmp_path):
    common = dict(bad_rate=0, duplicate_rate=0, late_rate=0, truncated_rate=0, seed=5, devices=6)
    clean, _ = simulate(tmp_path / "clean", hours=24, anomaly_rate=0, **common)
    dirty, sim = simulate(tmp_path / "dirty", hours=24, anomaly_rate=3, **common)

    def by_id(lake):
        return {r["message_id"]: r for r in map(json.loads, read_lines(lake))}

    before, after = by_id(clean), by_id(dirty)
    truth = pd.read_csv(dirty.open(anomalies_key(START.date())))
    assert set(truth["kind"]) == set(KINDS)
    windows: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
    for row in truth.itertuples():
        windows.setdefault((row.device_id, row.metric), []).append((_ts_ms(row.start), _ts_ms(row.end), row.kind))

    def inside(rec, kinds=None):
        t = _ts_ms(rec["ts"])
        return any(
            s <= t < e and (kinds is None or k in kinds)
            for s, e, k in windows.get((rec["device_id"], rec["metric"]), [])
        )

    changed = [r for mid, r in after.items() if r["value"] != before[mid]["value"]]
    missing = [r for mid, r in before.items() if mid not in after]
    assert changed and missing
    assert all(inside(r) for r in changed)  # no unlabelled change
    assert all(inside(r, {"dropout"}) for r in missing)  # records vanish only in dropouts
    assert set(after) <= set(before)
    # ...and every labelled anomaly actually shows in the data.
    for (device, metric), spans in windows.items():
        for s, e, kind in spans:
            hit = [
                r
                for r in (missing if kind == "dropout" else changed)
                if r["device_id"] == device and r["metric"] == metric and s <= _ts_ms(r["ts"]) < e
            ]
            assert hit, (device, metric, kind)


def _two_weeks(metric: str, device_index: int = 0):
    fleet = build_fleet(10, seed=3)
    cfg = SimConfig(devices=10, seed=3, anomaly_rate=0)
    device = fleet.devices[device_index]
    days = [date(2026, 6, 1) + timedelta(days=i) for i in range(14)]  # Monday to Sunday, twice
    parts = [series_day(fleet, cfg, device, metric, d) for d in days]
    t = np.concatenate([p.t_ms for p in parts])
    v = np.concatenate([p.values for p in parts])
    return fleet, device, t, v


def test_daily_and_weekly_seasonality():
    _, _, t, v = _two_weeks("power")
    per_day = 1440
    x = v - v.mean()
    lag_day = np.corrcoef(x[:-per_day], x[per_day:])[0, 1]
    lag_half_day = np.corrcoef(x[: -per_day // 2], x[per_day // 2 :])[0, 1]
    assert lag_day > 0.6 and lag_half_day < lag_day - 0.3
    dow = pd.to_datetime(t, unit="ms", utc=True).day_of_week
    weekday, sunday = v[dow < 5].mean(), v[dow == 6].mean()
    assert weekday > 1.5 * sunday


def test_temperature_depends_on_site_weather_and_trends_with_age():
    fleet, device, t, v = _two_weeks("temperature")
    site = fleet.site_by_id[device.site_id]
    outdoor = weather_at(fleet, site, t).temperature_c
    load = plant_load(site, t)
    design = np.column_stack([np.ones_like(v), load, outdoor, (t - t[0]) / 86_400_000])
    coef, *_ = np.linalg.lstsq(design, v, rcond=None)
    assert coef[2] == pytest.approx(0.35, abs=0.08)  # degC of housing per degC outdoors
    assert coef[3] == pytest.approx(device.metrics["temperature"].trend_per_day, abs=0.02)


def test_weather_files_one_per_site_and_day_in_both_provider_formats(tmp_path):
    lake, sim = simulate(tmp_path, hours=48, devices=20, bad_weather_rate=0.5)
    keys = sorted(o.key for o in lake.list("landing/thirdparty/weather"))
    assert len(keys) == 2 * len(sim.fleet.sites) == 4
    assert {k.rsplit(".", 1)[1] for k in keys} == {"csv", "json"}
    truth = json.loads(lake.read_bytes("landing/_simulator/weather/2026-11-20.json"))
    assert set(truth) == {k for k in keys if "/2026/11/20/" in k}


def test_fleet_registry_shape():
    fleet = build_fleet(50, seed=42)
    assert len(fleet.devices) == 50 and len(fleet.sites) == 5
    assert {m for d in fleet.devices for m in d.metrics} == set(METRICS)
    assert any(d.metrics["temperature"].unit == "degF" for d in fleet.devices)
    assert build_fleet(50, seed=42) == fleet
