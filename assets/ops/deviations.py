"""Deviations and cases: each hour's 1-minute actuals against the champion's forecast band.

``ops/deviations`` materializes itself (an eager automation condition, evaluated by Dagster's
automation sensor) whenever the hour's curated aggregates or the forecast made at its start are
new, so the hour in progress is re-scored as its objects land: it scores every minute
(iot_lake.detect.deviations), replaces the hour in the Delta table ``ops/deviations``, hands the
points to the case store (one case per incident, auto-resolve, reopen: iot_lake.cases), delivers
the store's outbox to the sinks and mirrors the cases to the lake. Re-running an hour rewrites the
same rows and changes no case.
"""

from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AutomationCondition,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    TimeWindowPartitionMapping,
    asset,
)

from assets.curated.quality import read_delta
from assets.curated.telemetry import AGGREGATE_KEYS
from assets.ml.forecast import BATCH_FORECAST_KEY
from assets.partitions import hourly_partitions
from assets.plots import chart_metadata, deviations_plot
from iot_lake.cases.mirror import mirror_to_lake
from iot_lake.cases.outbox import deliver_pending
from iot_lake.cases.sinks import fold_alarm_incidents
from iot_lake.detect import states
from iot_lake.detect.deviations import (
    COLUMNS,
    REPLAY_COLUMNS,
    SILENCE_COLUMNS,
    DeviationParams,
    accuracy,
    observe_scored,
    score_and_keep,
    with_forecasts,
)
from iot_lake.detect.metrics import publisher_for, with_band_80
from iot_lake.lake import dates_between
from iot_lake.simulate.runner import read_anomalies
from lib.pools import LAKE_WRITES
from lib.retries import RETRY_POLICY, permanent_errors
from resources.cases import CasesResource
from resources.lake import LakeResource

DEVIATIONS_KEY = AssetKey(["ops", "deviations"])
DEVIATIONS_TABLE = "ops/deviations"
FORECASTS_TABLE = "forecasts/telemetry_5min"
PARAMS = DeviationParams()


def _between(column: str, start: datetime, end: datetime):
    return (ds.field(column) >= pa.scalar(start)) & (ds.field(column) < pa.scalar(end))


# Eager, with two changes:
# - not waiting for the telemetry run to finish: its curated minutes are committed when
#   materialized, and the run's remaining GX steps took 25 s of the 60 s object -> case budget;
# - an update of the curated minutes is handled only by a run requested after it. Eager's "handled"
#   also counts this asset's own materialization, so minutes committed while the hour's deviations
#   run was going were dropped when that run (which had read the table before them) ended: the
#   hour's last object never became a case (benchmarks/latency waited 600 s for one). The request
#   counts as handled at the sensor's next tick (5 s), before a run has started and read the table.
# - the hour before the one in progress is watched too: its last objects land after the hour has
#   turned (Firehose buffers up to 5 minutes, runs queue behind each other), and a condition on the
#   latest window alone never scored them, so an incident in an hour's last minutes could open no
#   case (benchmarks/soak: the 21:00 spikes, delivered after 22:00, were curated but never scored).
AUTOMATION = (
    AutomationCondition.in_latest_time_window(lookback_delta=timedelta(hours=2))
    & (AutomationCondition.newly_missing() | AutomationCondition.any_deps_updated()).since(
        (AutomationCondition.newly_requested() | AutomationCondition.initial_evaluation()).with_label("requested")
    )
    & ~AutomationCondition.any_deps_missing()
    & ~AutomationCondition.in_progress()
).with_label("eager, without waiting for upstream runs, re-run for minutes committed during a run")


