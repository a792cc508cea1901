"""How the objects in the (moto) lake bucket are encrypted, for the tests that check every writer uses the KMS key."""

from __future__ import annotations

from lib.code_publishing import split_s3_uri


def encryption_of(aws, uri_or_root: str, under: str = "") -> dict[str, tuple[str | None, str | None]]:
    """key -> (ServerSideEncryption, SSEKMSKeyId) of every object under a prefix, as head_object reports them."""
    bucket, prefix = split_s3_uri(uri_or_root)
    prefix = "/".join(p for p in (prefix, under) if p)
    s3 = aws.client("s3")
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            head = s3.head_object(Bucket=bucket, Key=obj["Key"])
            out[obj["Key"]] = (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId"))
    return out


def assert_all_kms(found: dict, key: str) -> None:
    assert found, "nothing was written"
    wrong = {k: v for k, v in found.items() if v != ("aws:kms", key)}
    assert not wrong, f"objects not SSE-KMS with {key}: {wrong}"
