"""The hour planning of the live benchmarks (benchmarks/hours.py): which hourly partitions latency and
the soak send to and score, at times just before and just after an hour boundary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from benchmarks.hours import floor_buffer, hour_of, hours_in, measured_hour, soak_end, uncovered, warm_upto

H21, H22 = datetime(2026, 12, 5, 21, tzinfo=UTC), datetime(2026, 12, 5, 22, tzinfo=UTC)
LEAD = timedelta(minutes=5)
MIN_LIVE = timedelta(minutes=10)


def at(hour: datetime, minute: int, second: int = 0) -> datetime:
    return hour + timedelta(minutes=minute, seconds=second)


def test_hours_and_buffers_are_floored_in_utc():
    assert hour_of(at(H21, 59, 59)) == H21 and hour_of(H22) == H22
    assert floor_buffer(at(H21, 59, 59)) == at(H21, 55) and floor_buffer(at(H22, 4, 59)) == H22


def test_the_partitions_of_a_delivery_are_every_hour_it_reaches_into():
    assert hours_in(H21, H22) == [H21]
    assert hours_in(H21, at(H22, 5)) == [H21, H22]
    assert hours_in(at(H21, 57), at(H22, 0, 1)) == [H21, H22]


def test_latency_measures_in_the_hour_in_progress_while_its_lead_fits():
    assert measured_hour(at(H21, 10), LEAD) == H21
    assert measured_hour(at(H21, 55), LEAD) == H21  # exactly the lead left
    assert measured_hour(at(H21, 55, 1), LEAD) == H22  # too little left: the next hour, waited for
    assert measured_hour(at(H21, 59, 59), LEAD) == H22
    assert measured_hour(at(H22, 0, 1), LEAD) == H22  # just after the boundary


def test_the_warm_start_delivers_the_closed_buffers_and_at_least_the_first_of_the_hour():
    assert warm_upto(at(H21, 17, 10), H21) == at(H21, 15)
    assert warm_upto(at(H21, 59, 59), H21) == at(H21, 55)
    # Just after the boundary no buffer of the new hour has closed: its first one goes out.
    assert warm_upto(at(H22, 0, 30), H22) == at(H22, 5)
    # Planned for the next hour while the old one still ran (the wait was cut short): still its first buffer.
    assert warm_upto(at(H21, 59, 59), H22) == at(H22, 5)


def test_a_soak_ending_well_into_its_hour_ends_after_its_minutes():
    assert soak_end(at(H21, 50, 4), 6, MIN_LIVE) == at(H21, 55)
    assert soak_end(at(H21, 53, 59), 6, MIN_LIVE) == at(H21, 55)  # ends at 21:59:59, before the boundary


def test_a_soak_crossing_the_hour_runs_on_until_the_scored_hour_has_enough_data():
    assert soak_end(at(H21, 54), 6, MIN_LIVE) == at(H22, 10)  # would end on the boundary itself
    assert soak_end(at(H21, 57), 6, MIN_LIVE) == at(H22, 10)
    assert soak_end(at(H21, 59, 59), 6, MIN_LIVE) == at(H22, 10)
    assert soak_end(at(H21, 57), 20, MIN_LIVE) == at(H22, 15)  # long enough on its own


def test_a_soak_starting_early_in_an_hour_runs_on_too():
    assert soak_end(at(H22, 0, 1), 6, MIN_LIVE) == at(H22, 10)
    assert soak_end(at(H22, 4), 6, MIN_LIVE) == at(H22, 10)


def test_hours_without_the_setups_forecast_are_named():
    first, last = H21 - timedelta(hours=3), H22
    assert uncovered([H21, H22], first, last) == []
    assert uncovered([H22, H22 + timedelta(hours=1)], first, last) == [H22 + timedelta(hours=1)]
