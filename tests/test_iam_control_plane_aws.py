"""Every control-plane path that touches the lake through s3fs or delta-rs, run against an S3 lake on
moto and audited as the Dagster role (tests/iam_audit.py).

The static key lists of test_iam_policies can drift from the code; here the real assets, checks and
sensor run with the real LakeResource on ``s3://``, their s3fs and delta-rs requests reach the moto
server signed with the Dagster role's key (the ``aws`` fixture's environment), and each path asserts
the kinds of requests it made (so a path that stops running on S3, or stops signing as the role,
fails instead of passing unaudited) and that deploy/iam/ denies none of them. The jobs the assets
start run on the service twins, signing as their own roles, so their requests are audited too.
Set-up and inspection sign with the tests' key and are not recorded.

Paths: landing (telemetry inventory, registry and readings extracts, weather), the landing sensor
listing S3, the hourly curated run with its data-quality checks (inventories, registry, Delta
reads), ops/deviations (curated and forecast reads, its own table, the case mirror, the simulator's
ground truth), the nightly model (champion pointer, version records, the archive's hash) and the
batch forecast (exported history, the forecasts table, the history's clean-up).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pyarrow as pa
from dagster import AssetKey, AssetSelection, DagsterInstance, build_sensor_context, materialize
from deltalake import write_deltalake

from assets.curated.quality import quality_checks
from assets.curated.telemetry import curated_telemetry
from assets.landing.historian import device_registry, historical_readings
from assets.landing.telemetry import landing_telemetry
from assets.landing.weather import landing_weather
from assets.ml.forecast import batch_forecast, forecast_model
from assets.ops.deviations import DEVIATIONS_TABLE, deviations
from iot_lake.curated.aggregates import AGGREGATE_COLUMNS
from iot_lake.forecast import registry
from iot_lake.lake import Lake, registry_key
from iot_lake.simulate.deliveries import SimConfig
from iot_lake.simulate.runner import Simulator
from iot_lake.simulate.training_rows import training_rows
from lib.code_publishing import split_s3_uri
from resources.cases import CasesResource
from resources.historian import HistorianResource
from resources.lake import LakeResource
from resources.spark import SparkRunner
from sensors.landing import landing_sensor
from tests.conftest import REGION, START
from tests.iam_audit import (
    REQUEST_LOG,
    Policy,
    audited_roles,
    rendered_policies,
    requests_of,
    setup_delta_options,
    setup_storage_options,
    statements,
)
from tests.test_deviations import START as SCORED
from tests.test_deviations import _lake as deviations_lake
from tests.test_sagemaker_runner_aws import runner as sagemaker_runner
from tests.test_sagemaker_runner_aws import twin  # noqa: F401  (fixture: the SageMaker twin)
from tests.test_spark_runner_aws import (
    ARCHIVE,
    emr_serverless,  # noqa: F401  (fixture: the EMR Serverless twin)
)
from tests.test_spark_runner_aws import ROLE as SPARK_ROLE

HOUR_FORMAT = "%Y-%m-%d-%H:%M"
HOUR = START.strftime(HOUR_FORMAT)


def _mark() -> int:
    return len(REQUEST_LOG[0].calls)


def _s3_calls(since: int, lake_root: str, role: str = "dagster") -> list[tuple[str, str, str]]:
    """(client, operation, key under the lake root) of the role's S3 requests since the mark; a
    listing's key is its prefix, a batch delete's one entry per key."""
    _, prefix = split_s3_uri(lake_root)
    out = []
    for r, service, operation, params, client in REQUEST_LOG[0].calls[since:]:
        if r != role or service != "s3":
            continue
        keys = [o["Key"] for o in params.get("Delete", {}).get("Objects", [])] or [
            params.get("Key", params.get("Prefix", ""))
        ]
        out += [(client, operation, k.removeprefix(f"{prefix}/")) for k in keys]
    return out


def _assert_made(calls: list[tuple[str, str, str]], *expected: tuple[str, str, str]) -> None:
    """Each (client, operation, key prefix) is among the calls: the path ran on S3 as the role."""
    missing = [
        e for e in expected if not any(c == e[0] and op == e[1] and key.startswith(e[2]) for c, op, key in calls)
    ]
    assert not missing, f"not recorded: {missing}\nrecorded: {sorted(set(calls))}"


def _denied(lake_root: str, since: int = 0, policy: Policy | None = None) -> list[str]:
    """The Dagster role's recorded requests since the mark that its policy (or the given one) denies."""
    bucket, _ = split_s3_uri(lake_root)
    policy = policy or Policy(rendered_policies(Bucket=bucket)["dagster.policy"])
    return sorted(
        {
            f"{r.action} {r.resource}"
            for role, service, operation, params, _ in REQUEST_LOG[0].calls[since:]
            if role == "dagster"
            for r in requests_of(service, operation, params)
            if not policy.allows(r)
        }
    )


