"""The soak benchmark's verification (benchmarks/soak/run.py): landed lines against curated telemetry and
quarantine, and the case store's duplicates and outbox, on a tiny lake written by the simulator."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pyarrow as pa
import pytest
import sqlalchemy as sa
from deltalake import write_deltalake

from benchmarks.lake_setup import INCIDENT_OFFSET, Incident, _hour_records, plant_incident
from benchmarks.soak.run import (
    AFTER_PLANT_S,
    MIN_LIVE,
    PLANT_DATA,
    Accounting,
    CaseFigures,
    Kills,
    _results,
    account,
    case_figures,
    kill_plan,
    landed_lines,
    plan_soak,
    planted_cases,
    sim_config,
)
from iot_lake.cases.schema import cases, create_engine, create_tables, outbox
from iot_lake.lake import Lake
from iot_lake.simulate.runner import SimulationReport, Simulator
from iot_lake.sources.telemetry import iter_lines

HOUR = datetime(2026, 11, 20, 10, tzinfo=UTC)


def _landed(tmp_path):
    lake = Lake(str(tmp_path))
    Simulator(sim_config(devices=1, seed=3), lake).emit(
        HOUR, HOUR + timedelta(hours=1), SimulationReport(start=HOUR.isoformat(), end="")
    )
    return landed_lines(lake)


def _write(tmp_path, table: str, rows: list[dict]) -> None:
    write_deltalake(str(tmp_path / table), pa.Table.from_pylist(rows), mode="overwrite")


def test_every_landed_line_is_found_once_and_a_missing_or_doubled_one_is_counted(tmp_path):
    landed = _landed(tmp_path)
    records = [(row_id, m) for row_id, m in landed.items() if m is not None]
    rejected = [row_id for row_id, m in landed.items() if m is None]
    assert len(records) > 10 and rejected, "the simulator's hour has records and malformed lines"
    messages = sorted({m for _, m in records})
    curated = [dict(zip(("device_id", "metric", "message_id"), m)) for m in messages]
    quarantined = [{"source_object": key, "line_number": n} for key, n in rejected]
    _write(tmp_path, "curated/telemetry", curated)
    _write(tmp_path, "quarantine/telemetry", quarantined)

    acc = account(str(tmp_path))
    assert (acc.lines, acc.curated, acc.quarantined, acc.missing, acc.duplicated) == (
        len(landed),
        len(records),
        len(rejected),
        0,
        0,
    )

    # One message lost, one curated twice, one line quarantined twice.
    lost = messages[0]
    _write(tmp_path, "curated/telemetry", [c for c in curated if tuple(c.values()) != lost] + [curated[1]])
    _write(tmp_path, "quarantine/telemetry", quarantined + quarantined[:1])
    acc = account(str(tmp_path))
    lost_lines = sum(1 for m in landed.values() if m == lost)
    assert (acc.missing, acc.duplicated) == (lost_lines, 2)
    assert acc.curated == len(records) - lost_lines


def test_a_lake_with_no_curated_table_yet_misses_every_line(tmp_path):
    landed = _landed(tmp_path)
    acc = account(str(tmp_path))
    assert acc.missing == acc.lines == len(landed)


def _case(key: str, start: datetime, status: str, minutes: int = 30) -> dict:
    device, metric = key.split("|")[:2]
    return {
        "case_key": key,
        "device_id": device,
        "metric": metric,
        "incident_start": start,
        "last_seen": start + timedelta(minutes=minutes),
        "severity": "warning",
        "status": status,
        "auto_resolved": False,
        "evidence": {},
        "opened_at": start,
        "updated_at": start,
        "reopen_count": 0,
    }


def test_an_incident_opened_twice_and_an_undelivered_outbox_row_are_counted(tmp_path):
    url = f"sqlite:///{tmp_path}/cases.sqlite"
    engine = create_engine(url)
    create_tables(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(cases),
            [
                # One incident opened twice: a closed case and a later one starting inside it.
                _case("d1|temperature|a", HOUR, "resolved"),
                _case("d1|temperature|b", HOUR + timedelta(minutes=10), "open"),
                # Two incidents of one series an hour apart: not duplicates.
                _case("d1|vibration|a", HOUR, "resolved"),
                _case("d1|vibration|b", HOUR + timedelta(hours=1), "open"),
            ],
        )
        conn.execute(
            sa.insert(outbox),
            [
                {
                    "case_key": "d1|temperature|a",
                    "event": "opened",
                    "payload": {},
                    "sink": "log",
                    "attempts": 1,
                    "next_attempt_at": HOUR,
                    "delivered_at": HOUR,
                },
                {
                    "case_key": "d1|vibration|b",
                    "event": "opened",
                    "payload": {},
                    "sink": "log",
                    "attempts": 0,
                    "next_attempt_at": HOUR,
                    "delivered_at": None,
                },
            ],
        )
    engine.dispose()
    figures = case_figures(url)
    assert (figures.cases, figures.duplicate_cases, figures.outbox_rows, figures.outbox_pending) == (4, 1, 2, 1)


def test_the_kill_plan_is_seeded_and_within_the_soak():
    plan = kill_plan(random.Random(7), 6)
    assert plan == kill_plan(random.Random(7), 6)
    assert [kind for _, kind in plan].count("daemon") == 3 and [kind for _, kind in plan].count("run") == 3
    assert all(0 < t < 6 * 60 for t, _ in plan)


# --- the plan of hours, just before and after a boundary (benchmarks/hours.py) ------------------

FIRST = datetime(2026, 12, 5, 18, tzinfo=UTC)  # 4 soak hours: 18:00 to 21:00, forecasts to 22:00


def test_a_soak_within_its_hour_scores_that_hour():
    plan = plan_soak(FIRST, 4, datetime(2026, 12, 5, 21, 40, 30, tzinfo=UTC), 6)
    assert (plan.end, plan.live, plan.crosses, plan.minutes) == (
        datetime(2026, 12, 5, 21, 45, tzinfo=UTC),
        FIRST + timedelta(hours=3),
        False,
        6,
    )


def test_a_soak_crossing_the_hour_scores_the_next_one_with_enough_of_its_data():
    start = datetime(2026, 12, 5, 21, 57, tzinfo=UTC)
    plan = plan_soak(FIRST, 4, start, 6)
    assert plan.live == datetime(2026, 12, 5, 22, tzinfo=UTC) and plan.crosses
    # It runs on (3 minutes to the boundary, then MIN_LIVE), never ahead of the clock.
    assert plan.end - plan.live == MIN_LIVE and plan.minutes == 3 + MIN_LIVE.total_seconds() / 60
    assert "crossing into 22:00" in plan.describe()


def test_a_soak_in_an_hour_the_setup_did_not_forecast_exits():
    with pytest.raises(SystemExit, match="23:00"):
        plan_soak(FIRST, 4, datetime(2026, 12, 5, 22, 57, tzinfo=UTC), 6)


def test_a_soak_that_opened_no_case_fails_its_case_check():
    plan = plan_soak(FIRST, 4, datetime(2026, 12, 5, 21, 40, tzinfo=UTC), 6)

    def met(cases: int) -> dict[str, bool]:
        results = _results(Accounting(lines=10), CaseFigures(cases=cases, planted=1), Kills(), True, plan, None)
        return {r.measure: r.met for r in results}

    assert all(met(3).values())
    failed = [measure for measure, ok in met(0).items() if not ok]
    assert failed == ["cases opened (what the duplicate-case check covers)"]


# --- the planted incident: where, when, and its case ----------------------------------------------


@pytest.mark.parametrize(
    "start",
    [
        datetime(2026, 12, 5, 21, 40, 30, tzinfo=UTC),  # within its hour
        datetime(2026, 12, 5, 21, 57, tzinfo=UTC),  # crossing into 22:00
        datetime(2026, 12, 5, 22, 0, 1, tzinfo=UTC),  # just after the boundary
    ],
)
def test_the_incident_is_planted_in_the_scored_hour_before_the_end_and_not_ahead_of_the_clock(start):
    plan = plan_soak(FIRST, 4, start, 6)
    assert plan.plant_at == plan.live + PLANT_DATA < plan.end  # data of the scored hour follows it
    assert 0 < plan.plant_s < plan.minutes * 60
    # soak's accelerated clock reaches plant_at at plant_s, when the real clock is no earlier.
    speed = (plan.end - plan.first) / (plan.minutes * 60)
    assert abs(plan.first + plan.plant_s * speed - plan.plant_at) < timedelta(milliseconds=1)
    assert plan.plant_at <= plan.start + timedelta(seconds=plan.plant_s)


def test_a_daemon_and_a_run_kill_follow_the_plant():
    plain, plan = kill_plan(random.Random(7), 6), kill_plan(random.Random(7), 6, plant_s=250.0)
    after = [(t, kind) for t, kind in plan if (t, kind) not in plain]
    assert sorted(kind for _, kind in after) == ["daemon", "run"]
    assert all(250.0 < t <= 250.0 + AFTER_PLANT_S for t, _ in after)


def test_the_planted_incident_shifts_the_last_ten_minutes_of_one_temperature_series(tmp_path):
    _landed(tmp_path)
    lake = Lake(str(tmp_path))
    originals = _hour_records(lake, HOUR)
    incident = plant_incident(lake, HOUR)
    assert incident.key.startswith(f"landing/telemetry/{HOUR:%Y/%m/%d/%H}/")
    planted = [json.loads(line) for line in iter_lines(lake, incident.key)]
    assert {(r["device_id"], r["metric"]) for r in planted} == {(incident.device, "temperature")}
    # Every planted record is an original one, a new message, 50 degrees up.
    by_reading = {(r.get("device_id"), r.get("metric"), r.get("ts")): r for r in originals if isinstance(r, dict)}
    for r in planted:
        original = by_reading[(r["device_id"], r["metric"], r["ts"])]
        assert r["value"] == pytest.approx(original["value"] + INCIDENT_OFFSET)
        assert r["message_id"] != original["message_id"]
    # The series' last ten minutes (from the minute mark), several minutes of them.
    assert HOUR + timedelta(minutes=49) <= incident.first_ts < incident.last_ts < HOUR + timedelta(hours=1)
    assert timedelta(minutes=5) < incident.last_ts - incident.first_ts <= timedelta(minutes=11)


def test_the_planted_incident_case_is_the_one_of_its_series_overlapping_its_minutes():
    incident = Incident("k", "d1", "temperature", HOUR + timedelta(minutes=30, seconds=5), HOUR + timedelta(minutes=40))

    def row(device, metric, start_min, end_min):
        return SimpleNamespace(
            device_id=device,
            metric=metric,
            incident_start=(HOUR + timedelta(minutes=start_min)).replace(tzinfo=None),  # as SQLite returns them
            last_seen=HOUR + timedelta(minutes=end_min),
        )

    assert planted_cases([row("d1", "temperature", 31, 41)], incident) == 1
    assert planted_cases([row("d1", "temperature", 30, 30)], incident) == 1  # its first minute alone
    assert planted_cases([row("d1", "temperature", 41, 50)], incident) == 1  # its last minute's mean, stamped 10:41
    others = [row("d1", "vibration", 31, 41), row("d2", "temperature", 31, 41), row("d1", "temperature", 0, 29)]
    assert planted_cases(others, incident) == 0
    assert planted_cases([row("d1", "temperature", 31, 35), row("d1", "temperature", 36, 41)], incident) == 2
    assert planted_cases([row("d1", "temperature", 31, 41)], None) == 0


def test_the_planted_case_must_open_exactly_once():
    plan = plan_soak(FIRST, 4, datetime(2026, 12, 5, 21, 40, tzinfo=UTC), 6)

    def failed(planted: int) -> list[str]:
        results = _results(Accounting(lines=10), CaseFigures(cases=3, planted=planted), Kills(), True, plan, None)
        return [r.measure for r in results if not r.met]

    assert failed(1) == []
    assert failed(0) == ["cases of the planted incident opened"]
    assert failed(2) == ["cases of the planted incident beyond the first"]
