"""Kept scorer states (iot_lake.detect.states): an hour scored from the states the run before kept
writes the rows a replay of the stored rows writes, and the states are not used once they may not
be what that replay would build."""

import pickle
from array import array
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from dagster import materialize
from deltalake import CommitProperties, DeltaTable, write_deltalake

from assets.ops.deviations import DEVIATIONS_TABLE, FORECASTS_TABLE, deviations
from iot_lake.cases.store import CaseStore
from iot_lake.detect import states
from iot_lake.detect.deviations import (
    KEY,
    DeviationParams,
    SeriesScorer,
    epoch_seconds,
    replay_rows,
    replayed,
    stored_by_series,
)
from iot_lake.detect.nab import NabParams
from iot_lake.lake import Lake
from resources.cases import CasesResource
from resources.lake import LakeResource

FIRST = datetime(2026, 11, 20, 19, tzinfo=UTC)  # the hours scored one by one cross midnight
SEEN = FIRST - timedelta(days=1)  # the day before them is scored as one range, as the main job does
HOURS = 9
SERIES = [("dev-1", "power"), ("dev-2", "power"), ("dev-3", "temperature"), ("dev-4", "temperature")]


def _minutes(rng: np.random.Generator, device: str, minutes: pd.DatetimeIndex) -> np.ndarray:
    day = 2 * np.pi * (minutes.hour * 60 + minutes.minute) / 1440
    values = np.asarray(40 + 8 * np.sin(day)) + rng.normal(0, 0.6, len(minutes))
    t = minutes - FIRST
    if device == "dev-1":  # a small level shift for an hour and a half
        values[(t >= timedelta(hours=2, minutes=10)) & (t < timedelta(hours=3, minutes=40))] += 2.5
    if device == "dev-2":  # a spike, then a stuck sensor
        values[(t >= timedelta(hours=1, minutes=30)) & (t < timedelta(hours=1, minutes=36))] += 9
        stuck = (t >= timedelta(hours=6)) & (t < timedelta(hours=7, minutes=10))
        values[stuck] = values[stuck][0]
    if device == "dev-3":  # the noise doubles late in the night
        late = t >= timedelta(hours=5)
        values[late] += rng.normal(0, 1.2, late.sum())
    return values


def _lake(root) -> Lake:
    """A day and nine hours of 1-minute actuals of four series (one silent for an hour, one starting
    late) and biased, hourly forecasts (one hour without any)."""
    lake = Lake(str(root))
    rng = np.random.default_rng(11)
    minutes = pd.date_range(SEEN, FIRST + timedelta(hours=HOURS), freq="1min", inclusive="left")
    rows = []
    for device, metric in SERIES:
        keep = np.ones(len(minutes), bool)
        if device == "dev-3":
            keep &= (minutes < FIRST + timedelta(hours=1)) | (minutes >= FIRST + timedelta(hours=2))
        if device == "dev-4":
            keep &= minutes >= FIRST + timedelta(hours=2, minutes=17)
        frame = pd.DataFrame({"bucket_start": minutes, "mean": _minutes(rng, device, minutes)})[keep]
        rows.append(frame.assign(device_id=device, metric=metric, site_id="site-1"))
    _write_minutes(lake, pd.concat(rows, ignore_index=True), "error")
    buckets = pd.date_range(SEEN, FIRST + timedelta(hours=HOURS), freq="5min", inclusive="left")
    buckets = buckets[buckets.floor("h") != FIRST + timedelta(hours=4)]
    day = 2 * np.pi * (buckets.hour * 60 + buckets.minute) / 1440
    yhat = np.asarray(40.4 + 7.5 * np.sin(day))
    origin = buckets.floor("h")
    forecasts = pd.concat(
        pd.DataFrame(
            {
                "device_id": device,
                "metric": metric,
                "bucket_start": buckets,
                "yhat": yhat,
                "lo_80": yhat - 0.9,
                "hi_80": yhat + 0.9,
                "lo_95": yhat - 1.4,
                "hi_95": yhat + 1.4,
                "origin": origin,
                "model_version": "v1",
                "origin_date": origin.date,
            }
        )
        for device, metric in SERIES
    )
    write_deltalake(
        lake.uri(FORECASTS_TABLE), pa.Table.from_pandas(forecasts, preserve_index=False), partition_by=["origin_date"]
    )
    return lake