def _policy_without(lake_root: str, *prefixes: str) -> Policy:
    """The Dagster role's policy with the lake prefixes taken out of every statement's resources:
    what a policy that forgot them would allow."""
    bucket, _ = split_s3_uri(lake_root)
    gone = tuple(f"arn:aws:s3:::{bucket}/lake/{p}" for p in prefixes)
    kept = []
    for st in statements(rendered_policies(Bucket=bucket)["dagster.policy"]):
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        left = [r for r in resources if not r.startswith(gone)]
        kept += [{**st, "Resource": left}] if left else []
    return Policy({"Statement": kept})


def _spark(lake_root: str, application_id: str) -> SparkRunner:
    """The prod Spark runner on the EMR Serverless twin: its jobs sign as the Spark job role."""
    return SparkRunner(
        mode="emr-serverless",
        lake_root=lake_root,
        region=REGION,
        poll_interval=0.1,
        emr_application_id=application_id,
        emr_job_role_arn=SPARK_ROLE,
        env_archive=ARCHIVE,
    )


# --------------------------------------------------------------------------------------------
# Landing, the landing sensor, the curated hour and its data-quality checks
# --------------------------------------------------------------------------------------------


def test_landing_the_sensor_and_the_curated_hours_checks_on_s3_are_allowed_as_the_dagster_role(
    aws,
    lake_root,
    tmp_path,
    emr_serverless,  # noqa: F811
):
    # What Firehose, the weather feed and the historian deliver (the test's key: not the control plane's).
    firehose = Lake(lake_root, setup_storage_options())
    sim = Simulator(SimConfig(devices=3, seed=11, bad_rate=0.05), firehose)
    sim.backfill(START - timedelta(hours=1), START + timedelta(hours=1))  # crosses midnight: the 19th's weather
    historian = f"sqlite:///{tmp_path}/historian.sqlite"
    sim.seed_historian(historian, START.date())
    lake = LakeResource(root=lake_root, region=REGION)
    since = _mark()

    # The landing sensor lists S3 and reads the new objects' heads.
    sensed = landing_sensor(
        build_sensor_context(cursor=None, resources={"lake": lake}, instance=DagsterInstance.ephemeral())
    )
    assert ("telemetry_hourly_job", HOUR) in {(r.job_name, r.partition_key) for r in sensed.run_requests}
    _assert_made(
        _s3_calls(since, lake_root),
        ("s3fs", "ListObjectsV2", "landing/telemetry/"),
        ("s3fs", "GetObject", "landing/telemetry/2026/11/20/00/"),
    )

    mark = _mark()
    for assets, partition in (
        ([device_registry, historical_readings], "2026-11-20"),
        ([landing_weather], "2026-11-19"),
    ):
        result = materialize(
            assets, partition_key=partition, resources={"lake": lake, "historian": HistorianResource(url=historian)}
        )
        assert result.success
    _assert_made(
        _s3_calls(mark, lake_root),
        ("s3fs", "PutObject", registry_key(START.date(), "devices")),
        ("s3fs", "PutObject", "landing/historical/readings/2026/11/20/"),
        ("s3fs", "GetObject", "landing/thirdparty/weather/2026/11/19/"),
        ("s3fs", "PutObject", "landing/_inventory/weather/2026/11/19"),
    )

    # The hour: its inventory, the curated job (the EMR Serverless twin, as the Spark job role), and
    # the blocking data-quality suites, which read the inventory, the registry and the Delta tables.
    application_id, _ = emr_serverless
    mark = _mark()
    result = materialize(
        [landing_telemetry, curated_telemetry, *quality_checks],
        partition_key=HOUR,
        resources={
            "lake": lake,
            "spark": _spark(lake_root, application_id),
        },
        selection=AssetSelection.keys(AssetKey(["landing", "telemetry"]), AssetKey(["curated", "telemetry"]))
        | AssetSelection.keys(*(AssetKey(["curated", f"telemetry_{g}"]) for g in ("1min", "5min"))),
    )
    assert result.success
    suites = {e.asset_key.to_user_string() for e in result.get_asset_check_evaluations() if e.check_name == "gx_suite"}
    assert suites == {"curated/telemetry", "curated/telemetry_1min", "curated/telemetry_5min"}
    calls = _s3_calls(mark, lake_root)
    _assert_made(
        calls,
        ("s3fs", "ListObjectsV2", "landing/telemetry/2026/11/20/00"),
        ("s3fs", "PutObject", "landing/_inventory/telemetry/2026/11/20/00"),
        ("s3fs", "GetObject", "landing/_inventory/telemetry/2026/11/20/00"),  # the suite's landed keys
        ("s3fs", "GetObject", registry_key(START.date(), "device_metrics")),
        ("object_store", "GetObject", "curated/telemetry/_delta_log/"),
        ("object_store", "GetObject", "curated/telemetry_1min/"),
        ("object_store", "GetObject", "curated/telemetry_5min/"),
    )
    assert {"dagster", "emr-serverless-job"} <= audited_roles()
    assert _denied(lake_root, since) == [] and REQUEST_LOG[0].denied([split_s3_uri(lake_root)[0]]) == []
    # The audit sees the inventories: a policy that forgot landing/_inventory/ is caught denying them.
    forgot = _denied(lake_root, since, _policy_without(lake_root, "landing/_inventory/"))
    assert {d.split(" ")[0] for d in forgot} == {"s3:PutObject"}
    assert {d.rsplit("/lake/", 1)[1].split("/")[2] for d in forgot} == {"telemetry", "weather"}
    assert all("/lake/landing/_inventory/" in d for d in forgot)


