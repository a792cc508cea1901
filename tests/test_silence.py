"""A silent sensor (iot_lake/detect/silence.py) through the production scorer and the case store: two
devices reporting every minute, with the pauses of a real delivery path (a minute or a few missing
now and then), one of which goes silent for an hour on its second day."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from iot_lake.cases.store import CaseStore
from iot_lake.detect.deviations import DeviationParams, observe_scored, score

T0 = pd.Timestamp("2026-11-20", tz="UTC")
DAY = 1440
SILENT, LONG = DAY + 14 * 60 + 10, 60  # dev-2, day 2, 14:10 to 15:10


def _minutes(seed: int, silent: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    keep = rng.random(2 * DAY) > 0.03  # ~3% of minutes missing, some pauses of a few minutes
    for at in rng.integers(0, 2 * DAY, 6):
        keep[at : at + rng.integers(2, 6)] = False
    if silent:
        keep[SILENT : SILENT + LONG] = False
    keep[-1] = True
    ts = pd.date_range(T0, periods=2 * DAY, freq="1min")[keep]
    values = 50 + rng.normal(0, 0.5, keep.sum())
    return pd.DataFrame(
        {
            "device_id": f"dev-{2 if silent else 1}",
            "metric": "power",
            "site_id": "s",
            "bucket_start": ts,
            "mean": values,
            "yhat": 50.0,
            "lo_95": 49.0,
            "hi_95": 51.0,
            "origin": ts - pd.Timedelta(hours=1),
            "model_version": "v1",
        }
    )


def _fleet(seed: int = 0) -> pd.DataFrame:
    return pd.concat([_minutes(seed, False), _minutes(seed + 1, True)], ignore_index=True)


def _hour_by_hour(joined: pd.DataFrame, hours: range, params: DeviationParams = DeviationParams()) -> pd.DataFrame:
    """Each hour scored after replaying the rows stored before it, as the hourly asset does."""
    scored = None
    for h in hours:
        start, end = T0 + pd.Timedelta(hours=h), T0 + pd.Timedelta(hours=h + 1)
        rows = joined[(joined["bucket_start"] >= start) & (joined["bucket_start"] < end)]
        rows = score(rows, scored, params, window=(start, end))
        scored = rows if scored is None else pd.concat([scored, rows], ignore_index=True)
    return scored


def _marks(scored: pd.DataFrame) -> list[tuple[str, pd.Timestamp]]:
    marks = scored[scored["actual"].isna()]
    assert marks["is_anomalous"].all()
    return sorted(zip(marks["device_id"], marks["ts"]))


def test_an_hour_of_silence_is_marked_once_a_quarter_hour_in_and_ordinary_pauses_are_not():
    joined = _fleet()
    window = (T0, T0 + pd.Timedelta(days=2))
    one_pass = score(joined, None, DeviationParams(), window=window)
    last_heard = T0 + pd.Timedelta(minutes=SILENT - 1)
    assert _marks(one_pass) == [("dev-2", last_heard + pd.Timedelta(minutes=15))]
    # Without the rule the hour leaves no trace at all.
    assert not _marks(score(joined, None, DeviationParams(silent_after=0), window=window))
    # Hour by hour (the asset's way, the silence spanning two hours) marks the same minute, once.
    by_hour = _hour_by_hour(joined, range(48))
    assert _marks(by_hour) == _marks(one_pass)
    # The marks are rows of their own: the minutes score as without the rule (replays skip them).
    deaf = _hour_by_hour(joined, range(48), DeviationParams(silent_after=0))
    minutes = by_hour[by_hour["actual"].notna()]
    pd.testing.assert_frame_equal(minutes.reset_index(drop=True), deaf.reset_index(drop=True))


def test_a_series_is_silent_at_the_end_only_if_others_reported_after_it():
    joined = _fleet()
    # The hour in progress at 14:40 of day 2: dev-2 last reported at 14:09, dev-1 up to 14:40.
    start = T0 + pd.Timedelta(days=1, hours=14)
    past, hour = joined[joined["bucket_start"] < start], joined[joined["bucket_start"] >= start]
    stored = score(past, None, DeviationParams())
    now = hour[hour["bucket_start"] <= start + pd.Timedelta(minutes=40)]
    marked = _marks(score(now, stored, DeviationParams(), window=(start, start + pd.Timedelta(hours=1))))
    assert marked == [("dev-2", start + pd.Timedelta(minutes=24))]
    # At 14:20 neither has been quiet long enough; with dev-1's objects still in the buffer (its last
    # minute 14:09 too), nobody is silent: the data's own clock has not moved.
    early = hour[hour["bucket_start"] <= start + pd.Timedelta(minutes=20)]
    assert not _marks(score(early, stored, DeviationParams(), window=(start, start + pd.Timedelta(hours=1))))
    stalled = hour[hour["bucket_start"] <= start + pd.Timedelta(minutes=9)]
    assert not _marks(score(stalled, stored, DeviationParams(), window=(start, start + pd.Timedelta(hours=1))))


def test_a_silence_opens_one_case_that_resolves_when_the_series_is_back(tmp_path):
    scored = _hour_by_hour(_fleet(), range(48))
    with CaseStore(f"sqlite:///{tmp_path}/cases.sqlite") as store:
        observe_scored(store, scored)
        cases = [c for c in store.list_cases() if c.device_id == "dev-2"]
    silent_at = T0 + pd.Timedelta(minutes=SILENT - 1 + 15)
    opened = [c for c in cases if abs(c.incident_start - silent_at) <= timedelta(minutes=1)]
    assert len(opened) == 1, [(c.incident_start, c.status) for c in cases]
    case = opened[0]
    assert case.evidence["actual_values"] == [[silent_at.isoformat(), None]]  # no reading: a silence
    assert case.evidence["expected_lo"] is None and case.severity == "info"
    assert case.status == "resolved"  # back, in band, for half an hour before the day ended


def test_a_new_series_is_not_called_silent_before_a_day_of_its_pauses_is_known():
    joined = _fleet()
    first_day = joined[joined["bucket_start"] < T0 + pd.Timedelta(days=1)].copy()
    dev2 = first_day["device_id"] == "dev-2"
    gap = (first_day["bucket_start"] >= T0 + pd.Timedelta(hours=10)) & (
        first_day["bucket_start"] < T0 + pd.Timedelta(hours=11)
    )
    quiet_first_day = first_day[~(dev2 & gap)]
    assert not _marks(score(quiet_first_day, None, DeviationParams(), window=(T0, T0 + pd.Timedelta(days=1))))


def test_the_deviations_asset_opens_a_case_for_a_silent_device(tmp_path):
    """Through the hourly asset: day 1 as one run (a backfill), then day 2's hours one by one; the
    silence is marked in the hour it became one, and re-running that hour changes nothing."""
    import pyarrow as pa
    from dagster import materialize
    from deltalake import DeltaTable, write_deltalake

    from assets.ops.deviations import DEVIATIONS_TABLE, FORECASTS_TABLE, deviations
    from iot_lake.lake import Lake
    from resources.cases import CasesResource
    from resources.lake import LakeResource

    lake = Lake(str(tmp_path / "lake"))
    minutes = _fleet()
    curated = minutes[["device_id", "metric", "site_id", "bucket_start", "mean"]].assign(
        event_date=minutes["bucket_start"].dt.date
    )
    write_deltalake(
        lake.uri("curated/telemetry_1min"),
        pa.Table.from_pandas(curated, preserve_index=False),
        partition_by=["event_date"],
    )
    buckets = pd.date_range(T0, periods=2 * DAY // 5, freq="5min")
    forecasts = pd.concat(
        pd.DataFrame(
            {
                "device_id": device,
                "metric": "power",
                "bucket_start": buckets,
                "yhat": 50.0,
                "lo_80": 49.3,
                "hi_80": 50.7,
                "lo_95": 49.0,
                "hi_95": 51.0,
                "origin": T0 - pd.Timedelta(hours=1),
                "model_version": "v1",
                "origin_date": (T0 - pd.Timedelta(hours=1)).date(),
            }
        )
        for device in ("dev-1", "dev-2")
    )
    write_deltalake(
        lake.uri(FORECASTS_TABLE), pa.Table.from_pandas(forecasts, preserve_index=False), partition_by=["origin_date"]
    )
    db = tmp_path / "cases.sqlite"
    resources = {"lake": LakeResource(root=lake.url), "cases": CasesResource(url=f"sqlite:///{db}", lake_root=lake.url)}
    key = "%Y-%m-%d-%H:%M"
    day1 = {
        "dagster/asset_partition_range_start": T0.strftime(key),
        "dagster/asset_partition_range_end": (T0 + pd.Timedelta(hours=23)).strftime(key),
    }
    assert materialize([deviations], resources=resources, tags=day1).success
    for h in range(24, 24 + 16):
        materialize([deviations], partition_key=(T0 + pd.Timedelta(hours=h)).strftime(key), resources=resources)
    silent_at = T0 + pd.Timedelta(minutes=SILENT - 1 + 15)
    table = DeltaTable(lake.path(DEVIATIONS_TABLE)).to_pandas()
    assert _marks(table) == [("dev-2", silent_at)]
    with CaseStore(f"sqlite:///{db}") as store:
        opened = [c for c in store.list_cases() if c.incident_start == silent_at]
    assert [(c.device_id, c.evidence["actual_values"]) for c in opened] == [("dev-2", [[silent_at.isoformat(), None]])]
    # The hour it was marked in, again: the same rows, the same case.
    materialize([deviations], partition_key=silent_at.floor("h").strftime(key), resources=resources)
    assert _marks(DeltaTable(lake.path(DEVIATIONS_TABLE)).to_pandas()) == [("dev-2", silent_at)]
    with CaseStore(f"sqlite:///{db}") as store:
        assert [c.case_key for c in store.list_cases() if c.incident_start == silent_at] == [opened[0].case_key]


def test_an_hourly_series_is_silent_after_twice_its_cadence_not_after_a_quarter_hour():
    from iot_lake.detect.silence import silence_marks

    hours = np.arange(0, 72 * 3600, 3600.0)  # three days of hourly readings
    rule = dict(after=900.0, factor=2.0, history=600000.0)
    end = hours[-1] + 3600
    assert silence_marks(hours, [], 0.0, end, end, **rule) == []
    gappy = hours[(hours < 48 * 3600) | (hours >= 52 * 3600)]  # nothing from 48:00 to 52:00
    assert silence_marks(gappy, [], 0.0, end, end, **rule) == [47 * 3600 + 2 * 3600]
    # A gap marked already (when an earlier hour was scored) is not marked again, and it is no
    # ordinary pause: the next 4-hour gap is a silence too.
    assert silence_marks(gappy, [49 * 3600.0], 0.0, end, end, **rule) == []
    twice = gappy[(gappy < 60 * 3600) | (gappy >= 64 * 3600)]
    assert silence_marks(twice, [49 * 3600.0], 0.0, end, end, **rule) == [61 * 3600]


@settings(max_examples=40, deadline=None)
@given(
    gaps=st.lists(
        st.tuples(st.integers(0, 3 * DAY - 1), st.integers(2, 240)),  # (minute it starts, minutes long)
        max_size=12,
    )
)
def test_marks_found_hour_by_hour_are_the_marks_of_one_pass(gaps):
    """Whatever the pauses, scoring hour by hour (the past replayed, earlier marks known, the clock at
    each hour's end) marks the same minutes as one pass over the three days."""
    from iot_lake.detect.silence import silence_marks

    keep = np.ones(3 * DAY, bool)
    for at, long in gaps:
        keep[at : at + long] = False
    times = np.flatnonzero(keep) * 60.0
    rule = dict(after=900.0, factor=2.0, history=600000.0)
    end = 3 * DAY * 60.0
    one_pass = silence_marks(times, [], 0.0, end, end, **rule)
    found: list[float] = []
    for h in range(72):
        start, stop = h * 3600.0, (h + 1) * 3600.0
        found += silence_marks(times[times < stop], list(found), start, stop, stop, **rule)
    assert found == one_pass