def _write_minutes(lake: Lake, rows: pd.DataFrame, mode: str) -> None:
    rows = rows.assign(event_date=rows["bucket_start"].dt.date)
    columns = ["device_id", "metric", "site_id", "bucket_start", "mean", "event_date"]
    table = pa.Table.from_pandas(rows[columns], preserve_index=False)
    write_deltalake(
        lake.uri("curated/telemetry_1min"),
        table,
        mode=mode,
        partition_by=["event_date"],
        **({"predicate": _hour_predicate(rows)} if mode == "overwrite" else {}),
    )


def _hour_predicate(rows: pd.DataFrame) -> str:
    start = rows["bucket_start"].min().floor("h")
    return f"bucket_start >= '{start.isoformat()}' AND bucket_start < '{(start + pd.Timedelta(hours=1)).isoformat()}'"


def _late_minutes(lake: Lake, hour: int) -> None:
    """The hour's dev-1 minutes arrive again, with a spike the first run did not see."""
    table = DeltaTable(lake.uri("curated/telemetry_1min")).to_pandas()
    start = pd.Timestamp(FIRST + timedelta(hours=hour))
    rows = table[(table["bucket_start"] >= start) & (table["bucket_start"] < start + pd.Timedelta(hours=1))].copy()
    spike = (rows["device_id"] == "dev-1") & (rows["bucket_start"] >= start + pd.Timedelta(minutes=20))
    rows.loc[spike & (rows["bucket_start"] < start + pd.Timedelta(minutes=26)), "mean"] += 12
    _write_minutes(lake, rows.drop(columns="event_date"), "overwrite")


def _day_scored(root: Path) -> tuple[Lake, Path, dict]:
    """The lake (``_lake``), its case store and the asset's resources, with the day before FIRST
    scored as one range, as the main job does."""
    lake = _lake(root / "lake")
    db = root / "cases.sqlite"
    resources = {
        "lake": LakeResource(root=lake.url),
        "cases": CasesResource(url=f"sqlite:///{db}", lake_root=lake.url),
    }
    keys = [SEEN.strftime("%Y-%m-%d-%H:%M"), (FIRST - timedelta(hours=1)).strftime("%Y-%m-%d-%H:%M")]
    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[1]}
    materialize([deviations], tags=tags, resources=resources)
    return lake, db, resources


def _run(tmp_path, name: str, forget_states: bool) -> tuple[pd.DataFrame, list[str], Lake, str]:
    """Score the hours one by one (one hour re-scored after late minutes, a case marked a false
    positive on the way); ``forget_states``: delete the kept states before every run (a replay each
    time). The stored rows, what each run said about its states, the lake and the case store."""
    lake, db, resources = _day_scored(tmp_path / name)
    said = []

    def hour(h: int) -> None:
        if forget_states:
            lake.delete(states.PREFIX, recursive=True)
        key = (FIRST + timedelta(hours=h)).strftime("%Y-%m-%d-%H:%M")
        result = materialize([deviations], partition_key=key, resources=resources)
        said.append(result.asset_materializations_for_node("ops__deviations")[0].metadata["scorer_states"].value)

    for h in range(HOURS):
        hour(h)
        if h == 2:  # an operator: the latest case (dev-1's level shift, open) is a false alarm
            with CaseStore(f"sqlite:///{db}") as store:
                latest = max(store.list_cases(), key=lambda c: c.incident_start)
                store.resolve(latest.case_key, "operator", false_positive=True)
        if h == 7:  # late minutes of an earlier hour: it is scored again
            _late_minutes(lake, 6)
            hour(6)
    table = DeltaTable(lake.uri(DEVIATIONS_TABLE)).to_pandas()
    return table.sort_values(["device_id", "metric", "ts"]).reset_index(drop=True), said, lake, f"sqlite:///{db}"