# --------------------------------------------------------------------------------------------
# ops/deviations and the case mirror
# --------------------------------------------------------------------------------------------


def test_deviations_and_the_case_mirror_on_s3_are_allowed_as_the_dagster_role(aws, lake_root, tmp_path):
    deviations_lake(lake_root, setup_storage_options(), {**setup_delta_options(), "AWS_REGION": REGION})
    topic = aws.client("sns").create_topic(Name=f"cases-{tmp_path.name[-8:]}")["TopicArn"]
    resources = {
        "lake": LakeResource(root=lake_root, region=REGION),
        "cases": CasesResource(
            env="prod",
            url=f"sqlite:///{tmp_path}/cases.sqlite",
            lake_root=lake_root,
            region=REGION,
            sns_topic_arn=topic,
        ),
    }
    since = _mark()
    cases = []
    for h in (1, 2):  # the second hour reads the first's rows as history, and opens the spike's case
        result = materialize(
            [deviations], partition_key=(SCORED + timedelta(hours=h)).strftime(HOUR_FORMAT), resources=resources
        )
        [meta] = [m.metadata for m in result.asset_materializations_for_node("ops__deviations")]
        cases.append(meta["cases_mirrored"].value)
    assert cases[-1]["cases/cases"] == 1 and "injected_anomalies" in meta  # the ground truth was read
    calls = _s3_calls(since, lake_root)
    _assert_made(
        calls,
        ("object_store", "GetObject", "curated/telemetry_1min/"),
        ("object_store", "GetObject", "forecasts/telemetry_5min/"),
        ("object_store", "GetObject", f"{DEVIATIONS_TABLE}/"),  # the second hour's history
        ("object_store", "PutObject", f"{DEVIATIONS_TABLE}/"),
        *(
            ("object_store", "PutObject", f"{t}/_delta_log/")
            for t in ("cases/cases", "cases/history", "cases/feedback")
        ),
        ("s3fs", "GetObject", "landing/_simulator/"),  # the injected anomalies
        ("s3fs", "PutObject", "ops/deviation_states/"),  # the scorers' states kept for the next hour
        ("s3fs", "GetObject", "ops/deviation_states/"),  # ... and read by it
        ("s3fs", "GetObject", f"{DEVIATIONS_TABLE}/_delta_log/"),  # the commits since they were kept
    )
    assert _denied(lake_root, since) == []
    # The audit sees the writes: a policy that forgot ops/ and cases/ is caught denying each table's.
    forgot = _denied(lake_root, since, _policy_without(lake_root, "ops/", "cases/"))
    allowed_only_by_ops_and_cases = ("ops/deviations/", "ops/deviation_states", "cases/")
    assert all(d.split("/lake/")[1].startswith(allowed_only_by_ops_and_cases) for d in forgot), forgot
    written = {d.split("/lake/")[1].split("/_delta_log/")[0] for d in forgot if d.startswith("s3:PutObject")}
    assert {"ops/deviations", "cases/cases", "cases/history", "cases/feedback"} <= written


# --------------------------------------------------------------------------------------------
# The nightly model and the batch forecast
# --------------------------------------------------------------------------------------------

DAY = date(2026, 11, 14)


