"""landing_sensor: notices new landing objects and requests runs for the partitions they touch.

It lists only the date folders that can still receive objects: for telemetry the hours from the
newest hour seen minus a margin up to now (Firehose names the folder by arrival time, and buffering
and multipart uploads land late), for weather the days likewise, and the announcements that writers
of older hours leave (``iot_lake.announcements``). An object written into an older folder without
an announcement is not seen. The first tick (no cursor) lists everything once.

Cursor: the newest modification time seen (high-water mark) plus digests of the objects seen
within a grace period before it, and the newest date folder seen per prefix. An object counts as
new if it is younger than the mark minus the grace and not among those digests, so an object that
shows up late in a listing (S3 reports a multipart upload's start time as LastModified) is still
caught, and none is requested twice.

With ``landing_queue_url`` set (prod: S3 Event Notifications -> SQS), the sensor lists nothing: it
receives the queue's messages instead (``sensors/landing_queue.py``).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

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
from iot_lake.announcements import announced_keys
from iot_lake.lake import (
    ANNOUNCEMENT_PREFIX,
    TELEMETRY_PREFIX,
    WEATHER_PREFIX,
    Lake,
    ObjectInfo,
    is_hidden,
    telemetry_hour_of_key,
    weather_day_of_key,
)
from iot_lake.sources.telemetry import quick_check
from jobs.ingest import telemetry_hourly_job, weather_daily_job
from resources.lake import LakeResource
from sensors.landing_queue import QueueCursor, receive_objects

GRACE_SECONDS = 900.0
# Clocks of the writers (S3, Firehose, the simulator) may run a little ahead of the sensor's.
SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Folders:
    """A prefix laid out in date folders, and how far back from the newest one objects still land."""

    prefix: str
    format: str
    margin: timedelta

    def date_of(self, key: str) -> str | None:
        """The key's date folder ("2026/11/20/01"), if it lies in one."""
        if not key.startswith(self.prefix + "/"):
            return None
        parts = key.removeprefix(self.prefix + "/").split("/")
        depth = self.format.count("/") + 1
        folder = "/".join(parts[:depth])
        return folder if len(parts) > depth and _DATE_FOLDER.fullmatch(folder) else None

    def window(self, newest: str, now: datetime) -> tuple[tuple[str, ...], tuple[str, ...]]:
        low = datetime.strptime(newest, self.format).replace(tzinfo=UTC) - self.margin
        return tuple(f"{low:{self.format}}".split("/")), tuple(f"{now + SKEW:{self.format}}".split("/"))


_DATE_FOLDER = re.compile(r"\d{4}/\d{2}/\d{2}(/\d{2})?")
# Firehose buffers at most 15 min and a multipart upload shows up within the grace: 2 h is ample.
FOLDERS = {
    "telemetry": Folders(TELEMETRY_PREFIX, "%Y/%m/%d/%H", timedelta(hours=2)),
    # Weather files of a day arrive after it ends, partner feeds a day or so late.
    "weather": Folders(WEATHER_PREFIX, "%Y/%m/%d", timedelta(days=2)),
    "announcements": Folders(ANNOUNCEMENT_PREFIX, "%Y/%m/%d/%H", timedelta(hours=2)),
}


def _digest(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:16]


