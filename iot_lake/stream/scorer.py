"""The streaming scorer: landing records in, cases out within seconds of their arrival.

The hourly ``ops/deviations`` asset is the system of record: it scores an hour's curated 1-minute
actuals against the forecast band and hands the minutes to the case store. Through Dagster that
takes two runs per landing object (telemetry, then deviations), tens of seconds. This scorer does
the same computation for the hours still receiving data, in one long-running process:

- records: every landing line of the arrival hours in the window (the hour in progress and the one
  before, where late objects of the last one still land), parsed by the curated job's own parser
  (``iot_lake.curated.telemetry_job.parse_objects``: same verdicts, same canonical units), copies of
  a message dropped as the curated job drops them (the first by landing hour, ingestion, object and
  line), so each event minute's mean is the curated 1-minute mean;
- forecasts: ``forecasts/telemetry_5min`` of the hour, joined by ``with_forecasts`` as the asset
  joins them, re-read when the table has a new version;
- per series state: a ``SeriesScorer`` that has replayed the series' stored deviations before the
  hour (``replayed``, the asset's replay, with the operators' false positives, or the states the
  asset kept: iot_lake.detect.states), pickled, kept per hour and
  rebuilt when the stored rows of the hour before it change (the asset scored it again);
- scoring: the hour's minutes so far, each time a series gets new records, by ``score`` with a copy
  of that state: the asset's scorer with its parameters, not a second path. The asset re-scoring
  the hour later computes the same rows from the same inputs, so its cases are these cases;
- cases: ``observe_scored`` into the same case store (same keys: device|metric|incident start),
  then the outbox is delivered to the sinks. Re-observing minutes changes nothing, so a restart
  reads its window again and opens nothing twice.

The data plane's: no Dagster. Sources (iot_lake.stream.sources): the lake's landing prefix locally,
the Kinesis data stream that feeds Firehose in prod.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from iot_lake.cases.model import utcnow
from iot_lake.cases.outbox import deliver_pending
from iot_lake.cases.store import CaseStore
from iot_lake.curated.registries import load_registry
from iot_lake.curated.telemetry_job import FIRST_BY, MESSAGE_KEY
from iot_lake.detect import states
from iot_lake.detect.deviations import (
    KEY,
    DeviationParams,
    epoch_seconds,
    observe_scored,
    replay_rows,
    replayed,
    score,
    stored_by_series,
    with_forecasts,
)
from iot_lake.lake import Lake, dates_between

log = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
DEVIATIONS_TABLE = "ops/deviations"
FORECASTS_TABLE = "forecasts/telemetry_5min"
RECORD_COLUMNS = [
    "device_id",
    "site_id",
    "metric",
    "value",
    "event_ts",
    "message_id",
    "ingested_at",
    "source_object",
    "line_number",
    "landing_hour",
]
REFRESH_S = 5.0  # how often the forecast and deviation tables are asked for a new version


def hour_of(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def window_start(now: datetime) -> datetime:
    """The first arrival hour the stream reads: the hour before the one in progress."""
    return hour_of(now) - HOUR


@dataclass
class HourState:
    """What scoring one event hour needs besides its records: the series' replayed states and the
    forecasts, each with what they were read from."""

    starts: dict[tuple[str, str], bytes]  # each series' replayed state, pickled (score's ``starts``)
    forecasts: pd.DataFrame
    forecast_version: int | None
    deviations_version: int | None
    history_mark: tuple
    normal_mark: tuple
    built: str = ""  # from the states the asset kept, or why the stored rows were replayed


@dataclass
class StepReport:
    records: int = 0  # valid records new to the window
    rejected: int = 0  # lines the parser rejected (the curated job quarantines them)
    minutes: int = 0  # minutes scored
    series: int = 0
    cases: dict[str, int] = field(default_factory=dict)
    delivered: int = 0


class Tables:
    """The Delta tables the stream reads, through delta-rs, re-read only when their version moved."""

    def __init__(self, lake: Lake, delta_options: dict | None = None, clock: Callable[[], float] = time.monotonic):
        self.lake, self.options, self.clock = lake, delta_options, clock
        self._tables: dict[str, object] = {}
        self._checked: dict[str, float] = {}

    def version(self, key: str) -> int | None:
        from deltalake import DeltaTable

        if not self.lake.exists(f"{key}/_delta_log"):
            return None
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = DeltaTable(self.lake.uri(key), storage_options=self.options)
            self._checked[key] = self.clock()
        elif self.clock() - self._checked.get(key, 0.0) >= REFRESH_S:
            table.update_incremental()
            self._checked[key] = self.clock()
        return table.version()

    def read(self, key: str, column: str, dates: list[date], row_filter) -> pd.DataFrame:
        if self.version(key) is None:
            return pd.DataFrame()
        table = self._tables[key]
        dataset = table.to_pyarrow_dataset(file_pruning_predicate=[(column, "in", [d.isoformat() for d in dates])])
        return dataset.to_table(filter=row_filter).to_pandas()


def _between(column: str, start: datetime, end: datetime):
    return (ds.field(column) >= pa.scalar(start)) & (ds.field(column) < pa.scalar(end))


class StreamScorer:
    """Per-series state and the window's records; ``add`` takes parsed rows (``PARSED``) as they land."""

    def __init__(
        self,
        lake: Lake,
        store: CaseStore,
        sinks: Iterable = (),
        delta_options: dict | None = None,
        params: DeviationParams = DeviationParams(),
        clock: Callable[[], datetime] = utcnow,
    ):
        self.lake, self.store, self.sinks = lake, store, list(sinks)
        self.tables = Tables(lake, delta_options)
        self.params, self.clock = params, clock
        self.records = pd.DataFrame(columns=RECORD_COLUMNS)
        self.hours: dict[datetime, HourState] = {}
        self.last_scored: dict[datetime, pd.DataFrame] = {}  # per hour, each series' latest scored minutes
        self._registries: dict[date, object] = {}

    def registry(self, day: date):
        """The registry the curated job parses a landing hour of ``day`` with (its newest snapshot)."""
        if day not in self._registries:
            self._registries = {day: load_registry(self.lake, day)}  # one day at a time is enough
        return self._registries[day]

    def add(self, parsed: Iterable[pa.RecordBatch]) -> StepReport:
        """Take parsed rows (status ok or rejected), score the hours their records fall in, update the cases."""
        report = StepReport()
        tables = [pa.Table.from_batches([b]) for b in parsed if b.num_rows]
        new = pd.concat([t.to_pandas() for t in tables], ignore_index=True) if tables else pd.DataFrame()
        start = window_start(self.clock())
        if not new.empty:
            report.rejected = int((new["status"] != "ok").sum())
            new = new[(new["status"] == "ok") & (new["event_ts"] >= start)][RECORD_COLUMNS]
        before = len(self.records)
        if len(new):
            combined = pd.concat([self.records, new], ignore_index=True) if before else new
            self.records = _first_copies(combined)
        if len(self.records):
            self.records = self.records[self.records["event_ts"] >= start]
        report.records = max(0, len(self.records) - before)
        touched = new.assign(hour=new["event_ts"].dt.floor("h")) if len(new) else pd.DataFrame(columns=[*KEY, "hour"])
        for hour in self._stale_hours(start):
            touched = pd.concat([touched, self._series_of(hour)], ignore_index=True)
        for hour, series in touched.groupby("hour"):
            self._score_hour(hour.to_pydatetime(), series[KEY].drop_duplicates(), report)
        report.delivered = deliver_pending(self.store, self.sinks, self.clock()).delivered if report.cases else 0
        return report

    def _series_of(self, hour: datetime) -> pd.DataFrame:
        rows = self.records[self.records["event_ts"].dt.floor("h") == pd.Timestamp(hour)]
        return rows[KEY].drop_duplicates().assign(hour=pd.Timestamp(hour))

    def _stale_hours(self, start: datetime) -> list[datetime]:
        """Hours whose stored history or forecasts changed since their state was built: rebuilt now,
        and their series scored again (the asset scored the hour before again, a forecast came)."""
        for hour in [h for h in self.hours if h < start]:
            del self.hours[hour]
            self.last_scored.pop(hour, None)
        stale = []
        forecasts, deviations = self.tables.version(FORECASTS_TABLE), self.tables.version(DEVIATIONS_TABLE)
        normal = self._normal_mark()
        for hour, state in list(self.hours.items()):
            changed = forecasts != state.forecast_version or normal != state.normal_mark
            if not changed and deviations != state.deviations_version:
                changed = self._history_mark(hour) != state.history_mark
                state.deviations_version = deviations  # rows of other hours changed: nothing to rebuild
            if changed:
                del self.hours[hour]
                stale.append(hour)
        return stale

    def _normal_mark(self) -> tuple:
        normal = self.store.false_positive_periods(since=self.params.replay_since(window_start(self.clock())))
        return tuple(map(tuple, normal.astype(str).to_numpy()))

    def _history_mark(self, hour: datetime) -> tuple:
        """What the replay's input looks like where it can still change: the stored rows of the hour
        before (the asset scores it again while its late objects land)."""
        rows = self._history(hour - HOUR, hour)
        if rows.empty:
            return (0, 0, 0.0)
        return len(rows), int(rows["is_anomalous"].sum()), float(rows["score"].sum())

    def _history(self, since: datetime, until: datetime) -> pd.DataFrame:
        return self.tables.read(
            DEVIATIONS_TABLE, "event_date", dates_between(since, until), _between("ts", since, until)
        )

    def _state(self, hour: datetime) -> HourState:
        state = self.hours.get(hour)
        if state is not None:
            return state
        since = self.params.replay_since(hour)
        # The marks before the reads, so a change in between is seen at the next step.
        versions = self.tables.version(FORECASTS_TABLE), self.tables.version(DEVIATIONS_TABLE)
        marks = self._history_mark(hour), self._normal_mark()
        history = self._history(since, hour)
        normal = self.store.false_positive_periods(since=since)
        past = stored_by_series(history)
        marked = {} if normal.empty else dict(list(normal.groupby(KEY)))
        first = epoch_seconds(pd.Series([pd.Timestamp(hour)]))[0]
        # The asset's run of the hour before kept what this replay builds, unless it may differ.
        latest = versions[1] if versions[1] is not None else -1
        kept, built = states.load(self.lake, hour, latest, normal, self.params)
        starts = dict(kept)
        for key in past.keys() - starts.keys():
            scorer = replayed(replay_rows(past, marked, key, first), self.params)
            starts[key] = pickle.dumps(scorer, protocol=pickle.HIGHEST_PROTOCOL)
        forecasts = self.tables.read(
            FORECASTS_TABLE,
            "origin_date",
            dates_between(hour - timedelta(days=1), hour + HOUR),
            _between("bucket_start", hour, hour + HOUR) & (ds.field("origin") < pa.scalar(hour + HOUR)),
        )
        state = self.hours[hour] = HourState(starts, forecasts, *versions, *marks, built)
        log.info(f"stream: state of {hour:%Y-%m-%d %H:00} built for {len(starts)} series: {built}")
        return state

    def _score_hour(self, hour: datetime, series: pd.DataFrame, report: StepReport) -> None:
        """Score the hour's minutes so far of the given series, as the asset would, and observe them."""
        state = self._state(hour)
        rows = self.records[self.records["event_ts"].dt.floor("h") == pd.Timestamp(hour)]
        rows = rows.merge(series, on=KEY)
        if rows.empty:
            return
        actuals = minute_means(rows)
        forecasts = state.forecasts if len(state.forecasts) else _no_forecasts()
        scored = score(with_forecasts(actuals, forecasts), None, self.params, starts=state.starts)
        previous = self.last_scored.get(hour)
        if previous is not None:
            previous = previous.merge(series, on=KEY, how="left", indicator=True)
            previous = previous[previous["_merge"] == "left_only"].drop(columns="_merge")
        self.last_scored[hour] = pd.concat([previous, scored], ignore_index=True) if previous is not None else scored
        report.minutes += len(scored)
        report.series += int(scored.groupby(KEY).ngroups)
        for action, n in observe_scored(self.store, scored).items():
            report.cases[action] = report.cases.get(action, 0) + n


