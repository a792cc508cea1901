"""deploy/cdk: the stack synthesizes without an account, and what it deploys is wired as the code
and the audited documents say: the Firehose prefix is the landing layout the sensor reads, each role
carries its deploy/iam policy, the bucket refuses other encryption and plain HTTP, the band alarms
start an incident through the response plan and notify the topic.

One `cdk synth` per session (the CDK CLI that `scripts/setup.sh --test` installs, else the app run
as the CLI would run it), with every AWS variable removed from its environment; the tests read the
CloudFormation it wrote. Intrinsics are compared as readable strings: {"Ref": "X"} -> "{Ref:X}",
{"Fn::GetAtt": ["X", "Arn"]} -> "{X.Arn}", Fn::Join concatenated.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest

from iot_lake.api import lambda_handler
from iot_lake.api.hot_state import STATE_TABLE_VAR, DynamoHotState, push_state
from iot_lake.cases.sinks import _TAG, CASE_ALARM_PREFIX, _alarm_of, case_alarm_name
from iot_lake.detect.metrics import alarm_name
from iot_lake.encryption import s3_put_params
from iot_lake.ids import InvalidIdentifier
from iot_lake.lake import telemetry_hour_of_key, telemetry_hour_prefix
from tests.conftest import REGION
from tests.iam_audit import ROLE_KEYS, SETUP_CREDENTIALS, Policy, Request, load_iam_renderer, requests_of

REPO = Path(__file__).resolve().parent.parent
CDK_DIR = REPO / "deploy" / "cdk"
DEPLOY = CDK_DIR.parent
CLI = CDK_DIR / "node_modules" / ".bin" / "cdk"
DEVICES = [
    {"deviceId": "pump-07", "metric": "vibration_rms", "siteId": "plant-a"},
    {"deviceId": "chiller:2.b", "metric": "supply_temp_c", "siteId": "plant-b"},  # ':' and '.' are id chars
    {"deviceId": "pump-07", "metric": "vibration_rms"},  # no site: the publisher's SiteId "none"
]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("cdk.out")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_DEFAULT_"))}
    env |= {
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
    }
    context = {
        "alarmDevices": json.dumps(DEVICES),
        "alarmMinutes": "3",
        "alarmOfMinutes": "5",
    }
    if CLI.exists():
        args = [str(CLI), "synth", "--no-notices", "--no-version-reporting", "-q", "-o", str(out)]
        args += [a for k, v in context.items() for a in ("-c", f"{k}={v}")]
        args += ["--app", f"{sys.executable} app.py"]  # cdk.json's, with this interpreter
    else:  # what the CLI does: run the app with its context and output folder in the environment
        args = [sys.executable, "app.py"]
        defaults = json.loads((CDK_DIR / "cdk.json").read_text())["context"]
        env |= {"CDK_OUTDIR": str(out), "CDK_CONTEXT_JSON": json.dumps(defaults | context)}
    done = subprocess.run(args, cwd=CDK_DIR, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"cli": CLI.exists(), "template": json.loads((out / "IotLake.template.json").read_text())}


@pytest.fixture(scope="module")
def template(synth) -> dict:
    return synth["template"]


def ref(logical: str) -> str:
    return f"{{Ref:{logical}}}"


def att(logical: str, attribute: str) -> str:
    return f"{{{logical}.{attribute}}}"


def resolve(value):
    """CloudFormation intrinsics as readable strings, recursively."""
    if isinstance(value, list):
        return [resolve(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return ref(value["Ref"])
        if set(value) == {"Fn::GetAtt"}:
            return att(*value["Fn::GetAtt"])
        if set(value) == {"Fn::Join"}:
            sep, parts = value["Fn::Join"]
            return sep.join(resolve(p) for p in parts)
        return {k: resolve(v) for k, v in value.items()}
    return value


def resources(template: dict, kind: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def only(template: dict, kind: str) -> tuple[str, dict]:
    [(logical, resource)] = resources(template, kind).items()
    return logical, resolve(resource["Properties"])


def _norm_statement(statement: dict) -> dict:
    """IAM's equivalent spellings made one: a lone action or resource as a string, "*" as {"AWS": "*"}."""
    out = dict(statement)
    for key in ("Action", "Resource"):
        if isinstance(out.get(key), list) and len(out[key]) == 1:
            out[key] = out[key][0]
    if out.get("Principal") == "*":
        out["Principal"] = {"AWS": "*"}
    return out


