"""The one switch between the embedded default and AWS: ``IOT_LAKE_ENV``.

``local`` (the default) needs nothing: the lake is a directory, the historian and the case store SQLite files.
``prod`` reads every setting from the environment and refuses to start with a message that names
each missing variable, so a half-configured deployment fails at load time, not mid-run.
Secrets (DSNs) are only ever read from the environment, never written to config files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ENV_VAR = "IOT_LAKE_ENV"
ENVIRONMENTS = ("local", "prod")
DEFAULT_LOCAL_ROOT = ".lake"
DEFAULT_UI_URL = "http://127.0.0.1:3000"  # `dagster dev` on the embedded default

# Variable -> what it is for; all required when IOT_LAKE_ENV=prod.
PROD_REQUIRED: dict[str, str] = {
    "IOT_LAKE_BUCKET": "S3 bucket that holds the lake (landing/, curated/, ...)",
    "AWS_REGION": "AWS region of the bucket and the services",
    "IOT_LAKE_HISTORIAN_URL": "SQLAlchemy URL of the historical database (device registry, readings)",
    "IOT_LAKE_SAGEMAKER_ROLE_ARN": "IAM role SageMaker training and batch jobs run as",
    "IOT_LAKE_SAGEMAKER_IMAGE_URI": "ECR image SageMaker jobs run in (Python with the data plane's ML dependencies)",
    "IOT_LAKE_CASES_URL": "SQLAlchemy URL of the case store (PostgreSQL)",
    "IOT_LAKE_SNS_TOPIC_ARN": "SNS topic every case event is published to (the paging channel)",
    "IOT_LAKE_KMS_KEY_ID": "ARN of the KMS key every lake write, SageMaker volume and job output is encrypted with",
    # The warehouse: lake tables in Glue (Athena, Redshift Spectrum), dbt's target in Redshift.
    "IOT_LAKE_GLUE_DATABASE": "Glue database of the lake tables (the Spectrum external schema's database)",
    "IOT_LAKE_REDSHIFT_HOST": "Redshift endpoint host dbt builds the warehouse in",
    "IOT_LAKE_REDSHIFT_DATABASE": "Redshift database of the warehouse",
    "IOT_LAKE_REDSHIFT_USER": "Redshift user dbt connects as",
    "IOT_LAKE_REDSHIFT_PASSWORD": "its password (read by dbt from the environment only)",
}
# Optional warehouse settings, with the dbt profile's defaults when unset.
WAREHOUSE_OPTIONAL: dict[str, str] = {
    "IOT_LAKE_SPECTRUM_SCHEMA": "Redshift external schema over the Glue database (default lake)",
    "IOT_LAKE_REDSHIFT_SCHEMA": "schema prefix of the warehouse's models in Redshift (default analytics)",
    "IOT_LAKE_REDSHIFT_PORT": "Redshift port (default 5439)",
}
# Optional, with SageMakerRunner's defaults when unset.
SAGEMAKER_OPTIONAL: dict[str, str] = {
    "IOT_LAKE_SAGEMAKER_TRAINING_INSTANCE_TYPE": "instance type of training jobs",
    "IOT_LAKE_SAGEMAKER_PROCESSING_INSTANCE_TYPE": "instance type of batch forecast (processing) jobs",
    "IOT_LAKE_SAGEMAKER_SUBNETS": "comma-separated VPC subnet ids the jobs run in (with the security groups)",
    "IOT_LAKE_SAGEMAKER_SECURITY_GROUPS": "comma-separated security group ids of the jobs (with the subnets)",
}
# A key ARN, not an alias or a bare id: the bucket policy (deploy/s3/) compares the key ARN a write
# names, and S3 records the ARN whatever a client sent.
KMS_KEY_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+")

# Optional case sinks: each is on when its variable is set (the webhook in either environment).
CASES_OPTIONAL: dict[str, str] = {
    "IOT_LAKE_EVENT_BUS_NAME": "EventBridge bus case events are put on",
    "IOT_LAKE_INCIDENT_RESPONSE_PLAN_ARN": "Incident Manager response plan that new or reopened cases start",
    "IOT_LAKE_CASES_WEBHOOK_URL": "URL case events are POSTed to as JSON",
}

# Where the Spark job scripts run in prod (IOT_LAKE_SPARK_MODE), and what each service needs.
SPARK_MODE_VAR = "IOT_LAKE_SPARK_MODE"
DEFAULT_SPARK_MODE = "emr-serverless"
_ENV_ARCHIVE = "S3 URI of the packed Python environment the Spark driver and executors run (deploy/spark-env/)"
SPARK_MODE_REQUIRED: dict[str, dict[str, str]] = {
    "emr-serverless": {
        "IOT_LAKE_EMR_APPLICATION_ID": "EMR Serverless application that runs the Spark job scripts",
        "IOT_LAKE_EMR_JOB_ROLE_ARN": "IAM role the EMR Serverless job runs as",
        "IOT_LAKE_SPARK_ENV_ARCHIVE": _ENV_ARCHIVE,
    },
    "glue": {
        "IOT_LAKE_GLUE_JOB_NAME": "Glue Spark job running the published entry point <lake>/_code/glue/entrypoint.py",
    },
    "emr": {
        "IOT_LAKE_EMR_CLUSTER_ID": "running EMR cluster the Spark job scripts are added to as steps",
        "IOT_LAKE_SPARK_ENV_ARCHIVE": _ENV_ARCHIVE,
    },
}


class SettingsError(RuntimeError):
    """Raised when the environment cannot produce a usable configuration."""


@dataclass(frozen=True)
class Settings:
    env: str
    lake_root: str
    historian_url: str
    aws_region: str | None = None
    s3_prefix: str = ""
    kms_key_id: str | None = None
    spark_mode: str = "local"
    spark_env_archive: str | None = None
    emr_application_id: str | None = None
    emr_job_role_arn: str | None = None
    emr_cluster_id: str | None = None
    glue_job_name: str | None = None
    sagemaker_role_arn: str | None = None
    sagemaker_image_uri: str | None = None
    sagemaker_training_instance_type: str | None = None
    sagemaker_processing_instance_type: str | None = None
    sagemaker_vpc: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())  # subnets, security groups
    cases_url: str = ""
    cases_webhook_url: str | None = None
    sns_topic_arn: str | None = None
    event_bus_name: str | None = None
    incident_response_plan_arn: str | None = None
    glue_database: str | None = None
    landing_queue_url: str | None = None
    state_table: str | None = None  # DynamoDB hot state the serving API's Lambda reads (deploy/api/)
    ui_url: str = DEFAULT_UI_URL  # where alerts link runs to: the Dagster UI

    @property
    def is_prod(self) -> bool:
        return self.env == "prod"


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _webhook_url(env: Mapping[str, str], local: bool) -> str | None:
    """IOT_LAKE_CASES_WEBHOOK_URL, https only: case events name devices, sites and what they did, and
    the signature's secret proves nothing over plain http. Locally a receiver on this machine may
    listen on http (a test server, a tunnel's local end)."""
    url = (env.get("IOT_LAKE_CASES_WEBHOOK_URL") or "").strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if local and parts.scheme == "http" and parts.hostname in LOOPBACK:
        return url
    where = " (or http to this machine, locally)" if local else ""
    raise SettingsError(f"IOT_LAKE_CASES_WEBHOOK_URL must be an https:// URL{where}, got {parts.scheme or 'no'} scheme")


def _kms_key_arn(env: Mapping[str, str]) -> str:
    value = env["IOT_LAKE_KMS_KEY_ID"].strip()
    if not KMS_KEY_ARN.fullmatch(value):
        raise SettingsError(
            "IOT_LAKE_KMS_KEY_ID must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), not an alias or a key id: "
            f"got {value!r}"
        )
    return value


def _id_list(env: Mapping[str, str], var: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in (env.get(var) or "").split(",") if part.strip())


def _sagemaker_vpc(env: Mapping[str, str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Subnets and security groups, both or neither: SageMaker needs both to place a job in a VPC."""
    subnets = _id_list(env, "IOT_LAKE_SAGEMAKER_SUBNETS")
    groups = _id_list(env, "IOT_LAKE_SAGEMAKER_SECURITY_GROUPS")
    if bool(subnets) != bool(groups):
        raise SettingsError(
            "IOT_LAKE_SAGEMAKER_SUBNETS and IOT_LAKE_SAGEMAKER_SECURITY_GROUPS go together: set both or neither"
        )
    return subnets, groups


def _ui_url(env: Mapping[str, str]) -> str:
    return (env.get("IOT_LAKE_UI_URL") or DEFAULT_UI_URL).rstrip("/")


def local_warehouse_path(lake_root: str) -> str:
    """The embedded warehouse: a DuckDB file in the lake's warehouse/ area."""
    return str(Path(lake_root) / "warehouse" / "iot_lake.duckdb")


def local_historian_url(lake_root: str) -> str:
    """The embedded stand-in for the external historian: a SQLite file beside the lake tree."""
    return "sqlite:///" + str(Path(lake_root) / "_sources" / "historian.sqlite")


def local_cases_url(lake_root: str) -> str:
    """The embedded case store: a SQLite file beside the historian's."""
    return "sqlite:///" + str(Path(lake_root) / "_sources" / "cases.sqlite")


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    name = (env.get(ENV_VAR) or "local").strip().lower()
    if name not in ENVIRONMENTS:
        raise SettingsError(f"{ENV_VAR}={name!r} is not one of {', '.join(ENVIRONMENTS)}")
    if name == "local":
        root = str(Path(env.get("IOT_LAKE_ROOT") or DEFAULT_LOCAL_ROOT).expanduser().resolve())
        return Settings(
            env="local",
            lake_root=root,
            historian_url=env.get("IOT_LAKE_HISTORIAN_URL") or local_historian_url(root),
            cases_url=env.get("IOT_LAKE_CASES_URL") or local_cases_url(root),
            cases_webhook_url=_webhook_url(env, local=True),
            ui_url=_ui_url(env),
        )

    spark_mode = (env.get(SPARK_MODE_VAR) or DEFAULT_SPARK_MODE).strip().lower()
    if spark_mode not in SPARK_MODE_REQUIRED:
        raise SettingsError(f"{SPARK_MODE_VAR}={spark_mode!r} is not one of {', '.join(SPARK_MODE_REQUIRED)}")
    required = {**PROD_REQUIRED, **SPARK_MODE_REQUIRED[spark_mode]}
    missing = [var for var in required if not env.get(var)]
    if missing:
        lines = "\n".join(f"  {var}: {required[var]}" for var in missing)
        raise SettingsError(
            f"{ENV_VAR}=prod ({SPARK_MODE_VAR}={spark_mode}) but these environment variables are not set:\n{lines}\n"
            "Set them (see docs/production.md, 'Settings') or unset IOT_LAKE_ENV for the embedded default."
        )
    prefix = env.get("IOT_LAKE_PREFIX", "").strip("/")
    bucket = env["IOT_LAKE_BUCKET"].removeprefix("s3://").strip("/")
    return Settings(
        env="prod",
        lake_root=f"s3://{bucket}" + (f"/{prefix}" if prefix else ""),
        historian_url=env["IOT_LAKE_HISTORIAN_URL"],
        aws_region=env["AWS_REGION"],
        s3_prefix=prefix,
        kms_key_id=_kms_key_arn(env),
        spark_mode=spark_mode,
        spark_env_archive=env.get("IOT_LAKE_SPARK_ENV_ARCHIVE") or None,
        emr_application_id=env.get("IOT_LAKE_EMR_APPLICATION_ID") or None,
        emr_job_role_arn=env.get("IOT_LAKE_EMR_JOB_ROLE_ARN") or None,
        emr_cluster_id=env.get("IOT_LAKE_EMR_CLUSTER_ID") or None,
        glue_job_name=env.get("IOT_LAKE_GLUE_JOB_NAME") or None,
        sagemaker_role_arn=env["IOT_LAKE_SAGEMAKER_ROLE_ARN"],
        sagemaker_image_uri=env["IOT_LAKE_SAGEMAKER_IMAGE_URI"],
        sagemaker_training_instance_type=env.get("IOT_LAKE_SAGEMAKER_TRAINING_INSTANCE_TYPE") or None,
        sagemaker_processing_instance_type=env.get("IOT_LAKE_SAGEMAKER_PROCESSING_INSTANCE_TYPE") or None,
        sagemaker_vpc=_sagemaker_vpc(env),
        cases_url=env["IOT_LAKE_CASES_URL"],
        cases_webhook_url=_webhook_url(env, local=False),
        sns_topic_arn=env["IOT_LAKE_SNS_TOPIC_ARN"],
        event_bus_name=env.get("IOT_LAKE_EVENT_BUS_NAME") or None,
        incident_response_plan_arn=env.get("IOT_LAKE_INCIDENT_RESPONSE_PLAN_ARN") or None,
        glue_database=env["IOT_LAKE_GLUE_DATABASE"],
        landing_queue_url=env.get("IOT_LAKE_LANDING_QUEUE_URL") or None,
        state_table=env.get("IOT_LAKE_STATE_TABLE") or None,
        ui_url=_ui_url(env),
    )
