"""The IAM policies in deploy/iam/: least privilege, and enough for what the code does.

Every moto-based test also checks the roles (tests/conftest.py, tests/iam_audit.py): the ``aws``
fixture records each boto3 call production code makes in the test process and fails the test if
deploy/iam/dagster.policy.json, rendered for that test's lake, denies one; and the moto server logs
the requests signed with a role's key, checked against that role's policy: the job roles' (the
twins and their job processes: boto3, s3fs, Sail) and the Dagster role's (the control plane's s3fs
and delta-rs clients, whose key is the environment's). Here: the policies' shape, the evaluator
itself, that the control plane's s3fs and delta-rs requests are recorded as its role, what it must
not write, and the job roles' lake keys built by the code's own key functions (the SageMaker role's
twin tests use made-up prefixes). Every control-plane path that touches the lake runs on S3 under
the audit in tests/test_iam_control_plane_aws.py.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from iot_lake.cases.sinks import CloudWatchSink
from iot_lake.detect.metrics import alarm_name
from iot_lake.forecast import registry
from iot_lake.lake import Lake, registry_key
from iot_lake.sources.historian import readings_prefix
from iot_lake.sources.telemetry import inventory_key
from jobs.maintenance import MaintenanceConfig, maintain_table
from lib.code_publishing import split_s3_uri
from resources.lake import LakeResource
from tests.conftest import REGION
from tests.iam_audit import (
    ACCOUNT,
    IAM_DIR,
    REQUEST_LOG,
    ROLE_KEYS,
    Policy,
    Request,
    S3RequestLog,
    load_iam_renderer,
    rendered_policies,
    requests_of,
    setup_delta_options,
    setup_storage_options,
    statements,
)

BUCKET = "acme-lake"
LAKE = f"arn:aws:s3:::{BUCKET}/lake"
HOUR = datetime(2026, 11, 20, 5, tzinfo=UTC)
DAY = date(2026, 11, 20)
ROLES = ("dagster", "emr-serverless-job", "emr-ec2-instance", "glue-job", "sagemaker", "api-lambda")
SPARK_ROLES = ("emr-serverless-job", "emr-ec2-instance", "glue-job")
SERVICES = {
    "dagster": {"ec2.amazonaws.com", "ecs-tasks.amazonaws.com"},
    "emr-serverless-job": {"emr-serverless.amazonaws.com"},
    "emr-ec2-instance": {"ec2.amazonaws.com"},  # the EMR cluster's instance profile (IOT_LAKE_SPARK_MODE=emr)
    "glue-job": {"glue.amazonaws.com"},
    "sagemaker": {"sagemaker.amazonaws.com"},
    "api-lambda": {"lambda.amazonaws.com"},
}
API_DIR = IAM_DIR.parent / "api"  # the serving API's Lambda role lives with its deploy definition


@pytest.fixture(scope="module")
def policies() -> dict[str, Policy]:
    docs = rendered_policies(Bucket=BUCKET)
    return {role: Policy(docs[f"{role}.policy"]) for role in ROLES}


def s3(action: str, key: str) -> Request:
    return Request(f"s3:{action}", f"{LAKE}/{key}")


def test_every_role_has_a_policy_and_a_trust_policy_for_its_service_only():
    docs = rendered_policies(Bucket=BUCKET)
    assert set(docs) == {f"{r}.{kind}" for r in ROLES for kind in ("policy", "trust")}
    for role in ROLES:
        [trust] = statements(docs[f"{role}.trust"])
        assert trust["Action"] == "sts:AssumeRole" and trust["Effect"] == "Allow"
        principals = trust["Principal"]["Service"]
        assert set(principals if isinstance(principals, list) else [principals]) == SERVICES[role]
        if role != "emr-ec2-instance":  # EC2 assumes an instance profile's role without a source account
            assert trust["Condition"]["StringEquals"]["aws:SourceAccount"] == "123456789012"


VPC_DESCRIBE = {f"ec2:Describe{x}" for x in ("NetworkInterfaces", "Vpcs", "DhcpOptions", "Subnets", "SecurityGroups")}


def test_no_wildcard_actions_and_no_s3_access_beyond_the_lake():
    for name, doc in rendered_policies(Bucket=BUCKET).items():
        if not name.endswith(".policy"):
            continue
        for st in statements(doc):
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            assert st["Effect"] == "Allow"
            assert all(a != "*" and not a.endswith(":*") for a in actions), (name, st["Sid"])
            if any(a.startswith("s3:") for a in actions):
                assert "*" not in resources, (name, st["Sid"])
                for r in resources:
                    # The lake bucket (prefix-scoped where it is objects), the env archive, the compute logs;
                    # bucket names only for the SageMaker SDK's check.
                    assert (
                        r == f"arn:aws:s3:::{BUCKET}"
                        or r.startswith(f"{LAKE}/")
                        or r.startswith("arn:aws:s3:::iot-lake-artifacts/")
                        or r.startswith("arn:aws:s3:::no-log-bucket")
                        or (r == "arn:aws:s3:::*" and actions == ["s3:ListAllMyBuckets"])
                    ), (name, r)
            if (
                "*" in resources
            ):  # only actions IAM cannot scope to a resource, and narrowed by a condition where it can be
                # (EC2's Describe calls, for SageMaker jobs placed in a VPC, have no resource level.)
                # ListIncidentRecords has no resource type (the case sink finds alarm-started incidents).
                unscoped = {
                    "cloudwatch:PutMetricData",
                    "ecr:GetAuthorizationToken",
                    "ssm-incidents:ListIncidentRecords",
                }
                assert set(actions) <= unscoped | VPC_DESCRIBE, (name, st["Sid"])


def test_pass_role_only_in_the_control_plane_and_only_for_the_job_roles():
    docs = rendered_policies(Bucket=BUCKET)
    passing = [
        (name, st)
        for name, doc in docs.items()
        if name.endswith(".policy")
        for st in statements(doc)
        if any(
            "PassRole" in a or a.startswith("iam:*")
            for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])
        )
    ]
    [(name, st)] = passing
    assert name == "dagster.policy"
    assert sorted(st["Resource"]) == sorted(
        f"arn:aws:iam::123456789012:role/{r}" for r in ("iot-lake-spark", "iot-lake-spark", "iot-lake-sagemaker")
    )
    assert set(st["Condition"]["StringEquals"]["iam:PassedToService"]) == {
        "emr-serverless.amazonaws.com",
        "glue.amazonaws.com",
        "sagemaker.amazonaws.com",
    }
    policy = Policy(docs["dagster.policy"])
    [run] = [
        r
        for r in requests_of(
            "emr-serverless",
            "StartJobRun",
            {"applicationId": "a", "executionRoleArn": "arn:aws:iam::123456789012:role/iot-lake-admin"},
        )
        if r.action == "iam:PassRole"
    ]
    assert not policy.allows(run)  # any other role: denied


def test_the_evaluator_matches_wildcards_and_conditions(policies):
    dagster = policies["dagster"]
    assert dagster.allows(s3("PutObject", "landing/_inventory/telemetry/x.json"))
    assert not dagster.allows(s3("PutObject", "landing/telemetry/2026/11/20/05/x.gz"))  # Firehose's, read only
    assert not dagster.allows(Request("s3:PutObject", "arn:aws:s3:::other-bucket/lake/curated/x"))
    assert not dagster.allows(Request("s3:PutObject", f"arn:aws:s3:::{BUCKET}/curated/x"))  # outside the prefix
    listing = requests_of("s3", "ListObjectsV2", {"Bucket": BUCKET, "Prefix": "lake/landing/"})
    assert all(dagster.allows(r) for r in listing)
    assert not any(
        dagster.allows(r) for r in requests_of("s3", "ListObjectsV2", {"Bucket": BUCKET, "Prefix": "other/"})
    )
    assert dagster.allows(Request("cloudwatch:PutMetricData", "*", (("cloudwatch:namespace", "IoTLake/Cases"),)))
    assert not dagster.allows(Request("cloudwatch:PutMetricData", "*", (("cloudwatch:namespace", "AWS/EC2"),)))
    assert not dagster.allows(Request("cloudwatch:PutMetricData", "*"))  # condition key absent: fails closed


def test_the_control_plane_puts_the_case_alarms_but_not_the_stacks_deviation_alarms(policies):
    # The case sink (re)defines its own alarms; the stack's deviation alarms, which start incidents,
    # are CloudFormation's: a put from the pipeline would replace one and drop its actions.
    dagster, sink = policies["dagster"], CloudWatchSink(REGION)
    for device in ("dev-001", "plant-a-pump-07"):
        [put] = requests_of("cloudwatch", "PutMetricAlarm", sink.alarm_definition(device, "vibration_rms"))
        assert dagster.allows(put), put
    stacks = {"AlarmName": alarm_name("plant-a", "pump-07", "vibration_rms")}
    assert not any(dagster.allows(r) for r in requests_of("cloudwatch", "PutMetricAlarm", stacks))

    # It drives them instead (IncidentManagerSink with link_alarm_incidents), and no other alarm.
    described = {"AlarmNames": [stacks["AlarmName"]], "AlarmTypes": ["MetricAlarm"]}
    assert all(dagster.allows(r) for r in requests_of("cloudwatch", "DescribeAlarms", described))
    driven = {**stacks, "StateValue": "ALARM", "StateReason": "iot-lake case k opened (critical)"}
    assert all(dagster.allows(r) for r in requests_of("cloudwatch", "SetAlarmState", driven))
    for other in ("billing-total", CloudWatchSink(REGION).alarm_definition("dev-001", "rms")["AlarmName"]):
        assert not any(dagster.allows(r) for r in requests_of("cloudwatch", "SetAlarmState", {"AlarmName": other}))


def test_the_control_plane_never_writes_what_others_land_nor_the_jobs_messages(policies):
    # What it does write is audited from its recorded requests, path by path, on S3
    # (tests/test_iam_control_plane_aws.py, test_warehouse_prod, the maintenance test below); this is
    # what no recorded call can show: the writes the policy must refuse.
    dagster = policies["dagster"]
    for key in (
        "landing/telemetry/2026/11/20/05/a.gz",
        "landing/thirdparty/weather/2026/11/20/w.csv",
        "_pipes/messages/x/1.json",
    ):
        assert not dagster.allows(s3("PutObject", key)), key
    assert not dagster.allows(s3("DeleteObject", "models/forecast/champion.json"))  # only the export's history


@pytest.mark.parametrize("role", SPARK_ROLES)
def test_the_spark_job_roles_read_inputs_and_write_only_their_tables(policies, role):
    policy = policies[role]
    reads = [
        "landing/telemetry/2026/11/20/05/a.gz",
        inventory_key(HOUR),
        registry_key(DAY, "devices"),
        "curated/telemetry_5min/event_date=2026-11-20/p.parquet",
        "_code/iot_lake-abc.zip",
        "_code/glue/entrypoint.py",
        "_pipes/context/x/context.json",
    ]
    writes = [
        "curated/telemetry/event_date=2026-11-20/p.parquet",
        "curated/telemetry/_delta_log/00000000000000000003.json",
        "quarantine/telemetry/event_date=2026-11-20/p.parquet",
        f"{registry.training_data_key(DAY)}/part-0.parquet",
        # the batch forecast's Spark step exports the history the SageMaker job forecasts from
        f"{registry.history_key(HOUR)}/rows/part-0.parquet",
        "_pipes/messages/x/1.json",
    ]
    assert [k for k in reads if not policy.allows(s3("GetObject", k))] == []
    assert policy.allows(s3("DeleteObject", f"{registry.history_key(HOUR)}/rows/part-0.parquet"))  # overwritten
    assert [k for k in writes if not policy.allows(s3("PutObject", k))] == []
    for key in (
        "landing/telemetry/2026/11/20/05/a.gz",
        inventory_key(HOUR),
        "_code/iot_lake-abc.zip",
        "models/forecast/champion.json",
        "cases/cases/p.parquet",
        "_pipes/context/x/context.json",
    ):
        assert not policy.allows(s3("PutObject", key)), key
    assert policy.allows(s3("PutObject", "_logs/emr-serverless/applications/a/jobs/j/SPARK_DRIVER/stderr.gz")) == (
        role == "emr-serverless-job"
    )
    assert policy.allows(s3("PutObject", "_logs/emr/j-1/steps/s-1/stderr.gz")) == (role == "emr-ec2-instance")
    assert policy.allows(Request("s3:GetObject", "arn:aws:s3:::iot-lake-artifacts/spark-env/iot-lake-env.tar.gz")) == (
        role != "glue-job"  # Glue installs its modules itself
    )


def test_the_sagemaker_role_reads_its_channels_and_writes_models_and_messages(policies):
    policy = policies["sagemaker"]
    day_model = f"{registry.jobs_key()}/train-1/output/model.tar.gz"
    assert policy.allows(s3("GetObject", f"{registry.training_data_key(DAY)}/part-0.parquet"))
    assert policy.allows(s3("GetObject", f"{registry.history_key(HOUR)}/rows/part.parquet"))
    assert policy.allows(s3("PutObject", day_model))
    assert policy.allows(s3("PutObject", f"{registry.history_key(HOUR)}/forecasts/forecasts.parquet"))
    assert policy.allows(s3("PutObject", "_pipes/messages/x/1.json"))
    assert not policy.allows(s3("GetObject", "landing/telemetry/2026/11/20/05/a.gz"))
    assert not policy.allows(s3("PutObject", "curated/telemetry/p.parquet"))
    # the registry is the control plane's: a job cannot name its own model champion or rewrite a
    # version record (and its recorded sha256), only write its own outputs
    for key in (registry.CHAMPION_KEY, registry.version_key("train-1"), f"{registry.training_data_key(DAY)}/x.parquet"):
        assert not policy.allows(s3("PutObject", key)), key
    assert policy.allows(Request("ecr:BatchGetImage", "arn:aws:ecr:us-east-1:123456789012:repository/iot-lake-ml"))
    # The jobs' volumes under the lake key (VolumeKmsKeyId): a grant for the AWS resource, never for a principal.
    key = "arn:aws:kms:us-east-1:123456789012:key/k1"
    assert policy.allows(Request("kms:CreateGrant", key, (("kms:GrantIsForAWSResource", "true"),)))
    assert not policy.allows(Request("kms:CreateGrant", key, (("kms:GrantIsForAWSResource", "false"),)))
    assert not policy.allows(Request("kms:CreateGrant", key))
    # In a VPC: network interfaces in this account and region only.
    eni = "arn:aws:ec2:us-east-1:123456789012:network-interface/eni-1"
    assert policy.allows(Request("ec2:CreateNetworkInterface", eni))
    assert not policy.allows(Request("ec2:CreateNetworkInterface", eni.replace("123456789012", "999999999999")))
    assert not policy.allows(Request("ec2:RunInstances", "*"))


def test_the_renderer_fills_every_placeholder_and_handles_a_bucket_root(tmp_path):
    render = load_iam_renderer()
    render.main(
        [
            "--out",
            str(tmp_path),
            "--bucket",
            "b",
            "--region",
            "eu-west-1",
            "--account-id",
            "111122223333",
            "--kms-key-arn",
            "arn:aws:kms:eu-west-1:111122223333:key/k",
            "--sns-topic-arn",
            "arn:aws:sns:eu-west-1:111122223333:t",
            "--spark-env-archive",
            "s3://art/env.tar.gz",
            "--ecr-repository-arn",
            "arn:aws:ecr:eu-west-1:111122223333:repository/r",
            "--compute-log-bucket",
            "b",
        ]
    )
    written = {p.name: p.read_text() for p in tmp_path.glob("*.json")}
    assert len(written) == len(list(IAM_DIR.glob("*.json")) + list(API_DIR.glob("*.*.json"))) == 2 * len(ROLES)
    assert not any("${" in text for text in written.values())
    dagster = json.loads(written["dagster.policy.json"])
    resources = [
        r
        for st in statements(dagster)
        for r in (st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]])
    ]
    assert "arn:aws:s3:::b/landing/*" in resources and not any("//" in r.removeprefix("arn:aws:") for r in resources)
    with pytest.raises(ValueError, match=r"\$\{Bucket\}"):
        render.render({"Resource": "arn:aws:s3:::${Bucket}/x"}, {})


def test_each_role_may_delete_only_what_its_code_deletes(policies):
    # sources/historian.py replaces a day's stale extract files; curated/telemetry_job.py removes its staging.
    assert policies["dagster"].allows(s3("DeleteObject", f"{readings_prefix(DAY)}/part-0.parquet"))
    assert not policies["dagster"].allows(s3("DeleteObject", "landing/telemetry/2026/11/20/05/a.gz"))
    # assets/ml/forecast.py removes the history a batch forecast exported once it has the forecasts.
    assert policies["dagster"].allows(s3("DeleteObject", f"{registry.history_key(HOUR)}/rows/part-0.parquet"))
    for role in SPARK_ROLES:
        assert policies[role].allows(s3("DeleteObject", "curated/_staging/telemetry/20261120T05/parsed/p.parquet"))
        assert not policies[role].allows(s3("DeleteObject", "curated/telemetry/event_date=2026-11-20/p.parquet"))
    assert not any(
        policies["sagemaker"].allows(s3("DeleteObject", k)) for k in ("models/forecast/champion.json", "_code/x")
    )


def test_the_request_log_reads_each_protocol_and_a_writes_key(policies):
    """What the moto server's log makes of a role's requests: S3 REST with its encryption headers
    (and the data key S3 asks KMS for, as the caller), the JSON protocol (CloudWatch Logs)."""
    seen = []
    log = S3RequestLog(lambda environ, start_response: seen.append(environ["wsgi.input"].read()))

    def send(path: str, body: bytes = b"", role: str = "sagemaker", service: str = "s3", **headers) -> None:
        scope = f"{ROLE_KEYS[role]}/20261205/us-east-1/{service}/aws4_request"
        environ = {
            "REQUEST_METHOD": "PUT" if service == "s3" else "POST",
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "HTTP_AUTHORIZATION": f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature=x",
            **{f"HTTP_{k.upper()}": v for k, v in headers.items()},
        }
        log(environ, None)

    key = "arn:aws:kms:us-east-1:123456789012:key/k1"
    send(
        f"/{BUCKET}/lake/models/forecast/jobs/j/output/model.tar.gz",
        b"tar",
        **{
            "x_amz_server_side_encryption": "aws:kms",
            "x_amz_server_side_encryption_aws_kms_key_id": key,
        },
    )
    body = json.dumps({"logGroupName": "/aws/sagemaker/TrainingJobs", "logStreamName": "j/algo-1"}).encode()
    send("/", body, service="logs", x_amz_target="Logs_20140328.CreateLogStream")
    assert seen == [b"tar", body]  # the service still gets every body
    [(_, _, put, params, _), (_, service, create, logs_params, _)] = log.calls
    assert (put, params["SSEKMSKeyId"], service, create) == ("PutObject", key, "cloudwatch-logs", "CreateLogStream")
    assert log.denied([BUCKET]) == []
    kms = [r for r in requests_of("s3", put, params) if r.action.startswith("kms:")]
    assert kms == [Request("kms:GenerateDataKey", key, (), "s3.PutObject")]
    [stream] = requests_of(service, create, logs_params)
    assert stream.resource.endswith(":log-group:/aws/sagemaker/TrainingJobs:log-stream:j/algo-1")
    # The same requests as the Glue job's role: its policy has neither, and the log says so.
    log.calls[:] = [("glue-job", *call[1:]) for call in log.calls]
    assert {r.action for r in log.denied([BUCKET])} == {"s3:PutObject", "logs:CreateLogStream"}


def _age_object(lake_root: str, key: str, hours: float) -> None:
    """Move an object's modification time back in moto's S3, as if written hours ago: a vacuum judges
    a file in no version by it (tests/delta_age.py does the same on a disk)."""
    from moto.s3.models import s3_backends

    bucket, prefix = split_s3_uri(lake_root)
    s3_backends[ACCOUNT]["aws"].buckets[bucket].keys[f"{prefix}/{key}"].last_modified -= timedelta(hours=hours)


def _delta_table_with_an_orphan(lake_root: str, table: str, day: date) -> None:
    """Two small commits to one partition (compaction has work) and, two days old, a file in no
    version (a writer killed before its commit: the vacuum's to delete), written by the test itself."""
    setup = Lake(lake_root, setup_storage_options())
    for rows in ([1, 2], [3]):
        data = pa.table({"event_date": [day] * len(rows), "x": rows})
        write_deltalake(
            setup.uri(table), data, mode="append", partition_by=["event_date"], storage_options=setup_delta_options()
        )
    orphan = f"{table}/event_date={day}/part-00000-killed-writer.snappy.parquet"
    setup.write_bytes(orphan, b"never committed")
    _age_object(lake_root, orphan, hours=48)


def _without(action: str, document: dict) -> list[dict]:
    """The document's statements with one action taken out (and any statement left with none)."""
    out = []
    for st in statements(document):
        actions = [a for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]]) if a != action]
        out += [{**st, "Action": actions}] if actions else []
    return out