@dataclass
class LandingCursor:
    high_water: float = 0.0
    recent: set[str] = field(default_factory=set)
    newest: dict[str, str] = field(default_factory=dict)  # FOLDERS name -> newest date folder seen

    @classmethod
    def parse(cls, raw: str | None) -> LandingCursor:
        doc = json.loads(raw) if raw else {}
        if "high_water" not in doc:  # none yet, or the queue's (switched back from it): everything, once
            return cls()
        return cls(high_water=float(doc["high_water"]), recent=set(doc["recent"]), newest=doc.get("newest", {}))

    def serialize(self) -> str:
        return json.dumps({"high_water": self.high_water, "recent": sorted(self.recent), "newest": self.newest})

    def advance(self, listed: list[ObjectInfo]) -> tuple[list[ObjectInfo], LandingCursor]:
        """Split a listing into the new objects and the cursor that remembers them."""
        horizon = self.high_water - GRACE_SECONDS
        new = [o for o in listed if o.mtime >= horizon and _digest(o.key) not in self.recent]
        high_water = max([self.high_water, *(o.mtime for o in listed)])
        recent = {_digest(o.key) for o in listed if o.mtime >= high_water - GRACE_SECONDS}
        return new, LandingCursor(high_water=high_water, recent=recent, newest=self.newest)

    def with_newest(self, listed: list[ObjectInfo], now: datetime) -> LandingCursor:
        """The newest date folder per prefix, never one ahead of now: a misdated key must not close the window."""
        newest = dict(self.newest)
        for name, folders in FOLDERS.items():
            latest = f"{now + SKEW:{folders.format}}"
            dates = [d for o in listed if (d := folders.date_of(o.key)) and d <= latest]
            if dates:
                newest[name] = max([*dates, newest.get(name, "")])
        return LandingCursor(self.high_water, self.recent, newest)


def _list_open_folders(lake: Lake, cursor: LandingCursor, now: datetime) -> tuple[list[ObjectInfo], set[str]]:
    """The objects in the folders that can still receive some, and the names of the prefixes listed whole."""
    listed, whole = [], set()
    for name, folders in FOLDERS.items():
        if name not in cursor.newest:  # nothing seen there yet: everything, once
            whole.add(name)
            listed += lake.list(folders.prefix, side_files=is_hidden(folders.prefix))
        else:
            listed += lake.list_between(folders.prefix, *folders.window(cursor.newest[name], now))
    return listed, whole


def _announced_objects(context, lake: Lake, announcements: list[ObjectInfo], seen: set[str], recent: set[str]):
    """The objects new announcements name that no listing covers (listed ones are the listing's).

    An object the listing took is also recognized by its digest for the grace after it; only an
    announcement written later than that, after the window moved past the object's hour, would
    request it again (one more inventory of that hour). Writers announce right after writing.
    """
    wanted: set[str] = set()
    for announcement in announcements:
        try:
            keys = announced_keys(lake, announcement.key)
        except Exception as exc:  # a writer's broken announcement must never stop the sensor
            context.log.warning(f"announcement {announcement.key} unreadable: {type(exc).__name__}: {exc}")
            continue
        wanted.update(k for k in keys if _in_layout(k) and k not in seen and _digest(k) not in recent)
    by_folder = defaultdict(set)
    for key in wanted:
        by_folder[posixpath.dirname(key)].add(key)
    return [o for folder, keys in sorted(by_folder.items()) for o in lake.list(folder) if o.key in keys]


def _in_layout(key: str) -> bool:
    return not is_hidden(key) and (telemetry_hour_of_key(key) or weather_day_of_key(key)) is not None


def _listed_new_objects(context, lake: Lake, raw_cursor: str | None) -> tuple[list[ObjectInfo], str]:
    now = datetime.now(UTC)
    cursor = LandingCursor.parse(raw_cursor)
    listed, whole = _list_open_folders(lake, cursor, now)
    new, advanced = cursor.advance(listed)
    announcements = [o for o in new if o.key.startswith(ANNOUNCEMENT_PREFIX + "/")]
    new = [o for o in new if not o.key.startswith(ANNOUNCEMENT_PREFIX + "/")]
    if announcements and not {"telemetry", "weather"} <= whole:  # a whole listing found what they name
        seen = {o.key for o in listed}
        new += _announced_objects(context, lake, announcements, seen, advanced.recent)
    return new, advanced.with_newest(listed, now).serialize()


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
    if lake.landing_queue_url:
        new, cursor = receive_objects(the_lake, lake.landing_queue_url, lake.region, QueueCursor.parse(context.cursor))
    else:
        new, cursor = _listed_new_objects(context, the_lake, context.cursor)

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
    return SensorResult(run_requests=run_requests, asset_events=observations, cursor=cursor)
