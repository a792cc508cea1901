"""The series scorers' states at the start of an hour, kept so the hour's run need not rebuild them.

Before an hour is scored, every series replays its stored ``ops/deviations`` rows from
``DeviationParams.replay_since`` (a calibration window, ~7 days, before the hour's day): ~10,000
minutes a series in pure Python, where the hour itself is 60. A run that scored hours of one day
keeps, for the hour after them, each series' state extended by the rows it has just stored
(``score_and_keep``): what that replay would build from those rows, so whether the next run finds
the states or replays gives the same rows (tests/test_deviation_states.py). The replay's start moves
once a day, so the first hour of a day replays; the others read the states.

Which run keeps them (``keeps``, ``keeps_start``): a run of an hour that is over keeps the next
hour's. The runs of the hour in progress (one per landing object) keep none for the next hour, since
the next of them changes the rows those would have learnt; the first of them that had to replay
keeps what its replay built, for its own hour, so the later ones start from it.

Kept states are used only while they are what the replay would build:
- the scorer's code and parameters are those that built them (``fingerprint``);
- the operators' verdicts since the replay's start are the same (``marks``);
- no commit to ``ops/deviations`` since changed a row before the hour: every later commit is a
  deviations run of that hour or later (it says so in the commit, ``SCORED_FROM``), or moved no row
  (compaction, vacuum). Anything else (a re-score of an earlier hour, a write by another tool)
  means the replay.

Stored as one pickle per hour under ``ops/deviation_states/`` in the lake (the lake is the
platform's own storage, as its models are). A series' state holds its calibration window (~1.2 MB at
1-minute cadence), so only the last few hours are kept: those the automation re-scores while their
objects land. A run of an older hour replays.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pickle
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from iot_lake.detect.deviations import DeviationParams
from iot_lake.lake import Lake

PREFIX = "ops/deviation_states"
TABLE = "ops/deviations"
SCORED_FROM = "iot_lake.scored_from"  # ops/deviations commit metadata: the first hour it wrote
TOKEN = "iot_lake.commit_token"  # ... and which commit it is
NO_DATA_CHANGE = {"OPTIMIZE", "VACUUM START", "VACUUM END"}
KEEP = timedelta(hours=3)
HOUR = timedelta(hours=1)
# The modules whose code is the state: a change to any of them invalidates kept states.
_SOURCES = ("deviations.py", "nab.py", "stuck.py", "silence.py")


@dataclass
class Kept:
    """Every series' state (pickled ``SeriesScorer``) at ``hour``, and what it was built from."""

    hour: datetime
    version: int  # ops/deviations' version once the rows it learnt were committed
    marks: str
    code: str
    states: dict[tuple[str, str], bytes] = field(default_factory=dict)


@functools.cache  # the sources do not change under a running process; each run asks twice
def fingerprint(params: DeviationParams) -> str:
    here = Path(__file__).parent
    digest = hashlib.sha256(repr(params).encode())
    for name in _SOURCES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def marks(normal: pd.DataFrame | None) -> str:
    """A fingerprint of the false-positive periods (device_id, metric, start, end) a replay reads."""
    if normal is None or normal.empty:
        return "none"
    rows = normal[["device_id", "metric", "start", "end"]].astype(str).sort_values(["device_id", "metric", "start"])
    return hashlib.sha256(rows.to_csv(index=False).encode()).hexdigest()


def key_of(hour: datetime) -> str:
    return f"{PREFIX}/{hour:%Y-%m-%dT%H%M}.pkl"


def keeps(start: datetime, end: datetime, params: DeviationParams, now: datetime) -> bool:
    """Whether a run of [start, end) keeps states for ``end``: the replay before ``end`` starts where
    the run's did (same day; ``end`` at midnight starts a new window), and the hour is over. While it
    is in progress, each landing object re-scores it, and the next run's commit of it makes the
    states just kept useless (it changes rows before ``end``): writing every series' state (~1.2 MB
    each) on every landing would buy nothing. Its runs after the turn (the last objects land after
    it) keep them."""
    return now >= end and params.replay_since(start) == params.replay_since(end)


