"""The CDK app: `cdk synth` / `cdk deploy` from this folder (cdk.json runs it with the repo's .venv).

Settings are CDK context (cdk.json's defaults, or -c key=value): prefix, bucketName, kinesisSource,
telemetryTopic, alarmDevices, alarmMinutes/alarmOfMinutes, createReplicationSet, casesUrlSecret, and
the optional names the IAM renderer takes (emrClusterId, glueDatabase, landingQueueName,
sparkEnvArchive, ecrRepositoryArn, computeLogBucket, stateTableName, apiFunctionName). The serving
API's image (deploy/api/Dockerfile) is built by `cdk deploy`, with Docker; synth only stages it.
docs/production.md has the walk-through.
"""

import aws_cdk as cdk
from iot_lake_stack import IotLakeStack

app = cdk.App()
IotLakeStack(
    app,
    "IotLake",
    description="iot-lake: lake, device landing, Spark, roles, case channels, alarms and the serving API",
)
app.synth()