def _tree(state):
    """A scorer's state as plain values, to compare (pickles of equal states can differ in how they
    share objects); NaN as a string, so equal states compare equal."""
    if isinstance(state, float):
        return "nan" if state != state else state
    if isinstance(state, dict):
        return {k: _tree(v) for k, v in state.items()}
    if isinstance(state, list | tuple | deque | array):
        return [_tree(v) for v in state]
    if isinstance(state, str | int | bool | type(None) | frozenset | NabParams | DeviationParams):
        return state
    return (type(state).__name__, _tree(state.__getstate__() or {}))


def _replayed_states(lake: Lake, store_url: str, hour: datetime) -> dict[tuple[str, str], object]:
    """Each series' state at ``hour`` as a replay of the stored rows builds it (``_tree``)."""
    params = DeviationParams()
    since = params.replay_since(hour)
    rows = DeltaTable(lake.uri(DEVIATIONS_TABLE)).to_pandas()
    rows = rows[(rows["ts"] >= since) & (rows["ts"] < hour)]
    with CaseStore(store_url) as store:
        normal = store.false_positive_periods(since=since)
    past, marked = stored_by_series(rows), dict(list(normal.groupby(KEY)))
    first = epoch_seconds(pd.Series([pd.Timestamp(hour)]))[0]
    replays = {key: replayed(replay_rows(past, marked, key, first), params) for key in past}
    return {key: _tree(scorer) for key, scorer in replays.items()}


def test_hours_scored_from_kept_states_write_what_replays_write(tmp_path):
    kept, said, lake, store_url = _run(tmp_path, "kept", forget_states=False)
    replays, said_replayed, *_ = _run(tmp_path, "replayed", forget_states=True)
    pd.testing.assert_frame_equal(kept, replays, check_exact=True)
    # Every kept state the next run would use is, to the bit, what a replay of the stored rows builds.
    table, params, used = DeltaTable(lake.uri(DEVIATIONS_TABLE)), DeviationParams(), []
    for h in range(1, HOURS + 1):
        hour = FIRST + timedelta(hours=h)
        with CaseStore(store_url) as store:
            normal = store.false_positive_periods(since=params.replay_since(hour))
        starts, _ = states.load(lake, hour, table.version(), normal, params)
        if starts:
            assert {k: _tree(pickle.loads(v)) for k, v in starts.items()} == _replayed_states(lake, store_url, hour)
            used.append(h)
    # Only the last three hours' states are kept (each holds every series' calibration window); of
    # those, hour 8's were kept before hour 6 was scored again.
    kept_hours = sorted(info.key.rsplit("/", 1)[-1] for info in lake.list(states.PREFIX))
    assert kept_hours == [f"2026-11-21T0{h}00.pkl" for h in (1, 2, 3, 4)]
    assert used == [6, 7, 9]
    assert kept["is_anomalous"].any() and kept["actual"].isna().any()  # incidents, and dev-3's silence
    assert all(s == "no states kept for this hour" for s in said_replayed)
    # Hours 0..7, hour 6 again, hour 8: which runs started from kept states, and why not.
    assert said[0] == "no states kept for this hour"
    # dev-4 starts in hour 2; dev-3 is silent in hour 1 (its state is carried through it)
    assert [s.split(" states kept")[0] for s in said[1:3]] == ["3 series'", "3 series'"]
    # marked after hour 2; the false alarm went on in hour 3, and its marked period with it
    assert said[3] == said[4] == "the operators' verdicts changed since"
    assert said[5] == "no states kept for this hour"  # midnight: the replay's start moved
    assert said[6].startswith("4 series' states kept") and said[7].startswith("4 series' states kept")
    assert said[8].startswith("4 series' states kept")  # hour 6 again: those hour 5's run kept
    # hour 8's states were kept before hour 6 was scored again
    assert said[9].startswith("ops/deviations version") and said[9].endswith("(WRITE) may change earlier rows")