def _norm(document: dict) -> list[dict]:
    return [_norm_statement(s) for s in document["Statement"]]


def test_cdk_synth_runs_without_aws_credentials(synth):
    if not synth["cli"]:
        pytest.skip(
            "no CDK CLI in deploy/cdk/node_modules (scripts/setup.sh --test installs it); synthesized by the app"
        )
    # Environment-agnostic: the account and region are the deploying account's, not baked in.
    assert "111122223333" not in json.dumps(synth["template"])


def test_the_firehose_prefix_is_the_landing_layout_the_sensor_reads(template):
    bucket, _ = only(template, "AWS::S3::Bucket")
    name, stream = only(template, "AWS::KinesisFirehose::DeliveryStream")
    s3 = stream["ExtendedS3DestinationConfiguration"]
    assert s3["BucketARN"] == att(bucket, "Arn")
    assert s3["CompressionFormat"] == "GZIP"
    assert "!{firehose:error-output-type}" in s3["ErrorOutputPrefix"]
    assert not s3["ErrorOutputPrefix"].startswith(s3["Prefix"].split("!")[0])  # errors never land as telemetry

    # The key Firehose writes for a record arriving at 07:05 UTC, its timestamp namespace evaluated
    # (Java DateTimeFormatter letters; an expression we do not know fails here).
    arrival = datetime(2026, 3, 1, 7, 5, 12, tzinfo=UTC)
    java = {"yyyy": "%Y", "MM": "%m", "dd": "%d", "HH": "%H"}
    prefix = re.sub(r"!\{timestamp:([^}]+)\}", lambda m: arrival.strftime(java[m.group(1)]), s3["Prefix"])
    key = prefix + "iot-lake-telemetry-1-2026-03-01-07-05-12-4f6c2c1e-0b7d-4a5e-9d57-3c1f0e8a9b21.gz"
    assert key.startswith("lake/")
    key = key.removeprefix("lake/")
    hour = arrival.replace(minute=0, second=0)
    assert telemetry_hour_of_key(key) == hour
    assert key.startswith(telemetry_hour_prefix(hour) + "/")

    # The IoT rule feeds this stream, one JSON record per line (NDJSON).
    _, rule = only(template, "AWS::IoT::TopicRule")
    [action] = rule["TopicRulePayload"]["Actions"]
    assert action["Firehose"]["DeliveryStreamName"] == ref(name)
    assert action["Firehose"]["Separator"] == "\n"
    assert "ingested_at" in rule["TopicRulePayload"]["Sql"]


def _audited_world(template: dict) -> dict[str, str]:
    """The renderer's values as the stack's intrinsics read (resolve())."""
    render = load_iam_renderer()
    defaults = {name: default for name, (_, default) in render.OPTIONS.items()}
    bucket = ref(only(template, "AWS::S3::Bucket")[0])
    account, region = "{Ref:AWS::AccountId}", "{Ref:AWS::Region}"
    return render.values_from(
        defaults
        | {
            "Bucket": bucket,
            "Prefix": "lake",
            "Region": region,
            "AccountId": account,
            "KmsKeyArn": att(only(template, "AWS::KMS::Key")[0], "Arn"),
            "EmrApplicationId": att(only(template, "AWS::EMRServerless::Application")[0], "ApplicationId"),
            "GlueJobName": json.loads((DEPLOY / "glue" / "job.json").read_text())["Name"],
            "EmrClusterId": "none",
            "SnsTopicArn": ref(only(template, "AWS::SNS::Topic")[0]),
            "EventBusName": ref(only(template, "AWS::Events::EventBus")[0]),
            "ResponsePlanArn": f"arn:aws:ssm-incidents::{account}:response-plan/iot-lake",
            "SparkEnvArchiveArn": f"s3://{bucket}/artifacts/spark-env/iot-lake-env.tar.gz",
            "EcrRepositoryArn": f"arn:aws:ecr:{region}:{account}:repository/iot-lake-ml",
            "ComputeLogBucket": bucket,
        }
    )