def test_the_control_planes_s3fs_and_delta_rs_requests_are_audited_as_its_role(aws, lake_root):
    """The nightly Delta maintenance on S3 under the lake key: its s3fs and delta-rs requests reach the
    moto server signed as the dagster role (its key is their environment's), the test's own are not
    recorded, and the role's policy allows each request, the KMS calls S3 makes for it included."""
    bucket, _ = split_s3_uri(lake_root)
    key = aws.client("kms").create_key()["KeyMetadata"]["Arn"]
    table, day = "curated/telemetry_1min", date(2026, 11, 21)
    _delta_table_with_an_orphan(lake_root, table, day)
    log = REQUEST_LOG[0]
    assert log.of("dagster") == []  # the set-up signed with the tests' key

    lake = LakeResource(root=lake_root, region=REGION, kms_key_id=key)
    result = maintain_table(lake, table, "event_date", MaintenanceConfig(retention_hours=24), today=day)
    assert (result["files_removed"], result["files_added"], result["files_vacuumed"]) == (2, 1, 1)

    delta_rs = {op for _, op, _ in log.of("dagster", "object_store")}
    assert {"ListObjectsV2", "GetObject", "PutObject", "DeleteObjects"} <= delta_rs
    assert {op for _, op, _ in log.of("dagster", "s3fs")} & {"HeadObject", "ListObjectsV2"}
    requests = {r for service, op, params in log.of("dagster") for r in requests_of(service, op, params)}
    # Compaction's and the checkpoint's writes under the lake key, and reading back what it wrote.
    assert {("kms:GenerateDataKey", key), ("kms:Decrypt", key)} <= {(r.action, r.resource) for r in requests}
    assert log.denied([bucket]) == []
    # The audit sees the vacuum's deletes: a policy without s3:DeleteObject is caught denying them.
    no_delete = Policy({"Statement": _without("s3:DeleteObject", rendered_policies(Bucket=bucket)["dagster.policy"])})
    assert {(r.action, r.resource.rsplit("/", 1)[-1]) for r in requests if not no_delete.allows(r)} == {
        ("s3:DeleteObject", "part-00000-killed-writer.snappy.parquet")
    }