@asset(
    pool=LAKE_WRITES,  # commits to lake Delta tables (lib/pools.py)
    key=DEVIATIONS_KEY,
    # An hour is scored against the forecast made at its start: batch_forecast of the hour before.
    deps=[
        AGGREGATE_KEYS["1min"],
        AssetDep(
            BATCH_FORECAST_KEY,
            partition_mapping=TimeWindowPartitionMapping(start_offset=-1, end_offset=-1),
        ),
    ],
    partitions_def=hourly_partitions,
    # A backfill of many hours is one run: one read, one pass of each series' scorer, one commit.
    backfill_policy=BackfillPolicy.single_run(),
    group_name="ops",
    # The automation sensor launches it outside any job, so the jobs' op_retry_policy never applies.
    retry_policy=RETRY_POLICY,
    owners=["team:ml-platform"],
    kinds={"delta", "python"},
    automation_condition=AUTOMATION,
    description=(
        "Every minute of the hour against the forecast band: residual, a score in [0, 1] calibrated on the "
        "series' own past residuals, and whether it is anomalous. Delta Lake at ops/deviations; anomalous "
        "minutes open or update cases (one per incident), which reach the sinks through the outbox."
    ),
)
def deviations(context: AssetExecutionContext, lake: LakeResource, cases: CasesResource) -> MaterializeResult:
    window = context.partition_time_window
    start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
    actuals = read_delta(
        lake, "curated/telemetry_1min", "event_date", dates_between(start, end), _between("bucket_start", start, end)
    )
    forecasts = read_delta(
        lake,
        FORECASTS_TABLE,
        "origin_date",
        dates_between(start - timedelta(days=1), end),
        # Each minute takes the forecast of the latest origin at or before it (with_forecasts): the
        # start of its hour, since origins are hourly and forecasts begin at their origin.
        _between("bucket_start", start, end) & (ds.field("origin") < pa.scalar(end)),
    )
    if actuals.empty:
        context.log.info(
            f"nothing to score for {start:%Y-%m-%d %H:00}..{end:%Y-%m-%d %H:00}: "
            f"{len(actuals)} actual minutes, {len(forecasts)} forecast steps"
        )
        return MaterializeResult(metadata={"dagster/row_count": 0, "anomalous": 0})
    since = PARAMS.replay_since(start)
    # Operators' verdicts: minutes of cases marked false positive are learnt as normal when replayed,
    # so the same false alarm is less likely next time (confirmed ones stay out of training instead).
    with cases.store() as store:
        normal = store.false_positive_periods(since=since)
    table = _deviations_table(lake)
    read_version = -1 if table is None else table.version()
    # The series' states the replay of their stored rows would build, if the run before kept them.
    starts, why = states.load(lake.lake(), start, read_version, normal, PARAMS)
    context.log.info(f"scorer states at {start:%Y-%m-%d %H:%M}: {why}")
    # Read either way: the silences (iot_lake.detect.silence) look at the series' past minutes. The
    # stored band only if a series has no kept state to start from (a week of it is most of the read).
    series = actuals[["device_id", "metric"]].drop_duplicates()
    replaying = not starts or bool(set(zip(series["device_id"], series["metric"])) - starts.keys())
    history = read_delta(
        lake,
        DEVIATIONS_TABLE,
        "event_date",
        dates_between(since, start),
        _between("ts", since, start),
        columns=REPLAY_COLUMNS if replaying else SILENCE_COLUMNS,
    )
    now = _now()
    with permanent_errors(context, "deviation scoring"):
        joined = with_forecasts(actuals, forecasts)
        keep, keep_start = states.keeps(start, end, PARAMS, now), states.keeps_start(start, end, now)
        scored, kept, started = score_and_keep(
            joined, history, PARAMS, normal, (start, end), starts, keep=keep, keep_start=keep_start
        )
    commit = states.commit_metadata(start)
    _replace_hour(lake, scored, start, end, commit)
    # At most one states file a run: for the next hour once this one is over; while it is in
    # progress, what its replay built, so its next runs need not replay (iot_lake.detect.states).
    kept_for = "none"
    if keep:
        kept_for = _keep_states(context, lake, end, start, read_version, commit, normal, {**starts, **kept})
    elif started:
        kept_for = _keep_states(context, lake, start, start, read_version, commit, normal, {**starts, **started})

    outcomes = _observe(cases, scored)
    with cases.store() as store:
        sinks = cases.sinks()
        delivered = deliver_pending(store, sinks, datetime.now(UTC))
        mirrored = mirror_to_lake(store, lake.lake(), lake.delta_storage_options())
    # After the cases, which do not wait on CloudWatch: a refusal fails the step, and its re-run
    # changes no case and re-sends the same datapoints (harmless, iot_lake.detect.metrics).
    published = publisher_for(cases.env, cases.region).publish(with_band_80(scored, joined))
    # An alarm that fired after its series' case had started an incident (no stack alarm then, or its
    # incident closed) started a second one.
    folded = fold_alarm_incidents(sinks)
    metadata = {
        "dagster/row_count": len(scored),
        "series": int(scored.groupby(["device_id", "metric"]).ngroups),
        "scorer_states": why,  # kept by the run before, or why the stored rows were replayed
        "scorer_states_kept": kept_for,  # the hour this run kept states for, if any
        "anomalous": int(scored["is_anomalous"].sum()),
        "cases": MetadataValue.json(outcomes),
        "outbox": MetadataValue.json(
            {
                "delivered": delivered.delivered,
                "failed": delivered.failed,
                "waiting": delivered.waiting,
                "linked_to_alarm_incidents": delivered.linked,
                "errors": delivered.errors[:10],
            }
        ),
        "cases_mirrored": MetadataValue.json(mirrored),
        "cloudwatch_datapoints": published.datapoints,
        "alarm_incidents_folded": MetadataValue.json(folded),
        # The last day of a long range: readable, and drawing days of minutes took seconds.
        **chart_metadata(
            context,
            DEVIATIONS_KEY,
            "deviations_plot",
            deviations_plot(scored[scored["ts"] > scored["ts"].max() - pd.Timedelta(days=1)]),
        ),
    }
    metadata.update(_accuracy_metadata(lake, scored, start, end))
    return MaterializeResult(metadata=metadata)


