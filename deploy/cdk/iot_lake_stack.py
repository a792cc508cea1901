"""The production estate as one CDK stack: the lake bucket and key, the device path (IoT rule ->
Firehose -> landing), the Spark services, the roles, the case channels, the deviation alarms and the
serving API (hot-state table, Lambda function, HTTP API).

The documents kept beside the other deploy tools are the source: the roles' policies and trust
policies are deploy/iam/*.json and deploy/api/*.json (the files the recorded-calls audit checks,
tests/iam_audit.py), the serving API deploy/api/function.json, the bucket's policy, encryption and
lifecycle deploy/s3/*.json, the EMR Serverless application and the Glue job
deploy/emr-serverless/application.json and deploy/glue/job.json; nothing is copied here.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_ssmincidents as incidents
from aws_cdk.aws_apigatewayv2_integrations import HttpLambdaIntegration
from aws_cdk.aws_kinesisfirehose import CfnDeliveryStream as Firehose
from constructs import Construct

from iot_lake.detect.metrics import NAMESPACE as DEVIATION_NAMESPACE
from iot_lake.detect.metrics import UNKNOWN_SITE, alarm_name
from iot_lake.ids import validate_id
from iot_lake.lake import TELEMETRY_PREFIX

DEPLOY = Path(__file__).resolve().parent.parent
# Role (file stem in deploy/iam/) -> the renderer's placeholder holding its name, if others pass it.
ROLES = {
    "dagster": None,
    "emr-serverless-job": "EmrJobRoleName",
    "glue-job": "GlueJobRoleName",
    "sagemaker": "SageMakerRoleName",
    "api-lambda": None,  # deploy/api/api-lambda.*.json: the serving API's function
}
REPO = DEPLOY.parent
# The API function's code: a container image (deploy/api/Dockerfile, built from the repo root by
# cdk deploy), as its dependencies are over Lambda's 250 MB zip limit.
API_DOCKERFILE = "deploy/api/Dockerfile"
# The image's build context is the repo root: only what the Dockerfile copies goes in (Docker's
# ignore rules, last match wins), so synth never stages the venvs, the lake or node_modules.
API_IMAGE_CONTEXT = ["*", "!pyproject.toml", "!uv.lock", "!iot_lake", "!" + API_DOCKERFILE, "**/__pycache__"]
# The case store's URL, a Secrets Manager secret resolved by CloudFormation at deploy time.
CASES_URL_SECRET = "iot-lake/cases-url"
RESPONSE_PLAN_NAME = "iot-lake"
# Firehose's arrival-time namespace, hour by hour: the layout telemetry_hour_prefix() reads.
ARRIVAL_HOUR = "!{timestamp:yyyy}/!{timestamp:MM}/!{timestamp:dd}/!{timestamp:HH}/"


def renderer():
    """deploy/iam/render.py, the one renderer of the ${Placeholder} templates."""
    spec = importlib.util.spec_from_file_location("iot_lake_iam_render", DEPLOY / "iam" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def template(relative: str) -> dict:
    return json.loads((DEPLOY / relative).read_text())


def _pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


def emr_application_properties(doc: dict) -> dict:
    """The CLI's create-application JSON as AWS::EMRServerless::Application properties."""
    props = {}
    for key, value in doc.items():
        if key == "initialCapacity":
            value = [{"Key": k, "Value": _pascal_keys(v)} for k, v in value.items()]
        elif key == "runtimeConfiguration":
            # Spark's own property names stay as they are.
            value = [{"Classification": c["classification"], "Properties": c["properties"]} for c in value]
        elif key == "tags":
            value = [{"Key": k, "Value": v} for k, v in value.items()]
        else:
            value = _pascal_keys(value)
        props[_pascal(key)] = value
    return props


def _pascal_keys(value):
    if isinstance(value, dict):
        return {_pascal(k): _pascal_keys(v) for k, v in value.items()}
    return value


class IotLakeStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        ctx = self.node.try_get_context
        self.render = renderer()
        self.prefix = self.render.values_from({"Prefix": ctx("prefix") or ""})["Prefix"]
        self.key = kms.Key(self, "LakeKey", alias="alias/iot-lake", enable_key_rotation=True)
        self.bucket = self._bucket(ctx("bucketName"))
        self.topic = sns.Topic(self, "Cases", topic_name="iot-lake-cases", master_key=self.key)
        self.bus = events.EventBus(self, "CaseBus", event_bus_name="iot-lake")
        self.response_plan = self._response_plan(bool(ctx("createReplicationSet") in (None, True, "true")))
        self.glue_job_name = template("glue/job.json")["Name"]
        self.emr_application = cdk.CfnResource(
            self,
            "SparkApplication",
            type="AWS::EMRServerless::Application",
            properties=emr_application_properties(template("emr-serverless/application.json")),
        )
        # Before the policies: the Dagster role's may read it (the streaming scorer, iot-lake stream).
        self.stream = (
            kinesis.Stream(self, "Telemetry", encryption_key=self.key) if _flag(ctx("kinesisSource")) else None
        )
        self.values = self._policy_values()
        self.roles = {name: self._role(name, placeholder) for name, placeholder in ROLES.items()}
        self.glue_job = self._glue_job()
        self.delivery_stream = self._delivery_stream()
        self.topic_rule = self._topic_rule(ctx("telemetryTopic") or "iot-lake/+/telemetry")
        self.alarms = [self._deviation_alarm(d, **_band(ctx)) for d in _devices(ctx("alarmDevices"))]
        self.state_table, self.api_function, self.http_api = self._serving_api()
        self._outputs()

    # -- the lake ---------------------------------------------------------------------------------
    def _bucket(self, name: str | None) -> s3.Bucket:
        encryption = template("s3/bucket.encryption.json")["Rules"][0]
        assert encryption["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        bucket = s3.Bucket(
            self,
            "Lake",
            bucket_name=name,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=encryption["BucketKeyEnabled"],
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            versioned=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
            lifecycle_rules=self._lifecycle_rules(),
        )
        values = self.render.values_from({"Bucket": bucket.bucket_name, "KmsKeyArn": self.key.key_arn})
        policy = iam.PolicyDocument.from_json(self.render.render(template("s3/bucket.policy.json"), values))
        for statement in policy.to_json()["Statement"]:
            bucket.add_to_resource_policy(iam.PolicyStatement.from_json(statement))
        return bucket

    def _lifecycle_rules(self) -> list[s3.LifecycleRule]:
        doc = self.render.render(template("s3/bucket.lifecycle.json"), {"Prefix": self.prefix})
        rules = []
        for rule in doc["Rules"]:
            expiration = rule.get("Expiration", {}).get("Days")
            abort = rule.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation")
            rules.append(
                s3.LifecycleRule(
                    id=rule["ID"],
                    enabled=rule["Status"] == "Enabled",
                    prefix=rule["Filter"]["Prefix"] or None,
                    expiration=cdk.Duration.days(expiration) if expiration else None,
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(abort) if abort else None,
                )
            )
        return rules

    # -- Spark ------------------------------------------------------------------------------------
    def _glue_job(self) -> cdk.CfnResource:
        values = {"GlueJobRoleArn": self.roles["glue-job"].role_arn, "LakeRoot": self.lake_root}
        return cdk.CfnResource(
            self, "SparkJob", type="AWS::Glue::Job", properties=self.render.render(template("glue/job.json"), values)
        )

    @property
    def lake_root(self) -> str:
        return f"s3://{self.bucket.bucket_name}/{self.prefix}".rstrip("/")

    # -- roles ------------------------------------------------------------------------------------
    def _policy_values(self) -> dict[str, str]:
        ctx = self.node.try_get_context
        defaults = {name: default for name, (_, default) in self.render.OPTIONS.items()}
        settings = {
            **defaults,
            "Bucket": self.bucket.bucket_name,
            "Prefix": self.prefix,
            "Region": cdk.Aws.REGION,
            "AccountId": cdk.Aws.ACCOUNT_ID,
            "KmsKeyArn": self.key.key_arn,
            "EmrApplicationId": self.emr_application.get_att("ApplicationId").to_string(),
            "GlueJobName": self.glue_job_name,
            "EmrClusterId": ctx("emrClusterId") or "none",
            "GlueDatabase": ctx("glueDatabase") or defaults["GlueDatabase"],
            "SnsTopicArn": self.topic.topic_arn,
            "EventBusName": self.bus.event_bus_name,
            "LandingQueueName": ctx("landingQueueName") or "none",
            "TelemetryStreamName": self.stream.stream_name if self.stream else "none",
            "ResponsePlanArn": self.response_plan_arn,
            "SparkEnvArchiveArn": ctx("sparkEnvArchive")
            or f"s3://{self.bucket.bucket_name}/artifacts/spark-env/iot-lake-env.tar.gz",
            "EcrRepositoryArn": ctx("ecrRepositoryArn")
            or f"arn:aws:ecr:{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}:repository/iot-lake-ml",
            "ComputeLogBucket": ctx("computeLogBucket") or self.bucket.bucket_name,
            "StateTableName": ctx("stateTableName") or defaults["StateTableName"],
            "ApiFunctionName": ctx("apiFunctionName") or defaults["ApiFunctionName"],
        }
        return self.render.values_from(settings)

    def _role(self, name: str, placeholder: str | None) -> iam.Role:
        role_name = self.values[placeholder] if placeholder else f"iot-lake-{name}"
        documents = self.render.documents()  # deploy/iam's and deploy/api's, as the CLI renders them
        trust = self.render.render(documents[f"{name}.trust"], self.values)
        policy = self.render.render(documents[f"{name}.policy"], self.values)
        service = trust["Statement"][0]["Principal"]["Service"]
        principal = iam.ServicePrincipal(service if isinstance(service, str) else service[0])
        role = iam.Role(
            self,
            _construct_id(name),
            role_name=role_name,
            assumed_by=principal,
            inline_policies={"iot-lake": iam.PolicyDocument.from_json(policy)},
        )
        # The trust policy as written (all its principals and conditions), not CDK's rendering.
        role.node.default_child.add_property_override("AssumeRolePolicyDocument", trust)
        return role

    # -- device telemetry -------------------------------------------------------------------------
    @property
    def landing_prefix(self) -> str:
        return f"{self.prefix}{TELEMETRY_PREFIX}/{ARRIVAL_HOUR}"

    def _delivery_stream(self) -> Firehose:
        role = iam.Role(self, "FirehoseRole", assumed_by=iam.ServicePrincipal("firehose.amazonaws.com"))
        # Writes only the telemetry landing area and its own error records.
        errors = f"{self.prefix}_logs/firehose/"
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject", "s3:AbortMultipartUpload", "s3:GetBucketLocation", "s3:ListBucket"],
                resources=[
                    self.bucket.bucket_arn,
                    self.bucket.arn_for_objects(f"{self.prefix}{TELEMETRY_PREFIX}/*"),
                    self.bucket.arn_for_objects(f"{errors}*"),
                ],
            )
        )
        self.key.grant_encrypt_decrypt(role)
        source = {}
        if self.stream is not None:
            self.stream.grant_read(role)
            source = {
                "delivery_stream_type": "KinesisStreamAsSource",
                "kinesis_stream_source_configuration": Firehose.KinesisStreamSourceConfigurationProperty(
                    kinesis_stream_arn=self.stream.stream_arn, role_arn=role.role_arn
                ),
            }
        stream = Firehose(
            self,
            "Landing",
            delivery_stream_name="iot-lake-telemetry",
            extended_s3_destination_configuration=Firehose.ExtendedS3DestinationConfigurationProperty(
                bucket_arn=self.bucket.bucket_arn,
                role_arn=role.role_arn,
                prefix=self.landing_prefix,
                error_output_prefix=f"{errors}!{{firehose:error-output-type}}/{ARRIVAL_HOUR}",
                compression_format="GZIP",
                # The landing contract: one object per 300 s or 5 MiB.
                buffering_hints=Firehose.BufferingHintsProperty(interval_in_seconds=300, size_in_m_bs=5),
                encryption_configuration=Firehose.EncryptionConfigurationProperty(
                    kms_encryption_config=Firehose.KMSEncryptionConfigProperty(awskms_key_arn=self.key.key_arn)
                ),
            ),
            **source,
        )
        stream.node.add_dependency(role)
        return stream

    def _topic_rule(self, topic: str) -> iot.CfnTopicRule:
        role = iam.Role(self, "TopicRuleRole", assumed_by=iam.ServicePrincipal("iot.amazonaws.com"))
        if self.stream is not None:
            self.stream.grant_write(role)
            action = iot.CfnTopicRule.ActionProperty(
                kinesis=iot.CfnTopicRule.KinesisActionProperty(
                    stream_name=self.stream.stream_name, role_arn=role.role_arn, partition_key="${newuuid()}"
                )
            )
        else:
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["firehose:PutRecord", "firehose:PutRecordBatch"], resources=[self.delivery_stream.attr_arn]
                )
            )
            action = iot.CfnTopicRule.ActionProperty(
                firehose=iot.CfnTopicRule.FirehoseActionProperty(
                    delivery_stream_name=self.delivery_stream.ref, role_arn=role.role_arn, separator="\n"
                )
            )
        # ingested_at: when IoT Core received the message (the landing contract's arrival time).
        sql = (
            f"SELECT *, parse_time(\"yyyy-MM-dd'T'HH:mm:ss.SSS'Z'\", timestamp(), 'UTC') AS ingested_at FROM '{topic}'"
        )
        return iot.CfnTopicRule(
            self,
            "TelemetryRule",
            rule_name="iot_lake_telemetry",
            topic_rule_payload=iot.CfnTopicRule.TopicRulePayloadProperty(
                sql=sql, aws_iot_sql_version="2016-03-23", actions=[action]
            ),
        )

    # -- cases, incidents and alarms --------------------------------------------------------------
    @property
    def response_plan_arn(self) -> str:
        return f"arn:aws:ssm-incidents::{cdk.Aws.ACCOUNT_ID}:response-plan/{RESPONSE_PLAN_NAME}"

    def _response_plan(self, replication_set: bool) -> incidents.CfnResponsePlan:
        # Alarms notify the topic, and the topic's key must let CloudWatch use it.
        self.key.grant_encrypt_decrypt(iam.ServicePrincipal("cloudwatch.amazonaws.com"))
        plan = incidents.CfnResponsePlan(
            self,
            "ResponsePlan",
            name=RESPONSE_PLAN_NAME,
            display_name="iot-lake deviations",
            incident_template=incidents.CfnResponsePlan.IncidentTemplateProperty(
                title="iot-lake: a device outside its forecast band",
                impact=3,
                notification_targets=[
                    incidents.CfnResponsePlan.NotificationTargetItemProperty(sns_topic_arn=self.topic.topic_arn)
                ],
            ),
        )
        if replication_set:
            # Incident Manager needs one replication set per account; an account that has one
            # already deploys with -c createReplicationSet=false.
            replication = incidents.CfnReplicationSet(
                self,
                "IncidentReplication",
                regions=[incidents.CfnReplicationSet.ReplicationRegionProperty(region_name=cdk.Aws.REGION)],
            )
            plan.node.add_dependency(replication)
        return plan

    def _deviation_alarm(self, device: dict, minutes: int, of_minutes: int) -> cw.Alarm:
        # An id the curated layer would quarantine has no series to alarm on: refused, not mangled.
        dims = {
            "DeviceId": validate_id("device", device["deviceId"]),
            "Metric": validate_id("metric", device["metric"]),
            "SiteId": validate_id("site", device.get("siteId") or UNKNOWN_SITE),  # as the publisher sends it
        }

        def series(name: str) -> cw.Metric:
            return cw.Metric(
                namespace=DEVIATION_NAMESPACE,
                metric_name=name,
                dimensions_map=dims,
                period=cdk.Duration.minutes(1),
                statistic="Average",
            )

        outside = cw.MathExpression(
            expression="IF(actual < lower OR actual > upper, 1, 0)",
            using_metrics={
                "actual": series("Actual"),
                "lower": series("BandLower95"),
                "upper": series("BandUpper95"),
            },
            period=cdk.Duration.minutes(1),
            label="actual outside the 95% band",
        )
        # The series' name everywhere (metrics.alarm_name): the case sink finds the incident this
        # alarm starts by it.
        name = alarm_name(dims["SiteId"], dims["DeviceId"], dims["Metric"])
        alarm = cw.Alarm(
            self,
            name,
            alarm_name=name,
            alarm_description=f"{dims['Metric']} of {dims['DeviceId']} ({dims['SiteId']}) outside the 95% "
            f"forecast band for {minutes} of {of_minutes} minutes",
            metric=outside,
            threshold=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=of_minutes,
            datapoints_to_alarm=minutes,
            # No data is no evidence of a deviation (a device offline is the quality checks' case).
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cw_actions.SsmIncidentAction(RESPONSE_PLAN_NAME), cw_actions.SnsAction(self.topic))
        alarm.node.add_dependency(self.response_plan)
        return alarm

    # -- the serving API (deploy/api/function.json) -----------------------------------------------
    def _serving_api(self) -> tuple[cdk.CfnResource, lambda_.Function, apigw.HttpApi]:
        doc = template("api/function.json")
        table = cdk.CfnResource(
            self,
            "HotState",
            type="AWS::DynamoDB::Table",
            properties=self.render.render(doc["stateTable"], self.values),
        )
        # Rebuilt only by pushes of changed rows: keep it through a stack replacement.
        table.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
        function = self._api_function(doc["function"])
        spec = doc["httpApi"]
        integration = spec["Integration"]
        assert (integration["IntegrationType"], spec["Routes"]) == ("AWS_PROXY", ["$default"])
        api = apigw.HttpApi(
            self,
            "HttpApi",
            api_name=spec["Name"],
            create_default_stage=False,
            default_integration=HttpLambdaIntegration(
                "Api",
                function,
                payload_format_version=apigw.PayloadFormatVersion.custom(integration["PayloadFormatVersion"]),
                timeout=cdk.Duration.millis(integration["TimeoutInMillis"]),
            ),
        )
        stage = spec["Stage"]
        apigw.HttpStage(
            self,
            "HttpApiStage",
            http_api=api,
            stage_name=stage["StageName"],
            auto_deploy=stage["AutoDeploy"],
            throttle=apigw.ThrottleSettings(
                burst_limit=stage["DefaultRouteSettings"]["ThrottlingBurstLimit"],
                rate_limit=stage["DefaultRouteSettings"]["ThrottlingRateLimit"],
            ),
        )
        return table, function, api

    def _api_function(self, spec: dict) -> lambda_.Function:
        # function.json without the VPC (its subnets are the deployment's; see docs/production.md).
        spec = self.render.render({k: v for k, v in spec.items() if k != "VpcConfig"}, self.values)
        # The name its policy's log group is scoped to (-c apiFunctionName), function.json's by default.
        spec["FunctionName"] = self.values["ApiFunctionName"]
        env = dict(spec["Environment"]["Variables"])
        secret = self.node.try_get_context("casesUrlSecret") or CASES_URL_SECRET
        env["IOT_LAKE_CASES_URL"] = cdk.SecretValue.secrets_manager(secret).unsafe_unwrap()
        # The policy lets the function write its log streams, not create its group: the stack does.
        logs_group = logs.LogGroup(
            self,
            "ApiLogs",
            log_group_name=f"/aws/lambda/{spec['FunctionName']}",
            retention=logs.RetentionDays.ONE_MONTH,
        )
        arch = spec["Architectures"][0]
        # The image's CMD is the handler (the Dockerfile's, checked against function.json by the tests).
        code = lambda_.DockerImageCode.from_image_asset(
            directory=str(REPO),
            file=API_DOCKERFILE,
            exclude=API_IMAGE_CONTEXT,
            ignore_mode=cdk.IgnoreMode.DOCKER,
            platform={"x86_64": ecr_assets.Platform.LINUX_AMD64, "arm64": ecr_assets.Platform.LINUX_ARM64}[arch],
        )
        function = lambda_.DockerImageFunction(
            self,
            "Api",
            function_name=spec["FunctionName"],
            description=spec["Description"],
            code=code,
            role=self.roles["api-lambda"],
            architecture={"x86_64": lambda_.Architecture.X86_64, "arm64": lambda_.Architecture.ARM_64}[arch],
            memory_size=spec["MemorySize"],
            timeout=cdk.Duration.seconds(spec["Timeout"]),
            environment=env,
            log_group=logs_group,
        )
        for key, value in spec["Tags"].items():
            cdk.Tags.of(function).add(key, value)
        return function

    def _outputs(self) -> None:
        outputs = {
            "IotLakeBucket": self.bucket.bucket_name,
            "IotLakePrefix": self.prefix.rstrip("/"),
            "IotLakeKmsKeyId": self.key.key_arn,
            "IotLakeEmrApplicationId": self.emr_application.get_att("ApplicationId").to_string(),
            "IotLakeEmrJobRoleArn": self.roles["emr-serverless-job"].role_arn,
            "IotLakeGlueJobName": self.glue_job_name,
            "IotLakeSageMakerRoleArn": self.roles["sagemaker"].role_arn,
            "IotLakeDagsterRoleArn": self.roles["dagster"].role_arn,
            "IotLakeSnsTopicArn": self.topic.topic_arn,
            "IotLakeEventBusName": self.bus.event_bus_name,
            "IotLakeIncidentResponsePlanArn": self.response_plan_arn,
            "IotLakeStateTable": self.state_table.ref,
            "IotLakeApiUrl": self.http_api.api_endpoint,
            # The streaming scorer's source (deploy/systemd/iot-lake-stream.service), with -c kinesisSource=true.
            "IotLakeTelemetryStream": self.stream.stream_name if self.stream else None,
        }
        for name, value in outputs.items():
            cdk.CfnOutput(self, name, value=value or "-")


def _construct_id(name: str) -> str:
    return "".join(part.title() for part in name.split("-")) + "Role"


def _flag(value) -> bool:
    return value in (True, "true", "1", "yes")


def _band(ctx) -> dict[str, int]:
    """N of M minutes: -c alarmMinutes=3 -c alarmOfMinutes=5 (default 3 of 5)."""
    return {"minutes": int(ctx("alarmMinutes") or 3), "of_minutes": int(ctx("alarmOfMinutes") or 5)}


def _devices(value) -> list[dict]:
    """cdk.json's list, or the same as JSON text (-c alarmDevices='[{"deviceId": ...}]')."""
    return json.loads(value) if isinstance(value, str) else list(value or [])