@pytest.mark.parametrize("role", ["dagster", "emr-serverless-job", "glue-job", "sagemaker", "api-lambda"])
def test_each_role_carries_the_audited_policy_and_trust(template, role):
    render = load_iam_renderer()
    values = _audited_world(template)
    docs = render.documents()
    roles = {
        r["Properties"]["RoleName"]: resolve(r["Properties"])
        for r in resources(template, "AWS::IAM::Role").values()
        if "RoleName" in r["Properties"]
    }
    names = {
        "emr-serverless-job": values["EmrJobRoleName"],
        "glue-job": values["GlueJobRoleName"],
        "sagemaker": values["SageMakerRoleName"],
    }
    props = roles[names.get(role, f"iot-lake-{role}")]
    [inline] = props["Policies"]
    assert _norm(inline["PolicyDocument"]) == _norm(render.render(docs[f"{role}.policy"], values))
    assert props["AssumeRolePolicyDocument"] == render.render(docs[f"{role}.trust"], values)
    assert "ManagedPolicyArns" not in props  # nothing beyond the audited document


def test_the_bucket_refuses_unencrypted_writes_other_keys_and_plain_http(template):
    bucket, props = only(template, "AWS::S3::Bucket")
    key = att(only(template, "AWS::KMS::Key")[0], "Arn")
    [rule] = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
    assert rule["BucketKeyEnabled"] is True
    assert all(props["PublicAccessBlockConfiguration"].values())

    _, bucket_policy = only(template, "AWS::S3::BucketPolicy")
    assert bucket_policy["Bucket"] == ref(bucket)
    name = ref(bucket)
    policy = Policy(bucket_policy["PolicyDocument"])

    def put(**params) -> Request:
        request = requests_of("s3", "PutObject", {"Bucket": name, "Key": "lake/curated/x", **params})[0]
        return Request(request.action, request.resource, (*request.context, ("aws:SecureTransport", "true")))

    assert not policy.denies(put(**s3_put_params(key)))
    assert not policy.denies(put())  # names no key: the default (the lake key) encrypts it
    for refused in (
        put(**s3_put_params("arn:aws:kms:eu-west-1:111122223333:key/another")),
        put(ServerSideEncryption="AES256"),
        put(ServerSideEncryption="aws:kms"),  # the AWS managed key
    ):
        assert policy.denies(refused), refused
    over_http = Request("s3:GetObject", f"arn:aws:s3:::{name}/lake/curated/x", (("aws:SecureTransport", "false"),))
    assert policy.denies(over_http)


