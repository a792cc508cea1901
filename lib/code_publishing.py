"""The code a cluster runs, published under the lake's ``_code/`` prefix.

- ``_code/iot_lake-<sha>.zip``: the data-plane package, named by the hash of its bytes, so runs of
  different code versions never overwrite each other's package and re-publishing is a HEAD.
- ``_code/entrypoint-<sha>.py``: iot_lake/spark/entrypoint.py, content-addressed the same way
  (EMR Serverless and EMR steps name the script per run).
- ``_code/glue/entrypoint.py``: the same script at a fixed key for Glue, which reads its script from
  the job definition, not from the run. The script is generic (the module and the code zip come
  with each run), so it rarely changes; it is rewritten only when its content differs.

The zip is deterministic (sorted entries, fixed timestamps), so unchanged code hashes the same.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

import iot_lake
from iot_lake.spark import entrypoint

PACKAGE_DIR = Path(iot_lake.__file__).parent
ENTRYPOINT_SOURCE = Path(entrypoint.__file__)
GLUE_ENTRYPOINT = "glue/entrypoint.py"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class PublishedCode:
    package_uri: str
    entrypoint_uri: str


def package_zip(package_dir: Path = PACKAGE_DIR) -> bytes:
    """The package's Python sources as a zip importable from ``sys.path`` (``iot_lake/...`` inside)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in package_dir.rglob("*.py") if "__pycache__" not in p.parts):
            info = zipfile.ZipInfo(f"{package_dir.name}/{path.relative_to(package_dir).as_posix()}", _ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
    return buffer.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key.strip("/")


def code_prefix(lake_root: str) -> tuple[str, str]:
    bucket, prefix = split_s3_uri(lake_root)
    return bucket, f"{prefix}/_code" if prefix else "_code"


def glue_entrypoint_uri(lake_root: str) -> str:
    bucket, prefix = code_prefix(lake_root)
    return f"s3://{bucket}/{prefix}/{GLUE_ENTRYPOINT}"


def publish_code(
    s3, lake_root: str, *, glue: bool = False, kms_key_id: str | None = None, package_dir: Path = PACKAGE_DIR
) -> PublishedCode:
    """Upload what is not there yet; returns where the package and the entry point are."""
    bucket, prefix = code_prefix(lake_root)
    extra: dict[str, Any] = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id} if kms_key_id else {}

    def put_if_changed(key: str, body: bytes) -> str:
        digest = _sha(body)
        try:
            if s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get("sha256") == digest:
                return f"s3://{bucket}/{key}"
        except ClientError as err:
            if err.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
                raise
        s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"sha256": digest}, **extra)
        return f"s3://{bucket}/{key}"

    package = package_zip(package_dir)
    script = ENTRYPOINT_SOURCE.read_bytes()
    script_key = GLUE_ENTRYPOINT if glue else f"entrypoint-{_sha(script)[:16]}.py"
    return PublishedCode(
        package_uri=put_if_changed(f"{prefix}/iot_lake-{_sha(package)[:16]}.zip", package),
        entrypoint_uri=put_if_changed(f"{prefix}/{script_key}", script),
    )


def cluster_requirements() -> list[str]:
    """The data plane's dependencies (pyproject ``dependencies``) pinned to the versions installed here.

    The versions the control plane runs and is tested with, including dagster-pipes, whose protocol
    must match the orchestrator's. Glue installs these per run; deploy/spark-env builds the
    EMR archive from the same list.
    """
    pinned = []
    for requirement in importlib.metadata.requires("iot-lake") or []:
        if "extra ==" in requirement:
            continue
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
        pinned.append(f"{name}=={importlib.metadata.version(name)}")
    return pinned
