"""Case-level precision, recall and delay against injected anomalies (the main job's closing table)."""

import math

import pandas as pd

from iot_lake.cases.accuracy import case_accuracy

T0 = pd.Timestamp("2026-11-20T00:00Z")


def _at(minutes: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=minutes)


def _frame(rows, columns):
    return pd.DataFrame(rows, columns=columns)


def test_cases_are_matched_to_anomalies_of_their_own_series():
    truth = _frame(
        [
            ("d1", "power", "level_shift", _at(60), _at(120)),
            ("d2", "power", "spike", _at(300), _at(302)),  # found, by a case starting 3 min after it ended
            ("d3", "power", "drift", _at(400), _at(500)),  # missed
            ("d1", "power", "stuck", _at(2000), _at(2100)),  # outside the window: not counted
        ],
        ["device_id", "metric", "kind", "start", "end"],
    )
    cases = _frame(
        [
            ("d1", "power", _at(70), _at(118)),  # true, 10 min late
            ("d1", "power", _at(115), _at(130)),  # also overlaps the same anomaly: still a true case
            ("d2", "power", _at(305), _at(306)),  # true (within the slack after the spike)
            ("d2", "temperature", _at(300), _at(310)),  # another metric of d2: false
            ("d4", "power", _at(800), _at(810)),  # false
        ],
        ["device_id", "metric", "start", "last_seen"],
    )
    a = case_accuracy(cases, truth, (T0, _at(1440)))
    assert (a.cases, a.true_cases, a.anomalies, a.detected) == (5, 3, 3, 2)
    assert math.isclose(a.precision, 3 / 5) and math.isclose(a.recall, 2 / 3)
    assert sorted(a.delays_s) == [300.0, 600.0] and a.median_delay_s == 450.0
    assert a.by_kind == {"drift": (0, 1), "level_shift": (1, 1), "spike": (1, 1)}


def test_only_scored_series_count_and_an_empty_window_has_no_rates():
    truth = _frame([("d9", "power", "spike", _at(10), _at(11))], ["device_id", "metric", "kind", "start", "end"])
    empty = _frame([], ["device_id", "metric", "start", "last_seen"])
    a = case_accuracy(empty, truth, (T0, _at(60)), series={("d1", "power")})
    assert a.anomalies == 0 and math.isnan(a.recall) and math.isnan(a.precision) and math.isnan(a.median_delay_s)
    b = case_accuracy(empty, truth, (T0, _at(60)))
    assert b.anomalies == 1 and b.recall == 0.0


def test_a_case_covers_the_whole_minute_of_its_buckets():
    """A one-sample spike lands inside a minute; the case that saw it has that minute's bucket start
    as its start and last_seen (ops/deviations scores 1-minute aggregates): a detection, not a
    false case beside a missed spike. A case ending the minute before the spike does not match it."""
    spike = _at(642) + pd.Timedelta(seconds=37)
    truth = _frame(
        [("d1", "temperature", "spike", spike, spike + pd.Timedelta(milliseconds=1))],
        ["device_id", "metric", "kind", "start", "end"],
    )
    seen = _frame([("d1", "temperature", _at(642), _at(642))], ["device_id", "metric", "start", "last_seen"])
    a = case_accuracy(seen, truth, (T0, _at(1440)))
    assert (a.true_cases, a.detected, a.delays_s) == (1, 1, [0.0])
    before = _frame([("d1", "temperature", _at(630), _at(641))], ["device_id", "metric", "start", "last_seen"])
    assert case_accuracy(before, truth, (T0, _at(1440))).true_cases == 0
