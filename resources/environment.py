"""The resources of each environment, chosen in this one place: ``IOT_LAKE_ENV`` (see iot_lake.settings)
selects the embedded default (a local lake directory, SQLite, Sail and the SageMaker local twin, DuckDB)
or production (S3 and the AWS services, the databases named by the environment, Redshift)."""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource, EnvVar

from iot_lake.settings import Settings, local_warehouse_path
from resources.cases import CasesResource
from resources.historian import HistorianResource
from resources.lake import LakeResource
from resources.sagemaker import SageMakerRunner
from resources.spark import SparkRunner
from resources.warehouse import WarehouseResource


def _webhook(settings: Settings) -> EnvVar | None:
    # The URL (it may carry a token) is read from the environment by each run, never shown as
    # resource config in the UI; settings have already checked it (https only).
    return EnvVar("IOT_LAKE_CASES_WEBHOOK_URL") if settings.cases_webhook_url else None


def build_resources(settings: Settings) -> dict[str, ConfigurableResource]:
    if settings.is_prod:
        return {
            "lake": LakeResource(
                root=settings.lake_root,
                region=settings.aws_region,
                kms_key_id=settings.kms_key_id,
                landing_queue_url=settings.landing_queue_url,
            ),
            # EnvVar keeps the DSN (and its password) out of the run config and the UI.
            "historian": HistorianResource(url=EnvVar("IOT_LAKE_HISTORIAN_URL")),
            "spark": SparkRunner(
                mode=settings.spark_mode,
                lake_root=settings.lake_root,
                region=settings.aws_region,
                kms_key_id=settings.kms_key_id,
                env_archive=settings.spark_env_archive,
                emr_application_id=settings.emr_application_id,
                emr_job_role_arn=settings.emr_job_role_arn,
                emr_cluster_id=settings.emr_cluster_id,
                glue_job_name=settings.glue_job_name,
            ),
            "sagemaker": SageMakerRunner(
                mode="sagemaker",
                lake_root=settings.lake_root,
                region=settings.aws_region,
                kms_key_id=settings.kms_key_id,
                role_arn=settings.sagemaker_role_arn,
                image_uri=settings.sagemaker_image_uri,
                **_set(
                    {
                        "training_instance_type": settings.sagemaker_training_instance_type,
                        "processing_instance_type": settings.sagemaker_processing_instance_type,
                    }
                ),
                subnets=list(settings.sagemaker_vpc[0]),
                security_group_ids=list(settings.sagemaker_vpc[1]),
            ),
            "cases": CasesResource(
                env="prod",
                url=EnvVar("IOT_LAKE_CASES_URL"),
                lake_root=settings.lake_root,
                region=settings.aws_region,
                sns_topic_arn=settings.sns_topic_arn,
                event_bus_name=settings.event_bus_name,
                incident_response_plan_arn=settings.incident_response_plan_arn,
                webhook_url=_webhook(settings),
                ui_url=settings.ui_url,
            ),
            "warehouse": WarehouseResource(
                target="prod", glue_database=settings.glue_database, region=settings.aws_region
            ),
        }
    return {
        "lake": LakeResource(root=settings.lake_root),
        "historian": HistorianResource(url=settings.historian_url),
        "spark": SparkRunner(mode="local"),
        "sagemaker": SageMakerRunner(mode="local"),
        "cases": CasesResource(
            url=settings.cases_url,
            lake_root=settings.lake_root,
            webhook_url=_webhook(settings),
            ui_url=settings.ui_url,
        ),
        "warehouse": WarehouseResource(target="local", duckdb_path=local_warehouse_path(settings.lake_root)),
    }


def _set(fields: dict[str, Any]) -> dict[str, Any]:
    """The optional settings that are set; the others keep the resource's defaults."""
    return {k: v for k, v in fields.items() if v is not None}
