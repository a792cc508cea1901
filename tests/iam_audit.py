"""Checks AWS calls against the IAM policies in deploy/iam/: a small evaluator and a call recorder.

``CallRecorder`` hooks a boto3 session (botocore's ``before-parameter-build`` event) and keeps every
call that production code made: the innermost frame of this repository on the stack is not under
tests/ (calls the tests make to set up or to look, and the service twins' own calls, are skipped).
Each call becomes the IAM requests it needs, ``(action, resource, context)``: an S3 HeadObject needs
``s3:GetObject`` on the object, StartJobRun with an execution role also ``iam:PassRole`` on it.

``S3RequestLog`` sits in front of the moto server and keeps the requests signed with a role's
access key (``ROLE_KEYS``: the service twins sign as the job roles, and so do the job processes they
start; the control plane's s3fs and delta-rs clients, which take their credentials from the
environment, sign as the dagster role), whatever the client: boto3, s3fs, delta-rs or Sail's object
store. The tests' own clients sign with ``SETUP_KEY``, which is no role's, so setting up and looking
never counts as a role's call.

``Policy.allows`` evaluates Allow/Deny statements with ``*``/``?`` wildcards in Action and Resource
and the conditions the policies use: StringEquals/StringNotEquals/StringLike, Bool and Null, with
IAM's rules for a key the request lacks (an unknown operator is an error, never a silent match).
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
IAM_DIR = REPO / "deploy" / "iam"
ACCOUNT = "123456789012"  # moto's
REGION = "us-east-1"

# botocore service id (hyphenized) -> IAM action prefix, where they differ.
IAM_PREFIX = {"eventbridge": "events", "emr": "elasticmapreduce", "cloudwatch-logs": "logs"}
# S3 operations -> the IAM action they need.
S3_ACTION = {
    "HeadObject": "s3:GetObject",
    "GetObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "DeleteObject": "s3:DeleteObject",
    "DeleteObjects": "s3:DeleteObject",
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
    "GetBucketLocation": "s3:GetBucketLocation",
    "CopyObject": "s3:PutObject",
}
# Parameters that hand a role to a service: each needs iam:PassRole on it.
ROLE_PARAMS = ("executionRoleArn", "RoleArn", "Role")


def load_iam_renderer():
    import importlib.util

    spec = importlib.util.spec_from_file_location("iot_lake_iam_render", IAM_DIR / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rendered_policies(**values: str) -> dict[str, dict]:
    """Every document of deploy/iam/ rendered with the tests' world (moto's account, the tests' names)."""
    render = load_iam_renderer()
    world = {
        "Bucket": "no-lake-bucket",
        "Prefix": "lake",
        "Region": REGION,
        "AccountId": ACCOUNT,
        "KmsKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/*",
        # ids and names that the tests create at random match any; the rest are exact.
        "EmrApplicationId": "*",
        "EmrClusterId": "*",
        "GlueJobName": "*",
        "GlueDatabase": "iot_lake_test",
        "SnsTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:cases-*",
        "EventBusName": "cases-*",
        "LandingQueueName": "landing-*",
        "TelemetryStreamName": "telemetry-*",
        "ResponsePlanArn": f"arn:aws:ssm-incidents::{ACCOUNT}:response-plan/iot-lake",
        "SparkEnvArchiveArn": "arn:aws:s3:::iot-lake-artifacts/spark-env/iot-lake-env.tar.gz",
        "EcrRepositoryArn": f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/iot-lake-ml",
        "ComputeLogBucket": "no-log-bucket",
        "ComputeLogPrefix": "dagster/compute-logs",
        "EmrJobRoleName": "iot-lake-spark",
        "GlueJobRoleName": "iot-lake-spark",
        "SageMakerRoleName": "iot-lake-sagemaker",
        "StateTableName": "iot-lake-device-state",
        "ApiFunctionName": "iot-lake-api",
        **values,
    }
    values = render.values_from(world)
    return {name: render.render(doc, values) for name, doc in render.documents().items()}


def _listify(value) -> list:
    return value if isinstance(value, list) else [value]


def _like(pattern: str, value: str, case: bool = True) -> bool:
    if not case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern)


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()
    call: str = ""  # the call it came from, for messages


