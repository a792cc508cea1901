"""The one Definitions object, the environment switch, and the data-plane boundary."""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import AssetKey, build_schedule_context

from iot_lake.settings import PROD_REQUIRED, SPARK_MODE_REQUIRED, SettingsError, load_settings
from jobs.warehouse import schedule_status

REPO = Path(__file__).resolve().parent.parent
PROD_ENV = {
    "IOT_LAKE_ENV": "prod",
    "IOT_LAKE_BUCKET": "acme-iot-lake",
    "AWS_REGION": "eu-west-1",
    "IOT_LAKE_HISTORIAN_URL": "postgresql://reader:s3cret@historian.internal:5432/plant",
    "IOT_LAKE_EMR_APPLICATION_ID": "00fabc123",
    "IOT_LAKE_EMR_JOB_ROLE_ARN": "arn:aws:iam::123456789012:role/iot-lake-emr",
    "IOT_LAKE_SPARK_ENV_ARCHIVE": "s3://acme-iot-artifacts/spark-env/iot-lake-env.tar.gz",
    "IOT_LAKE_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/iot-lake-sagemaker",
    "IOT_LAKE_SAGEMAKER_IMAGE_URI": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/iot-lake-ml:1.4",
    "IOT_LAKE_CASES_URL": "postgresql://cases:c4ses@cases.internal:5432/cases",
    "IOT_LAKE_SNS_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:iot-lake-cases",
    "IOT_LAKE_KMS_KEY_ID": "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "IOT_LAKE_GLUE_DATABASE": "iot_lake",
    "IOT_LAKE_REDSHIFT_HOST": "analytics.abc123.eu-west-1.redshift.amazonaws.com",
    "IOT_LAKE_REDSHIFT_DATABASE": "analytics",
    "IOT_LAKE_REDSHIFT_USER": "dbt",
    "IOT_LAKE_REDSHIFT_PASSWORD": "r3dsh1ft",
}


def test_every_asset_is_described_owned_and_grouped_by_its_layer(defs):
    # What the graph is (keys, lineage, jobs, schedules, sensors) is in tests/snapshots/definitions.json.
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        kinds = {t.removeprefix("dagster/kind/") for t in node.tags if t.startswith("dagster/kind/")}
        assert node.group_name == key.path[0], key
        assert node.owners == (["team:ml-platform"] if key.path[0] in ("ml", "ops") else ["team:data-platform"]), key
        assert node.description and len(node.description) > 40, key
        expected = {"warehouse": {"dbt", "duckdb"}, "dashboards": {"superset"}}.get(
            key.path[0], {"s3", "sagemaker", "delta"}
        )
        assert kinds & expected, key


# The three sources and the landing assets they deliver.
SOURCES = {
    "telemetry": {"landing/telemetry"},
    "historian": {"landing/device_registry", "landing/historical_readings"},
    "weather": {"landing/weather"},
}


def test_every_asset_is_catalogued_and_the_lineage_is_one_graph_from_the_three_sources(defs):
    graph = defs.resolve_asset_graph()
    keys = set(graph.get_all_asset_keys())
    for key in keys:
        node = graph.get(key)
        assert node.group_name in {"landing", "curated", "ml", "ops", "warehouse", "dashboards"}, key
        assert node.owners and all(o.startswith("team:") for o in node.owners), key
        assert node.description and node.description.strip(), key
        assert {t for t in node.tags if t.startswith("dagster/kind/")}, key
    sources = {AssetKey.from_user_string(k) for ks in SOURCES.values() for k in ks}
    # The landing assets are the graph's only roots...
    assert {k for k in keys if not graph.get(k).parent_keys} == sources
    # ... and every other asset is downstream of them, through curated, ML, ops and the warehouse.
    reached, frontier = set(sources), list(sources)
    while frontier:
        for child in graph.get(frontier.pop()).child_keys:
            if child not in reached:
                reached.add(child)
                frontier.append(child)
    assert keys - reached == set()

    # Each source feeds the graph beyond landing (the historian through the registry).
    def downstream(key):
        out, todo = set(), [key]
        while todo:
            for child in graph.get(todo.pop()).child_keys:
                if child not in out:
                    out.add(child)
                    todo.append(child)
        return {k.path[0] for k in out}

    for source, landed in SOURCES.items():
        layers = set().union(*(downstream(AssetKey.from_user_string(k)) for k in landed))
        assert {"curated", "warehouse"} <= layers, source
    assert {"ml", "ops", "warehouse"} <= downstream(AssetKey(["landing", "telemetry"]))


