"""The landing sensor's prod trigger: S3 Event Notifications on ``landing/`` delivered to an SQS queue.

Nothing is listed: each tick receives a bounded batch of messages and turns their S3 event records
into ``ObjectInfo``. At least once: the batch's receipt handles go into the tick's cursor, and the
next tick deletes them before it receives, because Dagster stores a tick's cursor only together
with the runs it requested. A tick that failed deletes nothing; its messages reappear after the
visibility timeout and are requested again, under the same run keys when the same objects come
together (otherwise one more inventory of the hour, which is idempotent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import unquote_plus

from iot_lake.aws import client
from iot_lake.lake import TELEMETRY_PREFIX, WEATHER_PREFIX, Lake, ObjectInfo, is_hidden

# 10 is SQS's most per receive; 5 receives bound a tick at 50 objects (Firehose lands a few a minute).
MAX_RECEIVES = 5
# Long-poll the first receive only, so a quiet queue costs a tick one second, not the 20 s maximum.
WAIT_SECONDS = 1
# Time for the next tick to delete a received message before SQS hands it out again.
VISIBILITY_SECONDS = 120


@dataclass
class QueueCursor:
    receipts: list[str] = field(default_factory=list)  # received by the last tick, deleted by the next

    @classmethod
    def parse(cls, raw: str | None) -> QueueCursor:
        # A cursor of the listing mode (switching to the queue) has no receipts.
        return cls(receipts=list(json.loads(raw).get("receipts", []))) if raw else cls()

    def serialize(self) -> str:
        return json.dumps({"receipts": self.receipts})


def receive_objects(lake: Lake, queue_url: str, region: str | None, cursor: QueueCursor) -> tuple[list, str]:
    """The landing objects the queue announces, and the cursor holding the receipts to delete next tick."""
    sqs = client("sqs", region_name=region)
    _delete(sqs, queue_url, cursor.receipts)
    messages = _receive(sqs, queue_url)
    objects: dict[str, ObjectInfo] = {}  # S3 may deliver one event twice
    for message in messages:
        for obj in objects_of_event(lake, message["Body"]):
            objects.setdefault(obj.key, obj)
    return list(objects.values()), QueueCursor([m["ReceiptHandle"] for m in messages]).serialize()


def _receive(sqs, queue_url: str) -> list[dict]:
    messages: list[dict] = []
    for attempt in range(MAX_RECEIVES):
        batch = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=WAIT_SECONDS if attempt == 0 else 0,
            VisibilityTimeout=VISIBILITY_SECONDS,
        ).get("Messages", [])
        messages += batch
        if len(batch) < 10:
            break
    return messages


def _delete(sqs, queue_url: str, receipts: list[str]) -> None:
    # A receipt that expired meanwhile fails to delete: its message comes again, which at least once allows.
    for start in range(0, len(receipts), 10):
        entries = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(receipts[start : start + 10])]
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)


def objects_of_event(lake: Lake, body: str) -> list[ObjectInfo]:
    """The telemetry and weather objects an S3 event notification names (directly or wrapped by SNS)."""
    try:
        doc = json.loads(body)
        if "Records" not in doc and isinstance(doc.get("Message"), str):
            doc = json.loads(doc["Message"])
        records = doc.get("Records", [])  # s3:TestEvent, sent when notifications are set up, has none
    except (ValueError, AttributeError):
        return []
    return [obj for record in records if (obj := _object_of_record(lake, record)) is not None]


def _object_of_record(lake: Lake, record: dict) -> ObjectInfo | None:
    if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
        return None
    s3 = record["s3"]
    # Keys in S3 events are URL-encoded, spaces as '+'.
    path = f"{s3['bucket']['name']}/{unquote_plus(s3['object']['key'])}"
    if not path.startswith(lake.base + "/"):
        return None  # another lake in the same bucket
    key = lake.key_of(path)
    if is_hidden(key) or not key.startswith((TELEMETRY_PREFIX + "/", WEATHER_PREFIX + "/")):
        return None
    mtime = datetime.fromisoformat(record["eventTime"].replace("Z", "+00:00")).timestamp()
    return ObjectInfo(key=key, size=int(s3["object"].get("size", 0)), mtime=mtime)