def _condition_holds(operator: str, key: str, expected, context: dict[str, str]) -> bool:
    """One condition key under one operator, with IAM's rules for a key the request lacks: a
    positive operator does not match, a negated one (StringNotEquals) does, Null tests absence."""
    present = key in context
    if operator == "Null":
        return str(expected).lower() == ("false" if present else "true")
    if not present:
        return operator == "StringNotEquals"
    value = context[key]
    if operator == "StringEquals":
        return any(p == value for p in _listify(expected))
    if operator == "StringNotEquals":
        return not any(p == value for p in _listify(expected))
    if operator == "StringLike":
        return any(_like(p, value) for p in _listify(expected))
    if operator == "Bool":
        return any(str(p).lower() == value.lower() for p in _listify(expected))
    raise ValueError(f"condition operator {operator} is not known to the evaluator")  # fail loudly


class Policy:
    def __init__(self, document: dict):
        self.statements = _listify(document["Statement"])

    def _matches(self, statement: dict, request: Request) -> bool:
        if not any(_like(a, request.action, case=False) for a in _listify(statement["Action"])):
            return False
        if not any(_like(r, request.resource) for r in _listify(statement["Resource"])):
            return False
        context = dict(request.context)
        return all(
            _condition_holds(operator, key, expected, context)
            for operator, conditions in statement.get("Condition", {}).items()
            for key, expected in conditions.items()
        )

    def allows(self, request: Request) -> bool:
        matched = [s for s in self.statements if self._matches(s, request)]
        return any(s["Effect"] == "Allow" for s in matched) and not any(s["Effect"] == "Deny" for s in matched)

    def denies(self, request: Request) -> bool:
        """An explicit Deny (what a bucket policy of deny statements does to a request)."""
        return any(s["Effect"] == "Deny" and self._matches(s, request) for s in self.statements)


# What a write asks of its encryption, as the bucket policy's condition keys see it (deploy/s3/).
SSE_CONTEXT = {
    "ServerSideEncryption": "s3:x-amz-server-side-encryption",
    "SSEKMSKeyId": "s3:x-amz-server-side-encryption-aws-kms-key-id",
}