def test_every_warehouse_model_is_tested_and_its_schedules_run_in_prod_only(defs):
    graph = defs.resolve_asset_graph()
    warehouse = {k for k in graph.get_all_asset_keys() if k.path[0] == "warehouse"}
    checks = {(k.asset_key, k.name) for k in graph.asset_check_keys if k.asset_key in warehouse}
    # Every model and snapshot has dbt tests, as asset checks; the hourly facts reconcile with the lake.
    assert {key for key, _ in checks} == warehouse
    assert any(
        key == AssetKey(["warehouse", "fct_telemetry_hourly"]) and name.startswith("reconciles_with_curated")
        for key, name in checks
    )
    # Locally the warehouse schedules start stopped (dagster dev keeps its cores for landing -> case).
    for name in ("warehouse_job_schedule", "warehouse_hourly_schedule", "warehouse_daily_job_schedule"):
        assert defs.resolve_schedule_def(name).default_status.value == "STOPPED", name
    assert schedule_status(load_settings(PROD_ENV)).value == "RUNNING"
    hourly = defs.resolve_schedule_def("warehouse_hourly_schedule")
    tick = hourly.evaluate_tick(
        build_schedule_context(
            scheduled_execution_time=datetime(2026, 11, 25, 10, 40, tzinfo=UTC),
            repository_def=defs.get_repository_def(),
        )
    )
    # The facts' partition is the day of the hour that ended (its hourly runs rebuild that day).
    assert [(r.partition_key, r.run_key) for r in tick.run_requests] == [("2026-11-25", "2026-11-25-09:00")]
    tick = hourly.evaluate_tick(
        build_schedule_context(
            scheduled_execution_time=datetime(2026, 11, 26, 0, 40, tzinfo=UTC),
            repository_def=defs.get_repository_def(),
        )
    )
    assert [(r.partition_key, r.run_key) for r in tick.run_requests] == [("2026-11-25", "2026-11-25-23:00")]


def test_nightly_extract_targets_the_day_that_just_ended(defs):
    schedule = defs.resolve_schedule_def("historian_extract_job_schedule")
    tick = schedule.evaluate_tick(
        build_schedule_context(scheduled_execution_time=datetime(2026, 11, 25, 0, 30, tzinfo=UTC))
    )
    assert [r.partition_key for r in tick.run_requests] == ["2026-11-24"]


def test_nightly_training_targets_the_day_that_ended_and_forecasts_the_hour_that_ended(defs):
    training = defs.resolve_schedule_def("forecast_training_job_schedule")
    tick = training.evaluate_tick(
        build_schedule_context(scheduled_execution_time=datetime(2026, 11, 25, 2, 0, tzinfo=UTC))
    )
    assert [r.partition_key for r in tick.run_requests] == ["2026-11-24"]
    refresh = defs.resolve_schedule_def("forecast_refresh_schedule")
    tick = refresh.evaluate_tick(
        build_schedule_context(
            scheduled_execution_time=datetime(2026, 11, 25, 10, 20, tzinfo=UTC),
            repository_def=defs.get_repository_def(),
        )
    )
    # The 09:00 partition: its forecast starts at 10:00, the end of the hour that has just ended.
    assert [r.partition_key for r in tick.run_requests] == ["2026-11-25-09:00"]


def test_local_is_the_default(tmp_path):
    s = load_settings({})
    assert s.env == "local" and s.lake_root == str(Path(".lake").resolve())
    assert s.historian_url.endswith("/.lake/_sources/historian.sqlite")
    s = load_settings({"IOT_LAKE_ROOT": str(tmp_path)})
    assert s.lake_root == str(tmp_path)
    from resources.environment import build_resources

    resources = build_resources(s)
    assert {name: getattr(r, "mode", None) for name, r in resources.items()} == {
        "lake": None,
        "historian": None,
        "spark": "local",
        "sagemaker": "local",
        "cases": None,
        "warehouse": None,
    }
    assert (resources["warehouse"].target, resources["warehouse"].duckdb_path) == (
        "local",
        str(tmp_path / "warehouse" / "iot_lake.duckdb"),
    )
    assert resources["cases"].url == f"sqlite:///{tmp_path}/_sources/cases.sqlite"
    assert [s.name for s in resources["cases"].sinks()] == ["log", "jsonl"]
    with resources["cases"].store() as store:
        assert store.list_cases() == [] and (tmp_path / "_sources" / "cases.sqlite").exists()