def test_the_lifecycle_rules_are_deploy_s3s(template):
    _, props = only(template, "AWS::S3::Bucket")
    render = load_iam_renderer()
    expected = render.render(json.loads((DEPLOY / "s3" / "bucket.lifecycle.json").read_text()), {"Prefix": "lake/"})
    got = {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"]}
    assert set(got) == {r["ID"] for r in expected["Rules"]}
    for rule in expected["Rules"]:
        mine = got[rule["ID"]]
        assert mine["Prefix"] == rule["Filter"]["Prefix"] and mine["Status"] == rule["Status"]
        assert mine.get("ExpirationInDays") == rule.get("Expiration", {}).get("Days")
        abort = rule.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation")
        assert mine.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") == abort
    prefixes = {r["Prefix"] for r in got.values()}
    assert {"lake/_pipes/", "lake/_logs/", "lake/curated/_staging/"} <= prefixes


def test_band_alarms_start_an_incident_through_the_response_plan_and_notify_the_topic(template):
    topic, _ = only(template, "AWS::SNS::Topic")
    _, plan = only(template, "AWS::SSMIncidents::ResponsePlan")
    assert plan["IncidentTemplate"]["NotificationTargets"] == [{"SnsTopicArn": ref(topic)}]
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    assert len(alarms) == len(DEVICES)
    seen = set()
    for alarm in alarms.values():
        props = resolve(alarm["Properties"])
        plan_arn = "arn:{Ref:AWS::Partition}:ssm-incidents::{Ref:AWS::AccountId}:response-plan/" + plan["Name"]
        assert props["AlarmActions"] == [plan_arn, ref(topic)]
        assert (props["DatapointsToAlarm"], props["EvaluationPeriods"], props["Threshold"]) == (3, 5, 1)
        assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        [expression] = [m for m in props["Metrics"] if "Expression" in m]
        assert expression["ReturnData"] is True
        stats = {m["Id"]: m["MetricStat"] for m in props["Metrics"] if "MetricStat" in m}
        assert {s["Metric"]["MetricName"] for s in stats.values()} == {"Actual", "BandLower95", "BandUpper95"}
        # actual outside [lower, upper]: the expression's ids are the band's series
        by_name = {s["Metric"]["MetricName"]: i for i, s in stats.items()}
        assert re.sub(r"\s+", "", expression["Expression"]) == "IF({a}<{lo}OR{a}>{hi},1,0)".format(
            a=by_name["Actual"], lo=by_name["BandLower95"], hi=by_name["BandUpper95"]
        )
        dims = {tuple(sorted((d["Name"], d["Value"]) for d in s["Metric"]["Dimensions"])) for s in stats.values()}
        assert {s["Metric"]["Namespace"] for s in stats.values()} == {"IotLake/Deviations"}
        assert all(s["Period"] == 60 for s in stats.values())
        [dim] = dims
        dim = dict(dim)
        seen.add((dim["SiteId"], dim["DeviceId"], dim["Metric"]))
        assert alarm.get("DependsOn")  # created after the response plan it starts
    assert seen == {(d.get("siteId", "none"), d["deviceId"], d["metric"]) for d in DEVICES}


def test_spark_services_are_deploys_documents(template):
    _, app = only(template, "AWS::EMRServerless::Application")
    doc = json.loads((DEPLOY / "emr-serverless" / "application.json").read_text())
    assert (app["Name"], app["ReleaseLabel"], app["Type"]) == (doc["name"], doc["releaseLabel"], doc["type"])
    [spark] = app["RuntimeConfiguration"]
    assert spark["Properties"] == doc["runtimeConfiguration"][0]["properties"]
    assert {c["Key"] for c in app["InitialCapacity"]} == set(doc["initialCapacity"])
    assert app["AutoStopConfiguration"] == {"Enabled": True, "IdleTimeoutMinutes": 15}

    _, job = only(template, "AWS::Glue::Job")
    glue = json.loads((DEPLOY / "glue" / "job.json").read_text())
    bucket = ref(only(template, "AWS::S3::Bucket")[0])
    assert job["Command"]["ScriptLocation"] == f"s3://{bucket}/lake/_code/glue/entrypoint.py"
    assert job["DefaultArguments"] == glue["DefaultArguments"]
    glue_role = [
        k
        for k, r in resources(template, "AWS::IAM::Role").items()
        if r["Properties"].get("RoleName") == "iot-lake-glue-job"
    ]
    assert job["Role"] == att(glue_role[0], "Arn")


def test_band_alarms_are_named_as_the_case_sink_finds_their_incidents(template):
    alarms = [resolve(a["Properties"]) for a in resources(template, "AWS::CloudWatch::Alarm").values()]
    expected = {alarm_name(d.get("siteId"), d["deviceId"], d["metric"]) for d in DEVICES}
    assert {a["AlarmName"] for a in alarms} == expected
    for alarm in alarms:
        [dims] = {json.dumps(m["MetricStat"]["Metric"]["Dimensions"]) for m in alarm["Metrics"] if "MetricStat" in m}
        dim = {d["Name"]: d["Value"] for d in json.loads(dims)}
        # What a case of this series carries (its payload's ids) names this alarm, and the incident
        # the alarm starts (its ARN as the record's source) is the one the sink joins the case to.
        series = alarm_name(dim["SiteId"], dim["DeviceId"], dim["Metric"])
        assert series == alarm["AlarmName"]
        record = {
            "arn": "arn:aws:ssm-incidents::111122223333:incident-record/iot-lake/1",
            "incidentRecordSource": {
                "source": "aws.cloudwatch",
                "resourceArn": f"arn:aws:cloudwatch:eu-west-1:111122223333:alarm:{alarm['AlarmName']}",
            },
        }
        assert _alarm_of(record) == series
        # Case first: the title's tag, which the fold reads, names this alarm.
        assert _TAG.search(f"critical: ... out of band [{series}]").group(1) == alarm["AlarmName"]
        # The case sink's own alarm of a device named "{site}-{device}" must not take (and replace) it.
        assert case_alarm_name(f"{dim['SiteId']}-{dim['DeviceId']}", dim["Metric"]) != series
        assert not series.startswith(CASE_ALARM_PREFIX)


# -- the serving API, in process with aws_cdk.assertions ------------------------------------------


def _stack(context: dict):
    """The stack built in this process (the CDK app's own constructs), with cdk.json's context."""
    import aws_cdk as cdk

    sys.path.insert(0, str(CDK_DIR))
    try:
        from iot_lake_stack import IotLakeStack
    finally:
        sys.path.remove(str(CDK_DIR))
    defaults = json.loads((CDK_DIR / "cdk.json").read_text())["context"]
    app = cdk.App(outdir=context.pop("outdir"), context=defaults | context)
    return app, IotLakeStack(app, "IotLake")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from aws_cdk.assertions import Template

    out = tmp_path_factory.mktemp("cdk.out.assertions")
    app, stack = _stack({"outdir": str(out), "alarmDevices": DEVICES[:1]})
    app.synth()  # stages the assets in out
    return {"template": Template.from_stack(stack), "out": out}


def _one(assertions, kind: str, props: dict | None = None) -> tuple[str, dict]:
    found = assertions.find_resources(kind, {"Properties": props} if props else None)
    [(logical, resource)] = found.items()
    return logical, resource


def test_the_api_role_carries_deploy_apis_policy_and_trust_and_nothing_else(api):
    assertions = api["template"]
    template = assertions.to_json()
    render = load_iam_renderer()
    values, docs = _audited_world(template), render.documents()
    logical, role = _one(assertions, "AWS::IAM::Role", {"RoleName": "iot-lake-api-lambda"})
    props = resolve(role["Properties"])
    [inline] = props["Policies"]
    assert _norm(inline["PolicyDocument"]) == _norm(render.render(docs["api-lambda.policy"], values))
    assert props["AssumeRolePolicyDocument"] == render.render(docs["api-lambda.trust"], values)
    assert "ManagedPolicyArns" not in props
    # No grant added beside it (a Lambda construct's log or invoke grants would be AWS::IAM::Policy).
    attached = [p for p in resources(template, "AWS::IAM::Policy").values() if ref(logical) in str(resolve(p))]
    assert attached == []
    _, function = _one(assertions, "AWS::Lambda::Function", {"FunctionName": "iot-lake-api"})
    assert resolve(function["Properties"]["Role"]) == att(logical, "Arn")
    # The policy writes the function's log streams; the stack makes their group, named as the policy says.
    _, group = _one(assertions, "AWS::Logs::LogGroup", {"LogGroupName": "/aws/lambda/iot-lake-api"})
    assert group["Properties"]["RetentionInDays"] > 0


def test_the_hot_state_table_has_the_key_the_writer_and_the_api_use(api, aws):
    _, table = _one(api["template"], "AWS::DynamoDB::Table")
    props = table["Properties"]
    assert table["DeletionPolicy"] == "Retain"
    # The table as synthesized, on moto: push_state's conditional writes and DynamoHotState's
    # Query by device_id work on it (another key schema fails them).
    # The tests' own client makes and drops it; the writer runs as the control plane (its calls
    # audited against dagster.policy), the reader with the API function's key.
    setup = boto3.client("dynamodb", region_name=REGION, **SETUP_CREDENTIALS)
    setup.create_table(**{k: props[k] for k in ("TableName", "BillingMode", "AttributeDefinitions", "KeySchema")})
    reader = boto3.Session(
        region_name=REGION, aws_access_key_id=ROLE_KEYS["api-lambda"], aws_secret_access_key="testing"
    ).client("dynamodb")
    try:
        t = datetime(2026, 3, 1, 7, 5, tzinfo=UTC)
        rows = [
            {"device_id": "pump-07", "metric": m, "site_id": "plant-a", "event_ts": t, "message_id": "m-1"}
            | {"value": v, "unit": None, "updated_at": t}
            for m, v in (("vibration_rms", 0.4), ("bearing_temp_c", 61.0))
        ]
        assert push_state(rows, props["TableName"]) == {"written": 2, "kept": 0}
        assert push_state(rows[:1], props["TableName"]) == {"written": 0, "kept": 1}
        state = DynamoHotState(props["TableName"], client=reader).latest("pump-07")
        assert [(r["metric"], r["value"]) for r in state] == [("bearing_temp_c", 61.0), ("vibration_rms", 0.4)]
    finally:
        setup.delete_table(TableName=props["TableName"])


def test_the_function_runs_the_lambda_handler_against_the_table(api):
    assertions = api["template"]
    _, table = _one(assertions, "AWS::DynamoDB::Table")
    _, function = _one(assertions, "AWS::Lambda::Function", {"FunctionName": "iot-lake-api"})
    props = function["Properties"]
    # A container image (a zip of the api extra is over Lambda's 250 MB), its handler the image's CMD.
    assert props["PackageType"] == "Image" and "Handler" not in props and "Runtime" not in props
    asset = _image_asset(api["out"], props)
    handler = _dockerfile_cmd(asset / "deploy" / "api" / "Dockerfile")
    assert handler == json.loads((DEPLOY / "api" / "function.json").read_text())["function"]["Handler"]
    module, name = handler.rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) is lambda_handler.handler
    # ... and the build context holds that module where the Dockerfile copies it from.
    assert (asset / (module.replace(".", "/") + ".py")).is_file()
    env = props["Environment"]["Variables"]
    assert env[STATE_TABLE_VAR] == table["Properties"]["TableName"]
    # Everything the handler requires, AWS_REGION being the Lambda runtime's own.
    assert set(lambda_handler.REQUIRED) - {"AWS_REGION"} <= set(env)
    assert env["IOT_LAKE_CASES_URL"].startswith("{{resolve:secretsmanager:")  # never in the template
    assert env["IOT_LAKE_PREFIX"] == "lake/" and env["IOT_LAKE_ENV"] == "prod"


