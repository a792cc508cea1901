"""Renders the IAM policies and trust policies in this folder for one deployment.

    python deploy/iam/render.py --out build/iam --bucket my-lake --prefix lake --region eu-west-1 \
        --account-id 123456789012 --kms-key-arn arn:aws:kms:...:key/... \
        --emr-application-id 00f... --glue-job-name iot-lake-spark --emr-cluster-id j-... \
        --glue-database iot_lake --sns-topic-arn arn:aws:sns:... --event-bus-name iot-lake \
        --response-plan-arn arn:aws:ssm-incidents::...:response-plan/iot-lake \
        --spark-env-archive s3://my-artifacts/spark-env/iot-lake-env.tar.gz \
        --ecr-repository-arn arn:aws:ecr:...:repository/iot-lake-ml \
        --compute-log-bucket my-lake --compute-log-prefix dagster/compute-logs

Then, per role: aws iam create-role --role-name NAME --assume-role-policy-document file://OUT/ROLE.trust.json
and aws iam put-role-policy --role-name NAME --policy-name iot-lake --policy-document file://OUT/ROLE.policy.json.
Every ${Placeholder} must get a value: a policy for a service you do not use (Glue, EMR steps, an
event bus) renders with a value that matches nothing, e.g. --glue-job-name none. Standard library
only, so it runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

HERE = Path(__file__).parent
PLACEHOLDER = re.compile(r"\$\{([A-Za-z]+)\}")
# Placeholder -> (option, default); the role names are the ones the trust policies are created under.
OPTIONS = {
    "Bucket": ("--bucket", None),
    "Prefix": ("--prefix", ""),
    "Region": ("--region", None),
    "AccountId": ("--account-id", None),
    "KmsKeyArn": ("--kms-key-arn", None),
    "EmrApplicationId": ("--emr-application-id", "none"),
    "GlueJobName": ("--glue-job-name", "none"),
    "EmrClusterId": ("--emr-cluster-id", "none"),
    "GlueDatabase": ("--glue-database", "iot_lake"),
    "SnsTopicArn": ("--sns-topic-arn", None),
    "EventBusName": ("--event-bus-name", "none"),
    "LandingQueueName": ("--landing-queue-name", "none"),  # the landing sensor's SQS trigger, if used
    "TelemetryStreamName": ("--telemetry-stream-name", "none"),  # the streaming scorer's Kinesis source, if used
    "ResponsePlanArn": ("--response-plan-arn", "arn:aws:ssm-incidents::000000000000:response-plan/none"),
    "SparkEnvArchiveArn": ("--spark-env-archive", None),
    "EcrRepositoryArn": ("--ecr-repository-arn", None),
    "ComputeLogBucket": ("--compute-log-bucket", None),
    "ComputeLogPrefix": ("--compute-log-prefix", "dagster/compute-logs"),
    "EmrJobRoleName": ("--emr-job-role-name", "iot-lake-emr-serverless-job"),
    "GlueJobRoleName": ("--glue-job-role-name", "iot-lake-glue-job"),
    "SageMakerRoleName": ("--sagemaker-role-name", "iot-lake-sagemaker"),
    "StateTableName": ("--state-table-name", "iot-lake-device-state"),  # the serving API's hot state
    "ApiFunctionName": ("--api-function-name", "iot-lake-api"),
}
# emr-ec2-instance: the instance profile of an EMR cluster that runs the jobs as steps (IOT_LAKE_SPARK_MODE=emr).
# api-lambda: the serving API's Lambda function; its documents live with its deploy definition in deploy/api/.
ROLES = ("dagster", "emr-serverless-job", "emr-ec2-instance", "glue-job", "sagemaker", "api-lambda")
FOLDERS = (HERE, HERE.parent / "api")


def _prefix(value: str) -> str:
    """A key prefix as the policies use it: 'lake' -> 'lake/', '' -> '' (the bucket root)."""
    value = value.strip("/")
    return f"{value}/" if value else ""


def _s3_arn(uri: str) -> str:
    return "arn:aws:s3:::" + uri.removeprefix("s3://").lstrip("/")


def values_from(settings: dict[str, str]) -> dict[str, str]:
    """Placeholder values from option values (keyed by placeholder), normalised."""
    values = dict(settings)
    values["Prefix"] = _prefix(values.get("Prefix", ""))
    values["ComputeLogPrefix"] = _prefix(values.get("ComputeLogPrefix", ""))
    # The incidents a response plan starts (arn:...:incident-record/PLAN/ID): the case sinks add
    # timeline events to them (a site incident's later cases).
    plan = values.get("ResponsePlanArn")
    if plan and ":response-plan/" in plan:
        values["ResponsePlanIncidentsArn"] = plan.replace(":response-plan/", ":incident-record/", 1) + "/*"
    if values.get("SparkEnvArchiveArn", "").startswith("s3://"):
        values["SparkEnvArchiveArn"] = _s3_arn(values["SparkEnvArchiveArn"])
    return values


def render(document: object, values: dict[str, str]) -> object:
    """The document with every ${Placeholder} replaced; an unknown or missing one is an error."""
    text = json.dumps(document)
    missing = sorted({m for m in PLACEHOLDER.findall(text) if values.get(m) is None})
    if missing:
        raise ValueError(f"no value for {', '.join('${' + m + '}' for m in missing)}")
    return json.loads(PLACEHOLDER.sub(lambda m: values[m.group(1)], text))


def documents() -> dict[str, object]:
    """'<role>.policy' and '<role>.trust' -> the template."""
    paths = [p for folder in FOLDERS for kind in ("policy", "trust") for p in folder.glob(f"*.{kind}.json")]
    return {p.name.removesuffix(".json"): json.loads(p.read_text()) for p in sorted(paths)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    for name, (option, default) in OPTIONS.items():
        parser.add_argument(option, dest=name, default=default, required=default is None)
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    values = values_from(args)
    out.mkdir(parents=True, exist_ok=True)
    for name, document in documents().items():
        (out / f"{name}.json").write_text(json.dumps(render(document, values), indent=2) + "\n")
        print(out / f"{name}.json")


if __name__ == "__main__":
    main()
