"""A stuck sensor (iot_lake/detect/stuck.py) through the production scorer: a machine that runs by day
at a steady load (readings jitter around it) and idles at night at its floor, as the simulator's
vibration and power sensors do, with no forecast or a poor one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iot_lake.detect.deviations import DeviationParams, score
from tests.deviation_helpers import incident_starts, scored_day_by_day

T0 = pd.Timestamp("2026-11-20", tz="UTC")
DAY = 1440
FLOOR = 0.1
STUCK_AT, HELD = 3 * DAY + 14 * 60, 90  # day 4, 14:00, for 90 minutes


def _machine(days: int, seed: int, quantum: float = 0.0) -> np.ndarray:
    """Load 40 +- 0.5 from 06:00 to 22:00, idle at the floor (exactly) otherwise."""
    rng = np.random.default_rng(seed)
    minute = np.arange(days * DAY) % DAY
    values = 40 + rng.normal(0, 0.5, days * DAY)
    if quantum:
        values = np.round(values / quantum) * quantum  # a coarse sensor: values repeat
    values[(minute < 6 * 60) | (minute >= 22 * 60)] = FLOOR
    return values


def _joined(values: np.ndarray, forecast: str) -> pd.DataFrame:
    ts = pd.date_range(T0, periods=len(values), freq="1min")
    frame = pd.DataFrame({"device_id": "d", "metric": "vibration", "site_id": "s", "bucket_start": ts, "mean": values})
    if forecast == "poor":  # yesterday at this time, smoothed, with a band too narrow for the noise
        yhat = pd.Series(values).shift(DAY).rolling(15, min_periods=1).mean().to_numpy()
        frame = frame.assign(yhat=yhat, lo_95=yhat - 0.4, hi_95=yhat + 0.4)
        frame = frame.assign(origin=ts - pd.Timedelta(hours=1), model_version="v1")
    else:
        frame = frame.assign(yhat=np.nan, lo_95=np.nan, hi_95=np.nan, origin=pd.NaT, model_version=None)
    return frame


def _stuck(values: np.ndarray, at: int = STUCK_AT, held: int = HELD) -> np.ndarray:
    v = values.copy()
    v[at : at + held] = v[at]
    return v


@pytest.mark.parametrize("forecast", ["none", "poor"])
def test_a_value_held_mid_range_opens_a_case_within_the_hour_and_idling_at_the_floor_does_not(forecast):
    values = _stuck(_machine(5, seed=1))
    flags = scored_day_by_day(_joined(values, forecast), DeviationParams())["is_anomalous"].to_numpy()
    starts = incident_starts(flags)
    found = starts[(starts >= STUCK_AT) & (starts < STUCK_AT + HELD)]
    assert len(found) == 1 and found[0] - STUCK_AT <= 31, starts  # half an hour held, then a case
    assert flags[found[0] : STUCK_AT + HELD].all()  # on until the value moves again
    # The rule is what finds it: the residual channels see a value inside the load's jitter.
    deaf = scored_day_by_day(_joined(values, forecast), DeviationParams(stuck_after=0))["is_anomalous"].to_numpy()
    assert not deaf[STUCK_AT : STUCK_AT + HELD].any()
    # And it finds nothing else: the nightly idling at the floor is 8 hours of one value every night.
    # (The case goes on while the first minutes after the hold are out of band: the same case.)
    after = STUCK_AT + HELD + 30
    np.testing.assert_array_equal(np.r_[flags[:STUCK_AT], flags[after:]], np.r_[deaf[:STUCK_AT], deaf[after:]])


def test_a_coarse_sensor_repeats_values_without_a_case_until_it_holds_one_twice_as_long():
    values = _machine(5, seed=2, quantum=1.0)  # 40 +- 0.5 rounded to whole units: mostly 39, 40, 41
    plain = scored_day_by_day(_joined(values, "none"), DeviationParams())
    deaf = scored_day_by_day(_joined(values, "none"), DeviationParams(stuck_after=0))
    # Runs of 40 of several minutes are the sensor's normal: the rule adds nothing on normal days.
    np.testing.assert_array_equal(plain["is_anomalous"].to_numpy(), deaf["is_anomalous"].to_numpy())
    held = _stuck(values, at=STUCK_AT, held=120)
    held[STUCK_AT : STUCK_AT + 120] = 40.0
    flags = scored_day_by_day(_joined(held, "none"), DeviationParams())["is_anomalous"].to_numpy()
    found = incident_starts(flags[STUCK_AT : STUCK_AT + 120])
    assert len(found) == 1 and 30 <= found[0] <= 60, found


def test_a_stuck_case_is_the_same_when_each_day_is_scored_alone():
    joined = _joined(_stuck(_machine(5, seed=3)), "poor")
    one_pass = score(joined, None, DeviationParams())["is_anomalous"].to_numpy()
    assert one_pass[STUCK_AT + 40]
    np.testing.assert_array_equal(scored_day_by_day(joined, DeviationParams())["is_anomalous"].to_numpy(), one_pass)


def test_a_hold_an_operator_marked_normal_is_learnt_as_the_sensors_own():
    """A sensor that legitimately holds a setpoint for an hour each afternoon: after the operator marks
    the first case a false positive, the same hold the next day opens none."""
    values = _machine(5, seed=4)
    first, again = 2 * DAY + 14 * 60, 3 * DAY + 14 * 60
    values = _stuck(_stuck(values, first, 60), again, 60)
    values[again : again + 60] = values[first]  # the same setpoint
    joined = _joined(values, "none")
    plain = scored_day_by_day(joined, DeviationParams())["is_anomalous"].to_numpy()
    assert plain[first + 40] and plain[again + 40]  # unmarked: a case each day
    marked = pd.DataFrame(
        {
            "device_id": ["d"],
            "metric": ["vibration"],
            "start": [T0 + pd.Timedelta(minutes=first)],
            "end": [T0 + pd.Timedelta(minutes=first + 60)],
        }
    )
    fed_back = scored_day_by_day(joined, DeviationParams(), normal=marked)["is_anomalous"].to_numpy()
    assert not fed_back[again : again + 60].any()