def test_prod_names_every_missing_variable():
    with pytest.raises(SettingsError) as err:
        load_settings({"IOT_LAKE_ENV": "prod", "AWS_REGION": "eu-west-1"})
    message = str(err.value)
    for var in PROD_REQUIRED:
        assert (var in message) == (var != "AWS_REGION"), var
    # EMR Serverless is the default Spark service: its variables, and only its, are named too.
    for var in SPARK_MODE_REQUIRED["emr-serverless"]:
        assert var in message, var
    assert "IOT_LAKE_GLUE_JOB_NAME" not in message and "IOT_LAKE_EMR_CLUSTER_ID" not in message


@pytest.mark.parametrize("mode", ["glue", "emr"])
def test_prod_names_what_the_chosen_spark_service_needs(mode):
    common = {k: v for k, v in PROD_ENV.items() if k in PROD_REQUIRED or k == "IOT_LAKE_ENV"}
    with pytest.raises(SettingsError) as err:
        load_settings({**common, "IOT_LAKE_SPARK_MODE": mode})
    message = str(err.value)
    assert f"IOT_LAKE_SPARK_MODE={mode}" in message
    others = {var for m, needs in SPARK_MODE_REQUIRED.items() if m != mode for var in needs} - set(
        SPARK_MODE_REQUIRED[mode]
    )
    assert all(var in message for var in SPARK_MODE_REQUIRED[mode])
    assert not any(var in message for var in others | set(PROD_REQUIRED))
    with pytest.raises(SettingsError, match="IOT_LAKE_SPARK_MODE='databricks' is not one of emr-serverless, glue, emr"):
        load_settings({**PROD_ENV, "IOT_LAKE_SPARK_MODE": "databricks"})


def test_prod_settings_and_resources_come_from_the_environment(monkeypatch):
    s = load_settings({**PROD_ENV, "IOT_LAKE_PREFIX": "/lake/"})
    assert s.lake_root == "s3://acme-iot-lake/lake" and s.aws_region == "eu-west-1"
    for var, value in PROD_ENV.items():
        monkeypatch.setenv(var, value)
    from resources.environment import build_resources

    resources = build_resources(load_settings())
    assert resources["lake"].root == "s3://acme-iot-lake"
    assert resources["lake"].storage_options()["client_kwargs"] == {"region_name": "eu-west-1"}
    # The DSN is an EnvVar reference, so its password never lands in run config or the UI.
    assert "s3cret" not in repr(resources["historian"])
    spark = resources["spark"]
    assert (spark.mode, spark.lake_root, spark.region) == ("emr-serverless", "s3://acme-iot-lake", "eu-west-1")
    assert (spark.emr_application_id, spark.emr_job_role_arn, spark.env_archive) == (
        "00fabc123",
        "arn:aws:iam::123456789012:role/iot-lake-emr",
        "s3://acme-iot-artifacts/spark-env/iot-lake-env.tar.gz",
    )

    sagemaker = resources["sagemaker"]
    assert (sagemaker.mode, sagemaker.lake_root, sagemaker.region) == ("sagemaker", "s3://acme-iot-lake", "eu-west-1")
    assert (sagemaker.role_arn, sagemaker.image_uri) == (
        "arn:aws:iam::123456789012:role/iot-lake-sagemaker",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/iot-lake-ml:1.4",
    )
    assert (sagemaker.training_instance_type, sagemaker.processing_instance_type) == ("ml.m5.xlarge", "ml.m5.large")

    cases = resources["cases"]
    assert "c4ses" not in repr(cases)
    assert [s.name for s in cases.sinks()] == ["cloudwatch", "sns"]
    monkeypatch.setenv("IOT_LAKE_EVENT_BUS_NAME", "iot-lake")
    monkeypatch.setenv("IOT_LAKE_INCIDENT_RESPONSE_PLAN_ARN", "arn:aws:ssm-incidents::123456789012:response-plan/iot")
    assert [s.name for s in build_resources(load_settings())["cases"].sinks()] == [
        "cloudwatch",
        "sns",
        "eventbridge",
        "incident-manager",
    ]

    monkeypatch.setenv("IOT_LAKE_SAGEMAKER_TRAINING_INSTANCE_TYPE", "ml.c5.4xlarge")
    monkeypatch.setenv("IOT_LAKE_SAGEMAKER_SUBNETS", "subnet-0a1, subnet-0b2")
    monkeypatch.setenv("IOT_LAKE_SAGEMAKER_SECURITY_GROUPS", "sg-0c3")
    sagemaker = build_resources(load_settings())["sagemaker"]
    assert (sagemaker.training_instance_type, sagemaker.processing_instance_type) == ("ml.c5.4xlarge", "ml.m5.large")
    assert sagemaker.kms_key_id == PROD_ENV["IOT_LAKE_KMS_KEY_ID"]
    assert (sagemaker.subnets, sagemaker.security_group_ids) == (["subnet-0a1", "subnet-0b2"], ["sg-0c3"])

    warehouse = resources["warehouse"]
    assert (warehouse.target, warehouse.glue_database, warehouse.region) == ("prod", "iot_lake", "eu-west-1")
    assert "r3dsh1ft" not in repr(warehouse)  # dbt reads the password from the environment itself

    monkeypatch.setenv("IOT_LAKE_SPARK_MODE", "glue")
    monkeypatch.setenv("IOT_LAKE_GLUE_JOB_NAME", "iot-lake-spark")
    spark = build_resources(load_settings())["spark"]
    assert (spark.mode, spark.glue_job_name, spark.lake_root) == ("glue", "iot-lake-spark", "s3://acme-iot-lake")


