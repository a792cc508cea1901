"""Resources, chosen per environment in this one place (IOT_LAKE_ENV, see iot_lake.settings)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from dagster import ConfigurableResource, EnvVar

from iot_lake.encryption import delta_storage_options, s3_put_params
from iot_lake.lake import Lake
from iot_lake.settings import Settings, local_warehouse_path
from iot_lake.sources.historian import create_engine
from resources.cases import CasesResource
from resources.sagemaker import SageMakerRunner
from resources.spark import SparkRunner
from resources.warehouse import WarehouseResource


class LakeResource(ConfigurableResource):
    """The lake root: a local directory on the embedded default, ``s3://bucket[/prefix]`` in prod."""

    root: str
    region: str | None = None
    kms_key_id: str | None = None

    def storage_options(self) -> dict[str, Any]:
        if not self.root.startswith("s3://"):
            return {}
        options: dict[str, Any] = {}
        if self.region:
            options["client_kwargs"] = {"region_name": self.region}
        # Always set, so a Lake made here never falls back to the environment's key.
        options["s3_additional_kwargs"] = s3_put_params(self.kms_key_id)
        return options

    def lake(self) -> Lake:
        return Lake(self.root, self.storage_options())

    def delta_storage_options(self) -> dict[str, str] | None:
        """Options for delta-rs (`deltalake`), which names them differently from s3fs."""
        if not self.root.startswith("s3://"):
            return None
        options = {"AWS_REGION": self.region} if self.region else {}
        return {**options, **delta_storage_options(self.kms_key_id)} or None


class HistorianResource(ConfigurableResource):
    """The historical database (device registry, past readings): any SQLAlchemy URL."""

    url: str

    @contextmanager
    def engine(self) -> Iterator[sa.Engine]:
        """An engine for one step; its pooled connections are closed when the step is done."""
        engine = create_engine(self.url)
        try:
            yield engine
        finally:
            engine.dispose()


def build_resources(settings: Settings) -> dict[str, ConfigurableResource]:
    if settings.is_prod:
        return {
            "lake": LakeResource(root=settings.lake_root, region=settings.aws_region, kms_key_id=settings.kms_key_id),
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
            ),
            "cases": CasesResource(
                env="prod",
                url=EnvVar("IOT_LAKE_CASES_URL"),
                lake_root=settings.lake_root,
                region=settings.aws_region,
                sns_topic_arn=settings.sns_topic_arn,
                event_bus_name=settings.event_bus_name,
                incident_response_plan_arn=settings.incident_response_plan_arn,
                webhook_url=settings.cases_webhook_url,
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
            webhook_url=settings.cases_webhook_url,
            ui_url=settings.ui_url,
        ),
        "warehouse": WarehouseResource(target="local", duckdb_path=local_warehouse_path(settings.lake_root)),
    }


def _set(fields: dict[str, Any]) -> dict[str, Any]:
    """The optional settings that are set; the others keep the resource's defaults."""
    return {k: v for k, v in fields.items() if v is not None}
