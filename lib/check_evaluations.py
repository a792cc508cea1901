"""The asset check evaluations of ended runs, read from the Dagster instance with its public API.

Shared by the check-failure alerts (sensors/alerts.py) and the lake copy of the check results
(assets/ops/check_results.py). A run's checks have all reported once it ended, so both walk the
instance's run-ended events after a cursor (their storage ids, per kind of ending) and read each
ended run's ASSET_CHECK_EVALUATION records.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from dagster import (
    AssetCheckEvaluation,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    EventLogRecord,
    RunStatusChangeRecordsFilter,
)

ENDED = (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE)  # a run's checks have all reported
RUNS_PER_PAGE = 100


class EndedRunsCursor:
    """The last run-ended event seen, per kind of ending (their storage ids are the instance's)."""

    def __init__(self, after: dict[str, int]):
        self.after = after

    @classmethod
    def parse(cls, text: str | None) -> EndedRunsCursor | None:
        return cls(json.loads(text)) if text else None

    def __str__(self) -> str:
        return json.dumps(self.after, sort_keys=True)


def ended_runs(instance: DagsterInstance, cursor: EndedRunsCursor, limit: int | None = None) -> Iterator[DagsterRun]:
    """The runs that ended after the cursor, oldest first; the cursor moves past each one yielded.
    ``limit``: at most that many run-ended events per kind of ending (None: all of them)."""
    for event_type in ENDED:
        seen = 0
        while limit is None or seen < limit:
            page = RUNS_PER_PAGE if limit is None else min(RUNS_PER_PAGE, limit - seen)
            result = instance.fetch_run_status_changes(
                RunStatusChangeRecordsFilter(event_type, after_storage_id=cursor.after.get(event_type.value, -1)),
                limit=page,
                ascending=True,
            )
            for record in result.records:
                run = instance.get_run_by_id(record.run_id)
                cursor.after[event_type.value] = record.storage_id
                seen += 1
                if run is not None:
                    yield run
            if len(result.records) < page:
                break


@dataclass(frozen=True)
class Evaluation:
    record: EventLogRecord
    evaluation: AssetCheckEvaluation


def evaluations_of_run(instance: DagsterInstance, run_id: str) -> list[Evaluation]:
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
    out = []
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if isinstance(evaluation, AssetCheckEvaluation):
            out.append(Evaluation(record, evaluation))
    return out


def run_partition(run: DagsterRun) -> str | None:
    """The run's partition, or its partition range as ``start...end`` (a single-run backfill)."""
    partition = run.tags.get("dagster/partition")
    if partition:
        return partition
    start, end = run.tags.get("dagster/asset_partition_range_start"), run.tags.get("dagster/asset_partition_range_end")
    return f"{start}...{end}" if start and end else None


def plain(value) -> object:
    """A metadata value as a plain Python value (anything not a scalar as its text)."""
    raw = getattr(value, "value", value)
    return raw if isinstance(raw, (str, int, float, bool, type(None))) else str(raw)