def _first_copies(records: pd.DataFrame) -> pd.DataFrame:
    """One row per message: its first copy by landing hour, then by ingestion, object and line, as
    the curated job keeps it (a later copy is a duplicate, or a conflicting one it quarantines)."""
    if records.empty:
        return records
    ordered = records.sort_values(["landing_hour", *FIRST_BY], kind="stable", na_position="last")
    return ordered.drop_duplicates(list(MESSAGE_KEY), keep="first").reset_index(drop=True)


def minute_means(records: pd.DataFrame) -> pd.DataFrame:
    """1-minute actuals (device_id, metric, site_id, bucket_start, mean) of curated-valid records, as
    ``iot_lake.curated.aggregates.aggregate`` computes them (the site of the minute's last reading)."""
    rows = records.assign(bucket_start=records["event_ts"].dt.floor("min")).sort_values(["event_ts", "message_id"])
    grouped = rows.groupby(["device_id", "metric", "bucket_start"], sort=True)
    out = grouped.agg(mean=("value", "mean"), low=("value", "min"), high=("value", "max"), site_id=("site_id", "last"))
    # A float sum can put the mean of equal readings an ulp outside them (as the aggregate clamps it).
    out["mean"] = np.minimum(np.maximum(out["mean"], out["low"]), out["high"])
    out = out.reset_index()[["device_id", "metric", "site_id", "bucket_start", "mean"]]
    out["bucket_start"] = out["bucket_start"].astype("datetime64[us, UTC]")
    return out


def _no_forecasts() -> pd.DataFrame:
    columns = ["device_id", "metric", "bucket_start", "yhat", "lo_80", "hi_80", "lo_95", "hi_95", "origin"]
    frame = pd.DataFrame({c: pd.Series(dtype=float) for c in columns})
    frame["device_id"] = frame["device_id"].astype(str)
    frame["metric"] = frame["metric"].astype(str)
    for c in ("bucket_start", "origin"):
        frame[c] = pd.Series(dtype="datetime64[us, UTC]")
    frame["model_version"] = pd.Series(dtype=str)
    return frame
