"""The automation sensor that keeps ops/deviations current: it evaluates the eager automation
condition as curated minutes and forecasts land, so a case opens within a minute of its data."""

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

ops_automation_sensor = AutomationConditionSensorDefinition(
    "ops_automation_sensor",
    target=AssetSelection.groups("ops"),
    default_status=DefaultSensorStatus.RUNNING,
    # Dagster's default is 30 s; the deviation -> case latency target is 60 s end to end.
    minimum_interval_seconds=5,
    description="Scores an hour's deviations again whenever its curated minutes or its forecast are new.",
)
