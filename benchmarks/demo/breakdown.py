"""Where the main job's wall time goes: data work against orchestration, from the runs' own events.

Read from the Dagster instance the main job ran in (its run records and event logs), so the figures
are what Dagster recorded, not a second clock:

- a run's creation (the run record) to its PIPELINE_START: planning and storing the run;
- PIPELINE_START to the first step, the gaps between steps and the last step to the run's end:
  resources, log capture, the engine;
- a step that runs a job through Dagster Pipes (Spark on Sail, the SageMaker contract): from the
  step's start to "[pipes] ... opened" is launching it (inputs staged, interpreter, imports); from
  there to the first result the step reports is the job itself (the data plane's work, Sail's start
  included); from there to the step's end is reporting what it wrote (materializations, checks);
- a dbt step: the models' and tests' own execution times, as dbt reports them (``Execution
  Duration`` of each node), are data work; the rest of the step up to its first result is dbt's
  start-up (catalog, invocation, parse, adapter), the rest reporting;
- any other step runs the data plane in process (inventory, extracts, scoring, validations) up to
  its first result, then reports;
- the main job's own process: the simulation (data work, the figure its closing table prints), the
  closing table after the last run (data work: it reads the tables and replays a day with the
  operator's verdicts), and the rest outside runs (interpreter, imports, definitions load, the
  loop between runs).

A range run's steps report one materialization per partition and asset, so "reporting" and "run
creation" (its planned events) grow with the window: Dagster's event storage, not the data.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from dagster import DagsterEventType, DagsterInstance

PIPES_OPENED = "[pipes] external process successfully opened dagster pipes."
# Whatever a step emits once its work is done: the results it reports.
RESULT_EVENTS = {
    DagsterEventType.STEP_OUTPUT,
    DagsterEventType.ASSET_MATERIALIZATION,
    DagsterEventType.ASSET_CHECK_EVALUATION,
    DagsterEventType.ASSET_OBSERVATION,
}
STEP_ENDS = {DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
RUN_ENDS = {DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE}
# Steps whose Pipes job runs under the SageMaker contract; every other Pipes step is a Spark job.
SAGEMAKER_STEPS = {"ml__forecast_model", "ml__batch_forecast"}

# (category, is data work), in the order the table prints them.
SIMULATE = ("simulate the sources", True)
SPARK = ("Spark jobs (Sail, inside their Pipes session)", True)
SAGEMAKER = ("training and forecasting (SageMaker contract, inside Pipes)", True)
DBT = ("dbt models and tests (dbt's own node timings)", True)
IN_PROCESS = ("in-process data plane (inventory, extracts, scoring, GX)", True)
REPORT_CLOSING = ("the closing table (loop summary, the verdicts' replay)", True)
PROCESS = ("main process: interpreter, imports, definitions load, the loop", False)
RUN_CREATE = ("run creation (plan, run record)", False)
RUN_FRAME = ("run start and end, between steps (resources, engine, logs)", False)
LAUNCH = ("Pipes launch (inputs staged, subprocess, imports)", False)
DBT_START = ("dbt start-up and its streamed results (catalog, parse, adapter, events)", False)
REPORT = ("reporting results (materialization and check events)", False)
CATEGORIES = [
    SIMULATE,
    SPARK,
    SAGEMAKER,
    DBT,
    IN_PROCESS,
    REPORT_CLOSING,
    PROCESS,
    RUN_CREATE,
    RUN_FRAME,
    LAUNCH,
    DBT_START,
    REPORT,
]


@dataclass
class Event:
    timestamp: float
    step_key: str | None
    kind: DagsterEventType | None  # None: a plain log line
    message: str = ""
    dbt_seconds: float = 0.0  # a dbt node's own execution time, where the event reports one
    node: str = ""  # the asset (and check) the result is for: a range run reports a node per partition


@dataclass
class Breakdown:
    wall: float
    seconds: dict[tuple[str, bool], float] = field(default_factory=lambda: defaultdict(float))
    per_job: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def data(self) -> float:
        return sum(s for (_, is_data), s in self.seconds.items() if is_data)

    @property
    def overhead(self) -> float:
        return self.wall - self.data

    @property
    def overhead_share(self) -> float:
        return self.overhead / self.wall if self.wall else 0.0


def _dbt_seconds(event) -> tuple[float, str]:
    """(a dbt node's ``Execution Duration``, the node) of a result event; (0, "") if it has none."""
    data = event.dagster_event.event_specific_data
    for holder in (getattr(data, "materialization", None), getattr(data, "evaluation", None)):
        value = (getattr(holder, "metadata", None) or {}).get("Execution Duration")
        if value is not None:
            node = f"{holder.asset_key.to_user_string()}:{getattr(holder, 'check_name', '')}"
            return float(getattr(value, "value", value)), node
    return 0.0, ""


def run_events(instance: DagsterInstance, run_id: str) -> list[Event]:
    out = []
    for entry in instance.all_logs(run_id):
        kind = entry.dagster_event.event_type if entry.dagster_event else None
        dbt, node = _dbt_seconds(entry) if kind in RESULT_EVENTS else (0.0, "")
        out.append(Event(entry.timestamp, entry.step_key, kind, entry.user_message or "", dbt, node))
    return sorted(out, key=lambda e: e.timestamp)


def step_split(step_key: str, events: list[Event]) -> dict[tuple[str, bool], float]:
    """One step's seconds by category, from its own events (start to end)."""
    start, end = events[0].timestamp, events[-1].timestamp
    first_result = next((e.timestamp for e in events if e.kind in RESULT_EVENTS), end)
    opened = next((e.timestamp for e in events if e.kind is None and e.message.startswith(PIPES_OPENED)), None)
    split: dict[tuple[str, bool], float] = defaultdict(float)
    split[REPORT] += end - first_result
    if opened is not None:
        split[LAUNCH] += opened - start
        split[SAGEMAKER if step_key in SAGEMAKER_STEPS else SPARK] += first_result - opened
        return split
    # Once per node: a microbatch model reports the same duration on every partition it built.
    dbt = sum({e.node: e.dbt_seconds for e in events if e.dbt_seconds}.values())
    if dbt:
        # dbt streams its results while it runs: its nodes' time is the work, the rest start-up.
        split[REPORT] -= end - first_result
        split[DBT] += min(dbt, end - start)
        split[DBT_START] += max(0.0, end - start - dbt)
        return split
    split[IN_PROCESS] += first_result - start
    return split


def run_split(created: float, events: list[Event]) -> dict[tuple[str, bool], float]:
    """One run's seconds by category, from its creation to its end."""
    split: dict[tuple[str, bool], float] = defaultdict(float)
    started = next((e.timestamp for e in events if e.kind == DagsterEventType.RUN_START), events[0].timestamp)
    ended = next((e.timestamp for e in events if e.kind in RUN_ENDS), events[-1].timestamp)
    split[RUN_CREATE] += max(0.0, started - created)
    by_step: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        if e.step_key:
            by_step[e.step_key].append(e)
    in_steps = 0.0
    for key, step in by_step.items():
        begin = next((i for i, e in enumerate(step) if e.kind == DagsterEventType.STEP_START), None)
        finish = next((i for i, e in enumerate(step) if e.kind in STEP_ENDS), None)
        if begin is None or finish is None:
            continue
        for category, seconds in step_split(key, step[begin : finish + 1]).items():
            split[category] += seconds
        in_steps += step[finish].timestamp - step[begin].timestamp
    split[RUN_FRAME] += max(0.0, ended - started - in_steps)
    return split


def breakdown(instance: DagsterInstance, started: float, ended: float, simulate: float) -> Breakdown:
    """The main job's seconds from ``started`` to ``ended`` (epoch) by category, over every run in
    ``instance`` (a fresh one): after its last run the main job only prints its closing table."""
    out = Breakdown(ended - started)
    out.seconds[SIMULATE] += simulate
    in_runs, last_end = 0.0, started
    for record in instance.get_run_records():
        events = run_events(instance, record.dagster_run.run_id)
        if not events:
            continue
        split = run_split(record.create_timestamp.timestamp(), events)
        for category, seconds in split.items():
            out.seconds[category] += seconds
        total = sum(split.values())
        out.per_job[record.dagster_run.job_name] += total
        in_runs += total
        last_end = max(last_end, events[-1].timestamp)
    out.seconds[REPORT_CLOSING] += max(0.0, ended - last_end)
    out.seconds[PROCESS] += max(0.0, out.wall - simulate - in_runs - out.seconds[REPORT_CLOSING])
    return out
