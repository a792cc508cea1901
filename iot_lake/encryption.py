"""Server-side encryption of every object written to the lake: SSE-KMS with one configurable key.

The key is ``IOT_LAKE_KMS_KEY_ID`` (a key id, alias or ARN). The control plane reads it through
iot_lake.settings and hands it on; jobs on EMR, Glue and SageMaker get it in their environment, so
the data plane finds it here wherever it runs. Each writer names the request parameters its own
way, so this module says it once per writer:

- boto3 clients: ``encrypt_writes(client, key)`` adds the parameters to every PutObject,
  CreateMultipartUpload and CopyObject the client makes, including calls made by libraries that
  take the client (dagster-aws's Pipes injector, dagster-pipes' message writer);
- fsspec/s3fs: ``s3fs_options`` (``s3_additional_kwargs``, used by Lake);
- delta-rs: ``delta_storage_options`` (object_store's config keys);
- Spark on EMR/Glue: ``spark_confs`` (EMRFS and, for s3a:// paths, Hadoop's S3A).

Without a key nothing is added and the bucket's default encryption applies.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

KMS_KEY_VAR = "IOT_LAKE_KMS_KEY_ID"
SSE_KMS = "aws:kms"
# The S3 operations that create objects and accept SSE parameters.
WRITE_OPERATIONS = ("PutObject", "CreateMultipartUpload", "CopyObject")


def kms_key_id(environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    return (env.get(KMS_KEY_VAR) or "").strip() or None


def s3_put_params(key: str | None) -> dict[str, str]:
    """boto3 PutObject/CreateMultipartUpload/CopyObject parameters (also upload_file's ExtraArgs)."""
    return {"ServerSideEncryption": SSE_KMS, "SSEKMSKeyId": key} if key else {}


def s3fs_options(key: str | None) -> dict[str, Any]:
    return {"s3_additional_kwargs": s3_put_params(key)} if key else {}


def delta_storage_options(key: str | None) -> dict[str, str]:
    return {"aws_server_side_encryption": SSE_KMS, "aws_sse_kms_key_id": key} if key else {}


def spark_confs(key: str | None) -> dict[str, str]:
    """Spark confs that make the cluster's S3 writes SSE-KMS with the key: EMRFS (s3://) and S3A."""
    if not key:
        return {}
    return {
        "spark.hadoop.fs.s3.enableServerSideEncryption": "true",
        "spark.hadoop.fs.s3.serverSideEncryption.kms.keyId": key,
        "spark.hadoop.fs.s3a.encryption.algorithm": "SSE-KMS",
        "spark.hadoop.fs.s3a.encryption.key": key,
    }


def encrypt_writes(client, key: str | None):
    """Make every object-creating call of this boto3 S3 client request SSE-KMS with the key.

    A boto3 Session works too: then every S3 client it makes from now on (the SageMaker SDK's).
    Parameters a caller sets itself are kept. Registering twice is harmless. Returns its argument.
    """
    if not key:
        return client
    events = client.meta.events if hasattr(client, "meta") else client.events
    sse = s3_put_params(key)

    def add(params: dict, **_):
        for name, value in sse.items():
            params.setdefault(name, value)

    for operation in WRITE_OPERATIONS:
        events.register(f"before-parameter-build.s3.{operation}", add, unique_id=f"iot-lake-sse-{operation}")
    return client
