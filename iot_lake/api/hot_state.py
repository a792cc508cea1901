"""Where the serving API's ``/devices/{id}/state`` reads the latest reading per series from.

- Local (and the twin of everything): the Delta table curated/device_state, read once per version
  (``readings.latest_state``).
- Production (the Lambda behind API Gateway): a DynamoDB table, key (device_id, metric), one item per
  series, read with one Query per request: a Lambda cannot keep a Delta table open and warm between
  requests the way the long-running server does.

The Dagster side keeps DynamoDB current: after the curated job's state step, ``push_state`` writes the
rows of curated/device_state that the step changed (``changed_state_rows``: its ``updated_at`` is only
set when a row changes). Each write is conditional, replacing an item only with a newer reading by
(event_ts, message_id), the order of the Delta MERGE, so late data, re-runs and two pushes racing never
move the state back.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from iot_lake import aws
from iot_lake.api import readings
from iot_lake.curated.state import DEVICE_STATE
from iot_lake.lake import Lake

STATE_TABLE_VAR = "IOT_LAKE_STATE_TABLE"
ITEM_FIELDS = ("device_id", "metric", "site_id", "event_ts", "message_id", "value", "unit", "updated_at")
# Times are stored as fixed-width UTC strings, so DynamoDB's string comparison is time order.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# Replace only an absent item or an older reading: the MERGE's NEWER, in DynamoDB's words.
NEWER = "attribute_not_exists(device_id) OR event_ts < :ts OR (event_ts = :ts AND message_id < :mid)"


class HotState(Protocol):
    def latest(self, device_id: str) -> list[dict]:
        """The device's state rows by metric: metric, value, unit, event_ts, updated_at (and site_id)."""


class DeltaHotState:
    """curated/device_state through the API's kept-open Delta tables."""

    def __init__(self, tables: readings.DeltaTables):
        self.tables = tables

    def latest(self, device_id: str) -> list[dict]:
        return readings.latest_state(self.tables, device_id)


class DynamoHotState:
    """The DynamoDB table the Dagster side pushes curated/device_state to."""

    def __init__(self, table_name: str, client=None, region: str | None = None):
        self.table_name = table_name
        self.client = client or aws.client("dynamodb", region_name=region)

    def latest(self, device_id: str) -> list[dict]:
        rows, start = [], None
        while True:
            page = self.client.query(
                TableName=self.table_name,
                KeyConditionExpression="device_id = :d",
                ExpressionAttributeValues={":d": {"S": device_id}},
                ConsistentRead=False,  # a push a second old may be missed; the curated job runs hourly
                **({"ExclusiveStartKey": start} if start else {}),
            )
            rows += [from_item(item) for item in page["Items"]]
            start = page.get("LastEvaluatedKey")
            if not start:
                return sorted(rows, key=lambda r: r["metric"])


def to_item(row: dict) -> dict:
    item = {
        "device_id": {"S": row["device_id"]},
        "metric": {"S": row["metric"]},
        "event_ts": {"S": _time(row["event_ts"])},
        "message_id": {"S": str(row["message_id"])},
        "value": {"N": str(Decimal(repr(float(row["value"]))))},
        "updated_at": {"S": _time(row["updated_at"])},
    }
    for name in ("site_id", "unit"):
        if row.get(name) is not None:  # DynamoDB has no null string: an absent attribute is None
            item[name] = {"S": str(row[name])}
    return item


def from_item(item: dict) -> dict:
    return {
        "device_id": item["device_id"]["S"],
        "metric": item["metric"]["S"],
        "site_id": item.get("site_id", {}).get("S"),
        "event_ts": _parse(item["event_ts"]["S"]),
        "message_id": item["message_id"]["S"],
        "value": float(item["value"]["N"]),
        "unit": item.get("unit", {}).get("S"),
        "updated_at": _parse(item["updated_at"]["S"]),
    }


def push_state(rows: Iterable[dict], table_name: str, client=None, region: str | None = None) -> dict[str, int]:
    """Write each state row unless DynamoDB already holds a reading at least as new; counts of
    ``written`` and ``kept`` (the stored reading was newer or the same)."""
    client = client or aws.client("dynamodb", region_name=region)
    counts = {"written": 0, "kept": 0}
    for row in rows:
        item = to_item(row)
        try:
            client.put_item(
                TableName=table_name,
                Item=item,
                ConditionExpression=NEWER,
                ExpressionAttributeValues={":ts": item["event_ts"], ":mid": item["message_id"]},
            )
            counts["written"] += 1
        except client.exceptions.ConditionalCheckFailedException:
            counts["kept"] += 1
    return counts


def changed_state_rows(tables: readings.DeltaTables, since: datetime) -> list[dict]:
    """The rows of curated/device_state the state step changed at or after ``since`` (the MERGE sets
    ``updated_at`` only on a change, so a re-run pushes nothing)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    dataset = tables.dataset(DEVICE_STATE)
    if dataset is None:
        return []
    return dataset.to_table(filter=ds.field("updated_at") >= pa.scalar(since)).to_pylist()


def sync_state_table(
    lake: Lake, delta_options: dict | None, table_name: str, since: datetime, region: str | None = None
) -> dict[str, int]:
    """Push the hot-state rows changed since ``since`` to DynamoDB (the control plane calls this after
    the curated job's state step in production)."""
    tables = readings.DeltaTables(lake, delta_options)
    return push_state(changed_state_rows(tables, since), table_name, region=region)


def _time(value: datetime) -> str:
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime(TIME_FORMAT)


def _parse(text: str) -> datetime:
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)