def _sse_context(params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((key, params[name]) for name, key in SSE_CONTEXT.items() if params.get(name))


def _kms_requests(operation: str, action: str, key: str | None, call: str) -> list[Request]:
    """What S3 asks KMS for as the caller under SSE-KMS: a data key for a write; a decrypt to read an
    object (its key from the response) and to assemble a multipart upload's encrypted parts."""
    if not key:
        return []
    out = [Request("kms:GenerateDataKey", key, (), call)] if action == "s3:PutObject" else []
    if operation in ("GetObject", "CreateMultipartUpload"):
        out.append(Request("kms:Decrypt", key, (), call))
    return out


def requests_of(service: str, operation: str, params: dict[str, Any], region: str = REGION) -> list[Request]:
    """The IAM requests one API call makes."""
    call = f"{service}.{operation}"
    arn = f"{region}:{ACCOUNT}"
    if service == "s3":
        if operation == "ListBuckets":  # names only; IAM has no narrower resource for it
            return [Request("s3:ListAllMyBuckets", "arn:aws:s3:::*", (), call)]
        action = S3_ACTION.get(operation, f"s3:{operation}")
        bucket = params.get("Bucket", "")
        if action in ("s3:ListBucket", "s3:GetBucketLocation"):
            return [Request(action, f"arn:aws:s3:::{bucket}", (("s3:prefix", params.get("Prefix", "")),), call)]
        if "Key" not in params and "Delete" not in params:  # a bucket's own configuration
            return [Request(action, f"arn:aws:s3:::{bucket}", (), call)]
        keys = [o["Key"] for o in params.get("Delete", {}).get("Objects", [])] or [params["Key"]]
        out = [Request(action, f"arn:aws:s3:::{bucket}/{k}", _sse_context(params), call) for k in keys]
        out += _kms_requests(operation, action, params.get("SSEKMSKeyId"), call)
        if operation == "CopyObject":
            source = params["CopySource"]
            source = f"{source['Bucket']}/{source['Key']}" if isinstance(source, dict) else source.lstrip("/")
            out.append(Request("s3:GetObject", f"arn:aws:s3:::{source}", (), call))
        return out
    prefix = IAM_PREFIX.get(service, service)
    action = f"{prefix}:{operation}"
    resource = "*"
    context: tuple = ()
    if service == "emr-serverless":
        app = params.get("applicationId", "")
        run = params.get("jobRunId")
        resource = f"arn:aws:emr-serverless:{arn}:/applications/{app}" + (f"/jobruns/{run}" if run else "")
    elif service == "glue" and ("JobName" in params or operation == "BatchStopJobRun"):
        resource = f"arn:aws:glue:{arn}:job/{params['JobName']}"
    elif service == "glue":
        database = params.get("DatabaseName") or params.get("Name") or params.get("DatabaseInput", {}).get("Name")
        table = (
            params.get("TableName")
            or params.get("TableInput", {}).get("Name")
            or (params.get("Name") if "DatabaseName" in params else None)
        )
        resource = (
            f"arn:aws:glue:{arn}:table/{database}/{table}" if table else f"arn:aws:glue:{arn}:database/{database}"
        )
    elif service == "emr":
        resource = f"arn:aws:elasticmapreduce:{arn}:cluster/{params.get('ClusterId') or params.get('JobFlowId')}"
    elif service == "sagemaker":
        if "TrainingJobName" in params:
            resource = f"arn:aws:sagemaker:{arn}:training-job/{params['TrainingJobName'].lower()}"
        elif "ProcessingJobName" in params:
            resource = f"arn:aws:sagemaker:{arn}:processing-job/{params['ProcessingJobName'].lower()}"
        elif "ResourceArn" in params:
            resource = params["ResourceArn"]
    elif service == "cloudwatch-logs" and params.get("logGroupName"):
        resource = f"arn:aws:logs:{arn}:log-group:{params['logGroupName']}"
        if params.get("logStreamName"):
            resource += f":log-stream:{params['logStreamName']}"
    elif service == "sns":
        resource = params.get("TopicArn", "*")
    elif service == "kinesis":
        # The stream named by ARN or name; a call naming neither (GetRecords by its iterator alone) is "*".
        name = params.get("StreamName")
        resource = params.get("StreamARN") or (f"arn:aws:kinesis:{arn}:stream/{name}" if name else "*")
    elif service == "sqs":
        # A batch call is authorized as its single-message action; the queue's ARN from its URL.
        action = action.removesuffix("Batch")
        resource = f"arn:aws:sqs:{arn}:{params.get('QueueUrl', '').rstrip('/').rsplit('/', 1)[-1]}"
    elif service == "eventbridge":
        buses = {e.get("EventBusName", "default") for e in params.get("Entries", [])}
        return [
            Request(action, b if b.startswith("arn:") else f"arn:aws:events:{arn}:event-bus/{b}", (), call)
            for b in sorted(buses)
        ]
    elif service == "ssm-incidents":
        resource = params.get("responsePlanArn") or params.get("incidentRecordArn", "*")
    elif service == "cloudwatch":
        if operation in ("PutMetricAlarm", "SetAlarmState"):
            resource = f"arn:aws:cloudwatch:{arn}:alarm:{params['AlarmName']}"
        elif operation == "DescribeAlarms" and params.get("AlarmNames"):  # one request per alarm named
            names = params["AlarmNames"]
            return [Request(action, f"arn:aws:cloudwatch:{arn}:alarm:{n}", (), call) for n in names]
        elif operation == "PutMetricData":
            context = (("cloudwatch:namespace", params.get("Namespace", "")),)
    elif service == "dynamodb" and params.get("TableName"):
        resource = f"arn:aws:dynamodb:{arn}:table/{params['TableName']}"
    elif service == "iam":
        resource = params.get("PolicySourceArn") or f"arn:aws:iam::{ACCOUNT}:role/{params.get('RoleName', '')}"
    out = [Request(action, resource, context, call)]
    for name in ROLE_PARAMS:
        role = params.get(name)
        if isinstance(role, str) and role.startswith("arn:aws:iam::"):
            passed_to = {"emr-serverless": "emr-serverless", "glue": "glue", "sagemaker": "sagemaker"}.get(
                service, service
            )
            out.append(Request("iam:PassRole", role, (("iam:PassedToService", f"{passed_to}.amazonaws.com"),), call))
    return out


# The access key each role's stand-in signs with: the job roles' (the service twins and the job
# processes they start) and the control plane's (the ``aws`` fixture's environment, which its s3fs and
# delta-rs clients read); moto accepts any key, and tells them apart in the request log below.
ROLE_KEYS = {
    "dagster": "AKIADAGSTERCONTROL00",
    "emr-serverless-job": "AKIAEMRSERVERLESSJOB",
    "emr-ec2-instance": "AKIAEMRCLUSTERNODES0",
    "glue-job": "AKIAGLUEJOBROLE00000",
    "sagemaker": "AKIASAGEMAKERJOBROLE",
    "api-lambda": "AKIAAPILAMBDAFUNCTN0",  # the serving API's Lambda (tests/test_api_lambda_aws.py)
}
# The tests' own clients (set-up, inspection): no role's key, so their requests are not recorded.
SETUP_KEY = "testing"
SETUP_CREDENTIALS = {"aws_access_key_id": SETUP_KEY, "aws_secret_access_key": "testing"}
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]+/[^/]+/([^/]+)/")
# The signing name in a request's credential scope -> botocore's service id (hyphenized).
SIGNING_SERVICE = {"logs": "cloudwatch-logs", "monitoring": "cloudwatch", "events": "eventbridge"}
# A User-Agent's product -> the client it names (object_store: delta-rs, or Sail in a job).
CLIENTS = (("aiobotocore", "s3fs"), ("Botocore", "boto3"), ("object_store", "object_store"))


