"""landing_sensor: notices new landing objects and requests runs for the partitions they touch.

Cursor: the newest modification time seen (high-water mark) plus digests of the objects seen
within a grace period before it. An object counts as new if it is younger than the mark minus
the grace and not among those digests, so an object that shows up late in a listing (S3 reports
a multipart upload's start time as LastModified) is still caught, and none is requested twice.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field

from dagster import (
    AssetObservation,
    DefaultSensorStatus,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from assets.landing.telemetry import LANDING_TELEMETRY_KEY
from assets.landing.weather import LANDING_WEATHER_KEY
from assets.partitions import daily_partitions, hourly_partitions
from iot_lake.lake import TELEMETRY_PREFIX, WEATHER_PREFIX, Lake, ObjectInfo, telemetry_hour_of_key, weather_day_of_key
from iot_lake.sources.telemetry import quick_check
from jobs.ingest import telemetry_hourly_job, weather_daily_job
from resources.lake import LakeResource

GRACE_SECONDS = 900.0


def _digest(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:16]


@dataclass
class LandingCursor:
    high_water: float = 0.0
    recent: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, raw: str | None) -> LandingCursor:
        if not raw:
            return cls()
        doc = json.loads(raw)
        return cls(high_water=float(doc["high_water"]), recent=set(doc["recent"]))

    def serialize(self) -> str:
        return json.dumps({"high_water": self.high_water, "recent": sorted(self.recent)})

    def advance(self, listed: list[ObjectInfo]) -> tuple[list[ObjectInfo], LandingCursor]:
        """Split a listing into the new objects and the cursor that remembers them."""
        horizon = self.high_water - GRACE_SECONDS
        new = [o for o in listed if o.mtime >= horizon and _digest(o.key) not in self.recent]
        high_water = max([self.high_water, *(o.mtime for o in listed)])
        recent = {_digest(o.key) for o in listed if o.mtime >= high_water - GRACE_SECONDS}
        return new, LandingCursor(high_water=high_water, recent=recent)


def _readability(lake: Lake, obj: ObjectInfo) -> str | None:
    if obj.key.startswith(TELEMETRY_PREFIX + "/"):
        try:
            return quick_check(lake, obj)
        except Exception as exc:  # one bad object must never stop the sensor
            return f"{type(exc).__name__}: {exc}"
    if obj.size == 0:
        return "empty file"
    if not obj.key.endswith((".csv", ".json")):
        return "not a .csv or .json file"
    return None


def _partition_of(obj: ObjectInfo) -> tuple[str, str] | None:
    """(job name, partition key) a landing object belongs to, if its key has a known layout."""
    if (hour := telemetry_hour_of_key(obj.key)) is not None:
        return telemetry_hourly_job.name, hour.strftime("%Y-%m-%d-%H:%M")
    if (day := weather_day_of_key(obj.key)) is not None:
        return weather_daily_job.name, day.strftime("%Y-%m-%d")
    return None


_JOB_ASSET = {telemetry_hourly_job.name: LANDING_TELEMETRY_KEY, weather_daily_job.name: LANDING_WEATHER_KEY}
_JOB_PARTITIONS = {telemetry_hourly_job.name: hourly_partitions, weather_daily_job.name: daily_partitions}


@sensor(
    name="landing_sensor",
    jobs=[telemetry_hourly_job, weather_daily_job],
    # The landing-object -> case budget is 60 s: waiting for this tick cost up to 15 s of it at 15 s.
    minimum_interval_seconds=5,
    default_status=DefaultSensorStatus.RUNNING,
    description="New landing objects (telemetry, weather) -> runs for the partitions they touch.",
)
def landing_sensor(context: SensorEvaluationContext, lake: LakeResource) -> SensorResult:
    the_lake = lake.lake()
    listed = [*the_lake.list(TELEMETRY_PREFIX), *the_lake.list(WEATHER_PREFIX)]
    new, cursor = LandingCursor.parse(context.cursor).advance(listed)

    touched: dict[tuple[str, str], list[str]] = defaultdict(list)
    observations = []
    for obj in new:
        target = _partition_of(obj)
        reason = _readability(the_lake, obj)
        if target is not None and not _JOB_PARTITIONS[target[0]].has_partition_key(target[1]):
            reason, target = f"outside the partitions of {target[0]} ({target[1]})", None
        if reason:
            context.log.warning(f"landing object {obj.key}: {reason}")
            observations.append(
                AssetObservation(
                    asset_key=_JOB_ASSET[target[0]] if target else LANDING_TELEMETRY_KEY,
                    partition=target[1] if target else None,
                    metadata={
                        "object": MetadataValue.path(the_lake.uri(obj.key)),
                        "unreadable_reason": MetadataValue.text(reason),
                    },
                )
            )
        if target is None:
            if not reason:
                context.log.warning(f"landing object {obj.key}: key does not follow the landing layout; not processed")
                observations.append(
                    AssetObservation(
                        asset_key=LANDING_TELEMETRY_KEY,
                        metadata={
                            "object": MetadataValue.path(the_lake.uri(obj.key)),
                            "unreadable_reason": MetadataValue.text("key does not follow the landing layout"),
                        },
                    )
                )
            continue
        touched[target].append(obj.key)  # unreadable objects still go to their partition's inventory

    run_requests = [
        RunRequest(
            job_name=job,
            partition_key=partition,
            # The same new objects always make the same key, so a repeated tick cannot double a run.
            run_key=f"{job}:{partition}:{hashlib.sha1(''.join(sorted(keys)).encode()).hexdigest()[:12]}",
            tags={"iot_lake/new_objects": str(len(keys))},
        )
        for (job, partition), keys in sorted(touched.items())
    ]
    if new:
        context.log.info(f"{len(new)} new landing object(s) -> {len(run_requests)} run(s)")
    return SensorResult(run_requests=run_requests, asset_events=observations, cursor=cursor.serialize())
