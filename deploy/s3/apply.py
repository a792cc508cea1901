"""Sets up the lake bucket's own guards: default SSE-KMS under the lake key, a bucket policy that
refuses other keys, other encryption and plain HTTP, public access blocked, versioning, and the
lifecycle rules of the transient areas (Pipes messages, job logs, landing announcements).

    python3 deploy/s3/apply.py --bucket acme-iot-lake --prefix lake --region eu-west-1 \
        --kms-key-arn arn:aws:kms:eu-west-1:111122223333:key/...   [--dry-run]

The documents are the templates beside this file, rendered like the IAM policies
(deploy/iam/render.py). A write that names no key gets the default one; a write that names another
key, SSE-S3, or the AWS managed key is refused: every writer of the platform names the key
(iot_lake/encryption.py), and a stray client cannot leave data under a key the platform's roles
cannot read. Needs boto3 only; applying again puts the same configuration (idempotent).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
from pathlib import Path

HERE = Path(__file__).parent
KEY_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+")


def _renderer():
    spec = importlib.util.spec_from_file_location("iot_lake_iam_render", HERE.parent / "iam" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def documents(bucket: str, kms_key_arn: str, prefix: str = "") -> dict[str, dict]:
    """'policy', 'encryption' and 'lifecycle', rendered for one bucket and key."""
    if not KEY_ARN.fullmatch(kms_key_arn):
        # The policy compares the key ARN a write names; an alias would refuse every write.
        raise ValueError(f"--kms-key-arn must be a key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), got {kms_key_arn!r}")
    render = _renderer()
    values = render.values_from({"Bucket": bucket, "KmsKeyArn": kms_key_arn, "Prefix": prefix})
    return {
        name: render.render(json.loads((HERE / f"bucket.{name}.json").read_text()), values)
        for name in ("policy", "encryption", "lifecycle")
    }


def apply(s3, bucket: str, kms_key_arn: str, prefix: str = "") -> dict[str, dict]:
    """Puts the configuration on the bucket with an S3 client; returns what it put."""
    docs = documents(bucket, kms_key_arn, prefix)
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=docs["encryption"])
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=docs["lifecycle"])
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(docs["policy"]))
    return docs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--kms-key-arn", required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--region", default=None)
    parser.add_argument("--dry-run", action="store_true", help="print the documents, change nothing")
    args = parser.parse_args(argv)
    if args.dry_run:
        print(json.dumps(documents(args.bucket, args.kms_key_arn, args.prefix), indent=2))
        return
    import boto3

    apply(boto3.client("s3", region_name=args.region), args.bucket, args.kms_key_arn, args.prefix)
    print(f"s3://{args.bucket}: default SSE-KMS, bucket policy, public access block, versioning, lifecycle set")


if __name__ == "__main__":
    main()