@pytest.mark.parametrize(
    "key",
    ["", "alias/iot-lake", "1234abcd-12ab-34cd-56ef-1234567890ab", "arn:aws:kms:eu-west-1:123456789012:alias/iot-lake"],
)
def test_prod_requires_a_kms_key_arn(key):
    # The bucket policy (deploy/s3/) admits writes that name the key's ARN; an alias or a bare id
    # would be refused by S3 at the first write, so settings refuse it at load time instead.
    env = {**PROD_ENV, "IOT_LAKE_KMS_KEY_ID": key}
    with pytest.raises(SettingsError, match="IOT_LAKE_KMS_KEY_ID"):
        load_settings(env)


def test_sagemaker_vpc_needs_subnets_and_security_groups_together():
    with pytest.raises(SettingsError, match="set both or neither"):
        load_settings({**PROD_ENV, "IOT_LAKE_SAGEMAKER_SUBNETS": "subnet-0a1"})
    assert load_settings(PROD_ENV).sagemaker_vpc == ((), ())


def test_unknown_environment_is_rejected():
    with pytest.raises(SettingsError, match="IOT_LAKE_ENV='staging'"):
        load_settings({"IOT_LAKE_ENV": "staging"})


def _load_definitions(env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in __import__("os").environ.items() if not k.startswith("IOT_LAKE")}
    return subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_workspace_loads_and_prod_fails_at_load_time_naming_the_missing_variable():
    ok = _load_definitions({})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    env = dict(PROD_ENV)
    del env["IOT_LAKE_EMR_JOB_ROLE_ARN"]
    bad = _load_definitions(env)
    assert bad.returncode != 0
    assert "IOT_LAKE_EMR_JOB_ROLE_ARN" in bad.stdout + bad.stderr


def test_data_plane_never_imports_dagster():
    for path in (REPO / "iot_lake").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] in {"dagster_pipes"} or not name.startswith("dagster"), f"{path}: {name}"
    probe = (
        "import sys, iot_lake.cli, iot_lake.simulate.runner, iot_lake.sources.telemetry, iot_lake.sources.weather, "
        "iot_lake.sources.historian; print(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "url, local, ok",
    [
        ("https://hooks.example.com/iot?token=t0ken", False, True),
        ("http://hooks.example.com/iot", False, False),
        ("http://127.0.0.1:8099/hook", False, False),  # prod: https only, even to this machine
        ("http://127.0.0.1:8099/hook", True, True),  # locally a receiver on this machine may use http
        ("http://hooks.example.com/iot", True, False),
        ("ftp://hooks.example.com/iot", True, False),
        ("https:///no-host", False, False),
    ],
)
def test_the_case_webhook_is_https_only_checked_when_settings_load(url, local, ok, monkeypatch):
    env = {"IOT_LAKE_CASES_WEBHOOK_URL": url, **({} if local else PROD_ENV)}
    if not ok:
        with pytest.raises(SettingsError, match="IOT_LAKE_CASES_WEBHOOK_URL must be an https:// URL"):
            load_settings(env)
        return
    settings = load_settings(env)
    assert settings.cases_webhook_url == url
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    from resources.environment import build_resources

    cases = build_resources(settings)["cases"]
    # an EnvVar reference: the URL (and its token) never shows as the resource's config in the UI
    assert "t0ken" not in repr(cases) and "hooks.example" not in repr(cases) and "8099" not in repr(cases)
    # ...resolved from the environment when a run initializes the resource
    assert [s.url for s in cases.process_config_and_initialize().sinks() if s.name == "webhook"] == [url]