def _image_asset(out: Path, props: dict) -> Path:
    """The staged build context of the function's image: cdk.out/asset.HASH, HASH the image tag."""
    uri = json.dumps(props["Code"]["ImageUri"])
    [tag] = set(re.findall(r":([0-9a-f]{64})", uri))
    return out / f"asset.{tag}"


def _dockerfile_cmd(dockerfile: Path) -> str:
    """The handler of the Dockerfile's last CMD (the exec form Lambda's base images take)."""
    [*_, cmd] = [line for line in dockerfile.read_text().splitlines() if line.startswith("CMD ")]
    [handler] = json.loads(cmd.removeprefix("CMD "))
    return handler


def test_synth_stages_only_what_the_image_build_copies(api):
    _, function = _one(api["template"], "AWS::Lambda::Function", {"FunctionName": "iot-lake-api"})
    asset = _image_asset(api["out"], function["Properties"])
    staged = {p.relative_to(asset) for p in asset.rglob("*")}
    assert {Path("pyproject.toml"), Path("uv.lock"), Path("deploy/api/Dockerfile")} <= staged
    # No venv, lake, Dagster storage, node_modules, synth output, tests or benchmarks (GBs in a dev checkout).
    tops = {p.parts[0] for p in staged}
    assert tops == {"pyproject.toml", "uv.lock", "deploy", "iot_lake"}, tops
    assert not any("__pycache__" in p.parts for p in staged)
    size = sum(p.stat().st_size for p in asset.rglob("*") if p.is_file())
    assert size < 20 * 2**20, size