def _deviations_table(lake: LakeResource):
    from deltalake import DeltaTable

    if not lake.lake().exists(f"{DEVIATIONS_TABLE}/_delta_log"):
        return None
    return DeltaTable(lake.lake().uri(DEVIATIONS_TABLE), storage_options=lake.delta_storage_options())


def _now() -> datetime:
    return datetime.now(UTC)


def _keep_states(
    context: AssetExecutionContext,
    lake: LakeResource,
    hour: datetime,
    start: datetime,
    read_version: int,
    commit: dict,
    normal: pd.DataFrame,
    kept: dict,
) -> str:
    """Keep the series' states at ``hour`` (the run's start, or the hour after it), if the rows they
    learnt are those stored: no other run changed an hour before the run's ``start`` between its
    read and its commit. The hour kept for, or why not."""
    the_lake = lake.lake()
    version = states.version_of(the_lake, commit, read_version, _deviations_table(lake).version())
    why = (
        "its commit not found" if version is None else states.changed_before(the_lake, start, read_version, version - 1)
    )
    if why:
        context.log.info(f"scorer states for {hour:%Y-%m-%d %H:%M} not kept: {why}")
        return f"none: {why}"
    series = {key: state for key, state in kept.items() if state is not None}
    states.save(the_lake, states.Kept(hour, version, states.marks(normal), states.fingerprint(PARAMS), series))
    return f"{len(series)} series at {hour:%Y-%m-%d %H:%M}"


def _replace_hour(lake: LakeResource, scored: pd.DataFrame, start: datetime, end: datetime, commit: dict) -> None:
    """Replace the rows of [start, end). The commit says which hours it wrote, so scorer states kept
    for later hours stay usable (iot_lake.detect.states)."""
    from deltalake import CommitProperties, write_deltalake

    days = ", ".join(f"'{d.isoformat()}'" for d in dates_between(start, end - timedelta(microseconds=1)))
    write_deltalake(
        lake.lake().uri(DEVIATIONS_TABLE),
        pa.Table.from_pandas(scored[COLUMNS], preserve_index=False),
        mode="overwrite",
        partition_by=["event_date"],
        predicate=f"event_date IN ({days}) AND ts >= '{start.isoformat()}' AND ts < '{end.isoformat()}'",
        storage_options=lake.delta_storage_options(),
        commit_properties=CommitProperties(custom_metadata=commit),
    )


def _observe(cases: CasesResource, scored: pd.DataFrame) -> dict[str, int]:
    with cases.store() as store:
        return observe_scored(store, scored)


def _accuracy_metadata(lake: LakeResource, scored: pd.DataFrame, start: datetime, end: datetime) -> dict:
    """Precision, recall and delay against the simulator's injected anomalies, when it left them."""
    truth = read_anomalies(lake.lake(), dates_between(start - timedelta(days=1), end))
    if truth is None:
        return {}
    result = accuracy(scored, truth)
    return {
        "injected_anomalies": result.anomalies,
        "detected": result.detected,
        "precision": MetadataValue.float(round(result.precision, 4)) if result.flagged else "no minute flagged",
        "recall": MetadataValue.float(round(result.recall, 4)) if result.anomalies else "no anomaly injected",
        "median_detection_delay_s": MetadataValue.float(result.median_delay_s) if result.delays_s else "none detected",
    }