def client_of(user_agent: str) -> str:
    return next((name for product, name in CLIENTS if product in user_agent), user_agent.split("/")[0] or "?")


def setup_storage_options(**options) -> dict[str, Any]:
    """s3fs options for a test's own Lake (set-up, inspection): signed with SETUP_KEY, not recorded."""
    return {"key": SETUP_KEY, "secret": "testing", **options}


def setup_delta_options() -> dict[str, str]:
    """delta-rs options for a test's own reads and writes: signed with SETUP_KEY, not recorded."""
    return {
        "AWS_ACCESS_KEY_ID": SETUP_KEY,
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],  # the aws fixture's moto server
        "AWS_ALLOW_HTTP": "true",
    }


class S3RequestLog:
    """WSGI middleware on the moto server: every request signed with a role's key, from any process
    and client (boto3, s3fs, delta-rs, Sail's object store), as (role, service, operation, params,
    client) like botocore's. S3's REST requests are read from their path and headers (a read's KMS
    key from the response's); the JSON and query protocols (CloudWatch Logs, Glue, SNS...) from the
    target header or the Action parameter and their body."""

    def __init__(self, app):
        self.app = app
        self.roles = {key: role for role, key in ROLE_KEYS.items()}
        self.calls: list[tuple[str, str, str, dict, str]] = []

    def __call__(self, environ, start_response):
        found = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
        role = self.roles.get(found.group(1)) if found else None
        call = self._call(environ, found.group(2)) if role else None
        if not call:
            return self.app(environ, start_response)
        self.calls.append((role, *call, client_of(environ.get("HTTP_USER_AGENT", ""))))
        return self.app(environ, self._noting_the_key_read(call, start_response))

    @staticmethod
    def _noting_the_key_read(call: tuple[str, str, dict], start_response):
        """Reading an SSE-KMS object needs kms:Decrypt, and only the response names its key."""
        service, operation, params = call

        def noting(status, headers, *exc_info):
            key = dict((k.lower(), v) for k, v in headers).get("x-amz-server-side-encryption-aws-kms-key-id")
            if (service, operation) == ("s3", "GetObject") and key and status.startswith("2"):
                params["SSEKMSKeyId"] = key
            return start_response(status, headers, *exc_info)

        return noting

    @staticmethod
    def _body(environ) -> bytes:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        return body

    def _call(self, environ, signing_name: str) -> tuple[str, str, dict] | None:
        query = environ.get("QUERY_STRING", "")
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:  # JSON protocol: the operation after the dot, the parameters in the body
            params = json.loads(self._body(environ) or b"{}")
            return SIGNING_SERVICE.get(signing_name, signing_name), target.rsplit(".", 1)[-1], params
        if signing_name != "s3":  # query protocol: Action and flat parameters, in the query or the form
            form = parse_qs(query) or parse_qs(self._body(environ).decode())
            flat = {k: v[0] for k, v in form.items()}
            return SIGNING_SERVICE.get(signing_name, signing_name), flat.pop("Action", ""), flat
        body = b""
        if environ["REQUEST_METHOD"] == "POST" and "delete" in parse_qs(query, keep_blank_values=True):
            body = self._body(environ)
        call = s3_call(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), query, environ, body)
        return ("s3", *call) if call else None

    def of(self, role: str, client: str | None = None) -> list[tuple[str, str, dict]]:
        """(service, operation, params) of the role's calls so far, of one client or all."""
        return [(s, op, p) for r, s, op, p, c in self.calls if r == role and client in (None, c)]

    def denied(self, buckets: list[str]) -> list[Request]:
        """The recorded requests that each role's policy denies however it is rendered for the test's
        lake buckets (a test with two lakes makes requests to both; each is one deployment's)."""
        out = []
        for bucket in buckets or ["no-lake-bucket"]:
            docs = rendered_policies(Bucket=bucket)
            policies = {role: Policy(docs[f"{role}.policy"]) for role in ROLE_KEYS}
            out.append(
                {
                    Request(r.action, r.resource, r.context, f"{role} ({client}): {r.call}")
                    for role, service, operation, params, client in self.calls
                    for r in requests_of(service, operation, params)
                    if not policies[role].allows(r)
                }
            )
        return sorted(set.intersection(*out), key=lambda r: (r.call, r.resource))