def test_kept_states_are_refused_after_a_commit_that_may_change_earlier_rows(tmp_path):
    lake = Lake(str(tmp_path))
    rows = pa.table({"ts": [1, 2], "event_date": ["a", "b"]})
    hour = datetime(2026, 11, 21, 5, tzinfo=UTC)

    def commit(scored_from=None) -> int:
        metadata = {} if scored_from is None else states.commit_metadata(scored_from)
        write_deltalake(lake.uri(states.TABLE), rows, mode="append", commit_properties=CommitProperties(metadata))
        return DeltaTable(lake.uri(states.TABLE)).version()

    at = commit(hour - timedelta(hours=1))
    assert states.changed_before(lake, hour, at, at) is None
    commit(hour)  # the hour itself, or later: its rows are not learnt
    made = states.commit_metadata(hour + timedelta(hours=3))
    write_deltalake(lake.uri(states.TABLE), rows, mode="append", commit_properties=CommitProperties(made))
    DeltaTable(lake.uri(states.TABLE)).optimize.compact()  # moves no row
    latest = DeltaTable(lake.uri(states.TABLE)).version()
    assert states.changed_before(lake, hour, at, latest) is None
    assert states.version_of(lake, made, at, latest) == at + 2
    earlier = commit(hour - timedelta(hours=2))
    assert "may change earlier rows" in states.changed_before(lake, hour, at, earlier)
    # ... unless it is after the commits looked at (a run checks its own read..commit span)
    assert states.changed_before(lake, hour, at, earlier - 1) is None
    appended = commit()  # another tool's append
    assert states.changed_before(lake, hour, earlier, appended).endswith("(WRITE) may change earlier rows")
    # A log entry cleaned up since: whatever it did is not known
    lake.delete(f"{states.TABLE}/_delta_log/{appended:020d}.json")
    assert "its log entry is gone" in states.changed_before(lake, hour, earlier, appended)


def test_a_scorer_state_pickled_goes_on_as_the_scorer_itself():
    """The calibrators pickle their windows as arrays; the state read back scores and learns the
    same numbers as the one kept in memory."""
    rng = np.random.default_rng(5)
    t = 1.79e9 + 60.0 * np.arange(6000)
    x = 20 + 3 * np.sin(np.arange(6000) / 1440 * 2 * np.pi) + rng.normal(0, 0.5, 6000)
    x[4100:4110] += 6
    scorer = SeriesScorer(DeviationParams())
    for i in range(4000):
        scorer.update(t[i], x[i], (x[i] + 0.2, x[i] - 1.5, x[i] + 1.9))
    copy = pickle.loads(pickle.dumps(scorer, protocol=pickle.HIGHEST_PROTOCOL))
    for i in range(4000, 6000):
        band = (x[i] - 0.3, x[i] - 2.0, x[i] + 1.4)
        assert copy.update(t[i], x[i], band) == scorer.update(t[i], x[i], band)
    assert any(scorer.update(t[i], x[i] + 8, None)[1] for i in range(5990, 6000))