def test_the_http_api_sends_every_route_to_the_function(api):
    assertions = api["template"]
    function, _ = _one(assertions, "AWS::Lambda::Function", {"FunctionName": "iot-lake-api"})
    api_id, _ = _one(assertions, "AWS::ApiGatewayV2::Api", {"Name": "iot-lake-api", "ProtocolType": "HTTP"})
    integration, props = _one(assertions, "AWS::ApiGatewayV2::Integration")
    props = resolve(props["Properties"])
    assert (props["IntegrationUri"], props["IntegrationType"], props["PayloadFormatVersion"]) == (
        att(function, "Arn"),
        "AWS_PROXY",
        "2.0",
    )
    _, route = _one(assertions, "AWS::ApiGatewayV2::Route", {"RouteKey": "$default"})
    assert resolve(route["Properties"]["Target"]) == f"integrations/{ref(integration)}"
    assert resolve(route["Properties"]["ApiId"]) == ref(api_id)
    _, stage = _one(assertions, "AWS::ApiGatewayV2::Stage", {"StageName": "$default", "AutoDeploy": True})
    _, permission = _one(assertions, "AWS::Lambda::Permission")
    assert permission["Properties"]["Principal"] == "apigateway.amazonaws.com"


def test_an_alarm_device_with_an_invalid_id_is_refused(tmp_path):
    bad = [{"deviceId": "chiller 2", "metric": "supply_temp_c", "siteId": "plant-b"}]  # a space
    with pytest.raises(InvalidIdentifier, match="chiller 2"):
        _stack({"outdir": str(tmp_path / "out"), "alarmDevices": bad})