def keeps_start(start: datetime, end: datetime, now: datetime) -> bool:
    """Whether a run of the hour in progress that replayed keeps the states its replay built, for
    its own hour: its later runs, as objects land, then start from them instead of each replaying
    (an hour whose last run ended before the turn kept nothing for the next one)."""
    return now < end and end - start == HOUR


def load(
    lake: Lake, hour: datetime, latest: int, normal: pd.DataFrame | None, params: DeviationParams
) -> tuple[dict[tuple[str, str], bytes], str]:
    """The kept states of ``hour`` if they are still what the replay would build (else none), and
    why not. ``latest``: ops/deviations' version now (-1: no table)."""
    key = key_of(hour)
    if latest < 0 or not lake.exists(key):
        return {}, "no states kept for this hour"
    try:
        kept = pickle.loads(lake.read_bytes(key))
        code, marked, version, series = kept.code, kept.marks, kept.version, kept.states
    except Exception as exc:  # cut short, or of another layout: the replay still gives the rows
        return {}, f"kept states unreadable ({type(exc).__name__}: {exc})"
    if code != fingerprint(params):
        return {}, "kept by another version of the scorer"
    if marked != marks(normal):
        return {}, "the operators' verdicts changed since"
    why = changed_before(lake, hour, version, latest)
    if why:
        return {}, why
    return series, f"{len(series)} series' states kept at version {version}"


def commit_metadata(start: datetime) -> dict[str, str]:
    """What a deviations run's commit of [start, ...) says about itself."""
    return {SCORED_FROM: start.isoformat(), TOKEN: uuid.uuid4().hex}


def commits(lake: Lake, after: int, upto: int) -> list[dict]:
    """The commit infos of ops/deviations' versions after ``after`` up to ``upto``, each with its
    version. Read from the log's own files, not listed: one small read a commit, on S3 too."""
    out = []
    for version in range(after + 1, upto + 1):
        key = f"{TABLE}/_delta_log/{version:020d}.json"
        info = {"operation": "unknown: its log entry is gone"}
        if lake.exists(key):
            for line in lake.read_bytes(key).decode().splitlines():
                if line.startswith('{"commitInfo"'):
                    info = json.loads(line)["commitInfo"]
        out.append({**info, "version": version})
    return out


def version_of(lake: Lake, metadata: dict[str, str], after: int, latest: int) -> int | None:
    """The version of the commit made with ``metadata``, between ``after`` and ``latest`` (other runs
    may have committed since)."""
    return next((c["version"] for c in commits(lake, after, latest) if c.get(TOKEN) == metadata[TOKEN]), None)


def changed_before(lake: Lake, hour: datetime, after: int, upto: int) -> str | None:
    """Why rows before ``hour`` may have changed in the versions after ``after`` up to ``upto``, or None."""
    if upto < after:
        return f"ops/deviations is at version {upto}, before {after}"
    for commit in commits(lake, after, upto):
        if commit.get("operation") in NO_DATA_CHANGE:
            continue
        scored_from = commit.get(SCORED_FROM)
        if scored_from is None or datetime.fromisoformat(scored_from) < hour:
            return f"ops/deviations version {commit['version']} ({commit.get('operation')}) may change earlier rows"
    return None


def save(lake: Lake, kept: Kept) -> None:
    """Write the states of ``kept.hour``; forget those more than ``KEEP`` older."""
    lake.write_bytes(key_of(kept.hour), pickle.dumps(kept, protocol=pickle.HIGHEST_PROTOCOL))
    oldest = key_of(kept.hour - KEEP)
    for info in list(lake.list(PREFIX)):
        name = info.key.rsplit("/", 1)[-1]
        if name.endswith(".pkl") and f"{PREFIX}/{name}" < oldest:
            lake.delete(info.key)
