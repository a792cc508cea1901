"""LakeResource: the lake root, a local directory on the embedded default or ``s3://bucket[/prefix]`` in prod."""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource

from iot_lake.encryption import delta_storage_options, s3_put_params
from iot_lake.lake import Lake


class LakeResource(ConfigurableResource):
    """The lake root: a local directory on the embedded default, ``s3://bucket[/prefix]`` in prod."""

    root: str
    region: str | None = None
    kms_key_id: str | None = None
    # Prod only: the SQS queue S3 Event Notifications on landing/ go to; the landing sensor then lists nothing.
    landing_queue_url: str | None = None

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