def test_a_renamed_function_keeps_its_log_group_and_policy_together(tmp_path):
    from aws_cdk.assertions import Template

    context = {"outdir": str(tmp_path / "out"), "apiFunctionName": "acme-api"}
    template = Template.from_stack(_stack(context)[1])
    _one(template, "AWS::Lambda::Function", {"FunctionName": "acme-api"})
    _one(template, "AWS::Logs::LogGroup", {"LogGroupName": "/aws/lambda/acme-api"})
    _, role = _one(template, "AWS::IAM::Role", {"RoleName": "iot-lake-api-lambda"})
    [logs] = [s for s in role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"] if s["Sid"] == "OwnLogs"]
    assert resolve(logs["Resource"]).endswith(":log-group:/aws/lambda/acme-api:*")


def test_the_streaming_scorers_source_is_an_output_with_the_kinesis_source(tmp_path):
    """IotLakeTelemetryStream is IOT_LAKE_TELEMETRY_STREAM, which deploy/systemd/iot-lake-stream.service
    reads: the stack's own stream with -c kinesisSource=true, "-" (none) without."""
    from aws_cdk.assertions import Template

    with_source = Template.from_stack(_stack({"outdir": str(tmp_path / "a"), "kinesisSource": "true"})[1])
    [(logical, _)] = with_source.find_resources("AWS::Kinesis::Stream").items()
    assert with_source.find_outputs("IotLakeTelemetryStream")["IotLakeTelemetryStream"]["Value"] == {"Ref": logical}
    without = Template.from_stack(_stack({"outdir": str(tmp_path / "b")})[1])
    assert not without.find_resources("AWS::Kinesis::Stream")
    assert without.find_outputs("IotLakeTelemetryStream")["IotLakeTelemetryStream"]["Value"] == "-"