def _forecast_inputs(lake_root: str, tmp_path) -> None:
    """Two days of a small fleet, written by the test itself: the night's training data (what the
    training-data Spark job leaves), the 5-minute aggregates the batch forecast exports its history
    from, and the registry snapshot the export joins them with."""
    from iot_lake.sources.historian import create_engine, land_registry

    devices, seed = 2, 42  # training_rows' fleet, and the simulator's with the same seed
    rows = training_rows(devices=devices, days=2, start=DAY - timedelta(days=1), seed=seed)
    # A day and a half: too young to score a candidate, so the model is the seasonal-naive fallback
    # (promoted, recorded and hashed like any), which trains and forecasts in seconds.
    rows = rows[rows["bucket_start"] >= pd.Timestamp(DAY, tz="UTC") - pd.Timedelta(hours=12)]
    lake = Lake(lake_root, setup_storage_options())
    lake.write_bytes(f"{registry.training_data_key(DAY)}/part-0.parquet", rows.to_parquet(index=False))
    y = rows["y"]
    aggregates = rows.assign(unit="x", mean=y, min=y, max=y, stddev=float("nan"), last=y, last_ts=rows["bucket_start"])
    write_deltalake(
        lake.uri("curated/telemetry_5min"),
        pa.Table.from_pandas(aggregates[AGGREGATE_COLUMNS], preserve_index=False),
        partition_by=["event_date"],
        storage_options={**setup_delta_options(), "AWS_REGION": REGION},
    )
    url = f"sqlite:///{tmp_path}/historian.sqlite"
    Simulator(SimConfig(devices=devices, seed=seed), lake).seed_historian(url, DAY - timedelta(days=1))
    engine = create_engine(url)
    land_registry(lake, engine, DAY - timedelta(days=1))
    engine.dispose()


def test_the_nightly_model_and_the_batch_forecast_on_s3_are_allowed_as_the_dagster_role(
    aws,
    lake_root,
    tmp_path,
    twin,  # noqa: F811
    emr_serverless,  # noqa: F811
):
    _forecast_inputs(lake_root, tmp_path)
    application_id, _ = emr_serverless
    resources = {
        "lake": LakeResource(root=lake_root, region=REGION),
        "sagemaker": sagemaker_runner(lake_root),
        "spark": _spark(lake_root, application_id),
    }
    since = _mark()
    trained = materialize([forecast_model], partition_key=DAY.isoformat(), resources=resources)
    [meta] = [m.metadata for m in trained.asset_materializations_for_node("ml__forecast_model")]
    assert meta["promoted"].value is True
    _assert_made(
        _s3_calls(since, lake_root),
        ("s3fs", "HeadObject", registry.CHAMPION_KEY),  # none yet
        ("s3fs", "ListObjectsV2", registry.training_data_key(DAY)),  # the channel's data is there
        ("s3fs", "GetObject", f"{registry.jobs_key()}/"),  # the job's metrics, the archive hashed
        ("s3fs", "PutObject", registry.version_key(meta["job_name"].value)),
        ("s3fs", "PutObject", registry.CHAMPION_KEY),
    )
    assert {"dagster", "sagemaker"} <= audited_roles()

    mark = _mark()
    forecast = materialize([batch_forecast], partition_key=f"{DAY.isoformat()}-23:00", resources=resources)
    [meta] = [m.metadata for m in forecast.asset_materializations_for_node("ml__batch_forecast")]
    assert meta["dagster/row_count"].value > 0
    calls = _s3_calls(mark, lake_root)
    history = registry.history_key(datetime.combine(DAY + timedelta(days=1), datetime.min.time(), UTC))
    _assert_made(
        calls,
        ("s3fs", "GetObject", registry.CHAMPION_KEY),
        ("s3fs", "GetObject", f"{history}/forecasts/forecasts.parquet"),  # the processing job's output
        ("s3fs", "GetObject", f"{history}/rows/"),  # the chart's recent history
        ("object_store", "PutObject", "forecasts/telemetry_5min/"),
        ("s3fs", "DeleteObjects", f"{history}/"),  # the exported history, cleaned up
    )
    assert {"dagster", "sagemaker", "emr-serverless-job"} <= audited_roles()
    assert _denied(lake_root, since) == [] and REQUEST_LOG[0].denied([split_s3_uri(lake_root)[0]]) == []
    # The clean-up was denied before the policy let the role delete the exported history (this audit's
    # finding): the policy without it is caught denying exactly those deletes.
    forgot = _denied(lake_root, since, _policy_without(lake_root, "models/forecast/history/"))
    assert forgot and all(
        d.startswith(f"s3:DeleteObject arn:aws:s3:::{split_s3_uri(lake_root)[0]}/lake/{history}") for d in forgot
    )
    # The audit sees the registry's and the forecasts' writes: a policy that forgot them denies them.
    forgot = _denied(lake_root, since, _policy_without(lake_root, "models/forecast/", "forecasts/"))
    assert any(f"/lake/{registry.CHAMPION_KEY}" in d and d.startswith("s3:PutObject") for d in forgot)
    assert any("/lake/forecasts/telemetry_5min/_delta_log/" in d and d.startswith("s3:PutObject") for d in forgot)