REQUEST_LOG: list[S3RequestLog] = []  # the moto server's (tests/conftest.py: moto_endpoint)


def audited_roles() -> set[str]:
    """The roles whose requests the audit has seen in this test so far: a test that drives a role's
    code path asserts its role is among them, so a twin that stops signing as the role (and with it
    the audit of that role) fails instead of passing unaudited."""
    return {role for role, *_ in REQUEST_LOG[0].calls} if REQUEST_LOG else set()


def s3_call(method: str, path: str, query: str, environ: dict, body: bytes) -> tuple[str, dict] | None:
    """The S3 operation and parameters of a path-style REST request (what the policies need of it)."""
    q = parse_qs(query, keep_blank_values=True)
    copy_source = environ.get("HTTP_X_AMZ_COPY_SOURCE")
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    if not bucket or not query and method == "PUT" and not key:
        return None  # the service root, or CreateBucket
    if not key:
        if method == "POST" and "delete" in q:
            keys = re.findall(rb"<Key>(.*?)</Key>", body)
            return "DeleteObjects", {"Bucket": bucket, "Delete": {"Objects": [{"Key": k.decode()} for k in keys]}}
        if "location" in q:
            return "GetBucketLocation", {"Bucket": bucket}
        if method in ("GET", "HEAD"):
            return "ListObjectsV2", {"Bucket": bucket, "Prefix": q.get("prefix", [""])[0]}
        return f"{method}Bucket", {"Bucket": bucket}
    params = {"Bucket": bucket, "Key": key}
    for name, header in (
        ("ServerSideEncryption", "SERVER_SIDE_ENCRYPTION"),
        ("SSEKMSKeyId", "SERVER_SIDE_ENCRYPTION_AWS_KMS_KEY_ID"),
    ):
        if environ.get(f"HTTP_X_AMZ_{header}"):
            params[name] = environ[f"HTTP_X_AMZ_{header}"]
    if "uploadId" in q:
        return ("AbortMultipartUpload" if method == "DELETE" else "UploadPart"), params
    if "uploads" in q:
        return "CreateMultipartUpload", params
    if method == "PUT" and copy_source:
        return "CopyObject", {**params, "CopySource": unquote(copy_source).split("?")[0]}
    return {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject", "DELETE": "DeleteObject"}.get(
        method, f"{method}Object"
    ), params


DEPLOY = REPO / "deploy"


def _from_production_code() -> bool:
    """Whether the innermost frame of this repository on the stack is outside tests/ and deploy/
    (whose set-up scripts run as the administrator who builds the estate, not as a platform role)."""
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename)
        if REPO in path.parents and ".venv" not in path.parts:
            if path == Path(__file__):
                continue
            return TESTS not in path.parents and DEPLOY not in path.parents
    return False


@dataclass
class CallRecorder:
    calls: list[tuple[str, str, dict]] = field(default_factory=list)
    lake_buckets: list[str] = field(default_factory=list)  # the lake_root fixture's bucket, prefix lake/

    def attach(self, session) -> None:
        session.events.register("before-parameter-build", self._record, unique_id="iot-lake-iam-audit")

    def _record(self, params, model, **_):
        if _from_production_code():
            service = model.service_model.service_id.hyphenize()
            self.calls.append((service, model.name, json.loads(json.dumps(params, default=str))))

    def denied(self, role: str = "dagster") -> list[Request]:
        """The recorded calls' requests that the role's policy, rendered for this test's lake, denies."""
        out = []
        for bucket in self.lake_buckets or ["no-lake-bucket"]:
            policy = Policy(rendered_policies(Bucket=bucket)[f"{role}.policy"])
            out.append({r for s, op, p in self.calls for r in requests_of(s, op, p) if not policy.allows(r)})
        return sorted(set.intersection(*out), key=lambda r: (r.action, r.resource)) if out else []


def statements(document: dict) -> list[dict]:
    return _listify(document["Statement"])


if __name__ == "__main__":  # print the rendered policies, for a look
    json.dump(rendered_policies(), sys.stdout, indent=1)