def test_unreadable_kept_states_mean_the_replay(tmp_path):
    """A states file that cannot be read (cut short, or of another layout) is passed over, not fatal."""
    lake, hour, params = Lake(str(tmp_path)), datetime(2026, 11, 21, 5, tzinfo=UTC), DeviationParams()
    write_deltalake(lake.uri(states.TABLE), pa.table({"a": [1]}))
    kept = states.Kept(hour, 0, states.marks(None), states.fingerprint(params), {})
    for data in (pickle.dumps(kept)[:40], pickle.dumps({"hour": hour})):
        lake.write_bytes(states.key_of(hour), data)
        starts, why = states.load(lake, hour, 0, None, params)
        assert starts == {} and why.startswith("kept states unreadable")
    lake.write_bytes(states.key_of(hour), pickle.dumps(kept))
    assert states.load(lake, hour, 0, None, params)[1] == "0 series' states kept at version 0"


def test_runs_of_the_hour_in_progress_keep_their_replay_not_the_next_hours_states(tmp_path, monkeypatch):
    """While an hour is in progress each landing re-scores it, and the next run's commit of it would
    make states kept for the hour after useless: its runs keep none (they were ~1.2 MB a series
    every landing). The first run replays and keeps what the replay built, for its own hour; the next
    runs start from that, with the rows a replay gives. After the turn, a run keeps the next hour's."""
    import assets.ops.deviations as asset_module

    lake, db, resources = _day_scored(tmp_path)
    hour = FIRST + timedelta(hours=2)  # dev-4 starts in it: its state is a fresh scorer
    key = hour.strftime("%Y-%m-%d-%H:%M")

    def run(at: timedelta, forget: bool = False) -> tuple[dict, pd.DataFrame]:
        if forget:
            lake.delete(states.PREFIX, recursive=True)
        monkeypatch.setattr(asset_module, "_now", lambda: hour + at)
        result = materialize([deviations], partition_key=key, resources=resources)
        metadata = result.asset_materializations_for_node("ops__deviations")[0].metadata
        rows = DeltaTable(lake.uri(DEVIATIONS_TABLE)).to_pandas()
        rows = rows[rows["ts"] >= pd.Timestamp(hour)].sort_values(["device_id", "metric", "ts"])
        return {k: metadata[k].value for k in ("scorer_states", "scorer_states_kept")}, rows.reset_index(drop=True)

    def kept_hours() -> list[str]:
        return sorted(info.key.rsplit("/", 1)[-1] for info in lake.list(states.PREFIX))

    first, _ = run(timedelta(minutes=20))
    assert first == {
        "scorer_states": "no states kept for this hour",
        "scorer_states_kept": f"4 series at {hour:%Y-%m-%d %H:%M}",
    }
    assert kept_hours() == [f"{hour:%Y-%m-%dT%H%M}.pkl"]  # its own hour's, not the next one's
    with CaseStore(f"sqlite:///{db}") as store:
        normal = store.false_positive_periods(since=DeviationParams().replay_since(hour))
    starts, _ = states.load(lake, hour, DeltaTable(lake.uri(DEVIATIONS_TABLE)).version(), normal, DeviationParams())
    fresh = {("dev-4", "temperature"): _tree(SeriesScorer(DeviationParams()))}  # no rows before the hour
    assert {k: _tree(pickle.loads(v)) for k, v in starts.items()} == {
        **_replayed_states(lake, f"sqlite:///{db}", hour),
        **fresh,
    }

    again, rows = run(timedelta(minutes=40))
    assert again["scorer_states"].startswith("4 series' states kept") and again["scorer_states_kept"] == "none"
    assert kept_hours() == [f"{hour:%Y-%m-%dT%H%M}.pkl"]
    replayed_, replayed_rows = run(timedelta(minutes=40), forget=True)
    assert replayed_["scorer_states"] == "no states kept for this hour"
    pd.testing.assert_frame_equal(rows, replayed_rows, check_exact=True)

    after, _ = run(timedelta(minutes=65))  # its last objects, after the turn
    assert after["scorer_states_kept"] == f"4 series at {hour + timedelta(hours=1):%Y-%m-%d %H:%M}"
    assert f"{hour + timedelta(hours=1):%Y-%m-%dT%H%M}.pkl" in kept_hours()
