"""Step logs in S3 encrypted with the lake's KMS key (deploy/dagster.yaml's compute log manager).

dagster-aws's S3ComputeLogManager takes the upload's SSE parameters only as literal
``upload_extra_args``, where ``{env: ...}`` is not resolved: this adds a ``kms_key_id`` setting that
is (``{env: IOT_LAKE_KMS_KEY_ID}``), so the key stays out of the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import Field, StringSource
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager

from iot_lake.encryption import s3_put_params


class KmsS3ComputeLogManager(S3ComputeLogManager):
    @classmethod
    def config_type(cls):
        return {**super().config_type(), "kms_key_id": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data, config_value: Mapping[str, Any]):
        config = dict(config_value)
        sse = s3_put_params(config.pop("kms_key_id", None))
        if sse:
            config["upload_extra_args"] = {**(config.get("upload_extra_args") or {}), **sse}
        return cls(inst_data=inst_data, **config)
