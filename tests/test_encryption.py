"""SSE-KMS on every S3 write path, at the moto boundary: with IOT_LAKE_KMS_KEY_ID set, each object
written through fsspec, boto3, delta-rs, the Pipes injector and writer, the published code and the
SageMaker SDK's staging reports ``aws:kms`` and that key; the Spark and SageMaker job requests carry
the settings their services need to do the same.
"""

from __future__ import annotations

import io
import os
import shlex

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from iot_lake.encryption import KMS_KEY_VAR, encrypt_writes
from iot_lake.lake import Lake
from iot_lake.spark.entrypoint import split_argv
from lib.code_publishing import PublishedCode, publish_code, split_s3_uri
from resources.environment import build_resources
from resources.lake import LakeResource
from resources.spark_aws import emr_step, glue_params
from tests.conftest import REGION
from tests.encryption_audit import assert_all_kms, encryption_of
from tests.spark_twins import parse_confs
from tests.test_sagemaker_runner_aws import lake, materialize_one, process, twin  # noqa: F401
from tests.test_sagemaker_runner_aws import runner as sagemaker_runner
from tests.test_spark_runner_aws import ARCHIVE

CODE = PublishedCode("s3://b/lake/_code/iot_lake-1.zip", "s3://b/lake/_code/entrypoint-1.py")


@pytest.fixture
def kms_key(aws) -> str:
    return aws.client("kms").create_key(Description="iot-lake tests")["KeyMetadata"]["Arn"]


def test_lake_writes_through_fsspec_and_delta_rs_are_sse_kms(aws, lake_root, kms_key, moto_endpoint):
    resource = LakeResource(root=lake_root, region=REGION, kms_key_id=kms_key)
    the_lake = resource.lake()
    the_lake.write_text("landing/_inventory/x.json", "{}")
    with the_lake.open("models/forecast/big.bin", "wb") as f:  # s3fs's multipart path
        f.write(os.urandom(6 * 2**20))
    options = {**resource.delta_storage_options(), "AWS_ENDPOINT_URL": moto_endpoint, "AWS_ALLOW_HTTP": "true"}
    write_deltalake(the_lake.uri("forecasts/t"), pa.table({"x": [1, 2]}), storage_options=options)
    write_deltalake(the_lake.uri("forecasts/t"), pa.table({"x": [3]}), mode="append", storage_options=options)
    found = encryption_of(aws, lake_root)
    assert any("/_delta_log/" in k for k in found) and any(k.endswith(".parquet") for k in found)
    assert_all_kms(found, kms_key)


def test_data_plane_lake_takes_the_key_from_the_environment(aws, lake_root, kms_key, monkeypatch):
    Lake(lake_root).write_text("curated/plain.txt", "no key yet")
    monkeypatch.setenv(KMS_KEY_VAR, kms_key)
    Lake(lake_root).write_text("curated/in-a-job.txt", "as a job on EMR, Glue or SageMaker writes")
    found = encryption_of(aws, lake_root, "curated")
    assert found.pop(f"{split_s3_uri(lake_root)[1]}/curated/in-a-job.txt") == ("aws:kms", kms_key)
    [(_, plain_key)] = found.values()  # written before the key was set
    assert plain_key is None


def test_boto3_writes_through_an_encrypted_client(aws, lake_root, kms_key):
    bucket, prefix = split_s3_uri(lake_root)
    s3 = encrypt_writes(aws.client("s3"), kms_key)
    s3.put_object(Bucket=bucket, Key=f"{prefix}/_pipes/a.json", Body=b"{}")
    s3.upload_fileobj(io.BytesIO(os.urandom(9 * 2**20)), bucket, f"{prefix}/_pipes/big.bin")  # multipart
    s3.copy_object(
        Bucket=bucket, Key=f"{prefix}/_pipes/copy.json", CopySource={"Bucket": bucket, "Key": f"{prefix}/_pipes/a.json"}
    )
    publish_code(aws.client("s3"), lake_root, kms_key_id=kms_key)
    assert len(found := encryption_of(aws, lake_root)) == 5
    assert_all_kms(found, kms_key)


PROD_KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_prod_resources_hand_the_key_to_every_writer(monkeypatch):
    env = {
        "IOT_LAKE_ENV": "prod",
        "IOT_LAKE_BUCKET": "b",
        "AWS_REGION": REGION,
        "IOT_LAKE_HISTORIAN_URL": "sqlite://",
        "IOT_LAKE_SAGEMAKER_ROLE_ARN": "arn:aws:iam::1:role/sm",
        "IOT_LAKE_SAGEMAKER_IMAGE_URI": "img",
        "IOT_LAKE_CASES_URL": "sqlite://",
        "IOT_LAKE_SNS_TOPIC_ARN": "arn:aws:sns:us-east-1:1:t",
        "IOT_LAKE_GLUE_DATABASE": "iot_lake",
        "IOT_LAKE_REDSHIFT_HOST": "h",
        "IOT_LAKE_REDSHIFT_DATABASE": "d",
        "IOT_LAKE_REDSHIFT_USER": "u",
        "IOT_LAKE_REDSHIFT_PASSWORD": "p",
        "IOT_LAKE_EMR_APPLICATION_ID": "app",
        "IOT_LAKE_EMR_JOB_ROLE_ARN": "arn:aws:iam::1:role/emr",
        "IOT_LAKE_SPARK_ENV_ARCHIVE": "s3://b/env.tgz",
        KMS_KEY_VAR: PROD_KEY,
    }
    from iot_lake.settings import load_settings

    res = build_resources(load_settings(env))
    assert res["lake"].storage_options()["s3_additional_kwargs"] == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": PROD_KEY,
    }
    assert res["lake"].delta_storage_options()["aws_sse_kms_key_id"] == PROD_KEY
    assert res["spark"].kms_key_id == res["sagemaker"].kms_key_id == PROD_KEY


def test_spark_requests_carry_sse_kms_for_emrfs_s3a_and_the_data_plane(kms_key):
    expected = {
        "spark.hadoop.fs.s3.enableServerSideEncryption": "true",
        "spark.hadoop.fs.s3.serverSideEncryption.kms.keyId": kms_key,
        "spark.hadoop.fs.s3a.encryption.algorithm": "SSE-KMS",
        "spark.hadoop.fs.s3a.encryption.key": kms_key,
    }
    step = emr_step(code=CODE, env_archive=ARCHIVE, module="m", args=[], pipes_env={}, kms_key_id=kms_key)
    confs = parse_confs(step["HadoopJarStep"]["Args"])
    assert (
        confs.items()
        >= {
            **expected,
            f"spark.yarn.appMasterEnv.{KMS_KEY_VAR}": kms_key,
            f"spark.executorEnv.{KMS_KEY_VAR}": kms_key,
        }.items()
    )

    arguments = glue_params(job_name="j", code=CODE, module="m", args=["--x"], kms_key_id=kms_key)["Arguments"]
    assert parse_confs(["--conf", *shlex.split(arguments["--conf"])]).items() >= expected.items()
    # Glue cannot set the driver's environment: the entry point sets it from its own argument.
    assert split_argv(["--JOB_ID", "j_1", *[p for kv in arguments.items() for p in kv]])[2] == {KMS_KEY_VAR: kms_key}

    plain = emr_step(code=CODE, env_archive=ARCHIVE, module="m", args=[], pipes_env={})
    assert not any("Encryption" in a or "encryption" in a or KMS_KEY_VAR in a for a in plain["HadoopJarStep"]["Args"])


def test_processing_job_requests_the_key_for_its_outputs_and_its_script(aws, lake_root, lake, twin, kms_key):  # noqa: F811
    # Training: tests/test_sagemaker_runner_aws.py (OutputDataConfig, the SDK's staging); EMR
    # Serverless: tests/test_spark_runner_aws.py (the confs, the job's own message chunks).
    sagemaker = sagemaker_runner(lake_root, kms_key_id=kms_key, subnets=["subnet-0a1"], security_group_ids=["sg-0c3"])
    result, _, _ = materialize_one(process, lake_root, sagemaker)
    assert result.success
    processing = twin.last("CreateProcessingJob")
    assert processing["ProcessingOutputConfig"]["KmsKeyId"] == kms_key
    assert processing["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] == kms_key
    assert processing["NetworkConfig"] == {"VpcConfig": {"Subnets": ["subnet-0a1"], "SecurityGroupIds": ["sg-0c3"]}}
    assert processing["Environment"][KMS_KEY_VAR] == kms_key
    written = {**encryption_of(aws, lake_root, "_code"), **encryption_of(aws, lake_root, "_pipes")}
    assert any("/messages/" in k for k in written)  # written by the container's script
    assert_all_kms(written, kms_key)
