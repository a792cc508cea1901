"""Announcements: how a writer of old landing hours tells the landing sensor what it wrote.

The sensor lists only the hours (and weather days) that can still receive objects, so an object
written into an older hour (an import, a simulator backfill) is invisible to it. Such a writer
puts one small JSON object under ``landing/_announcements/YYYY/MM/DD/HH/`` (the hour it writes
the announcement, which the sensor does list) naming the keys it wrote, after writing them.
Announcements are side files: ``Lake.list`` hides them from every other reader.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from iot_lake.lake import ANNOUNCEMENT_PREFIX, Lake, checked_key


def announcement_key(writer: str, at: datetime) -> str:
    return f"{ANNOUNCEMENT_PREFIX}/{at:%Y/%m/%d/%H}/{writer}-{at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}.json"


def announce(lake: Lake, writer: str, keys: Iterable[str], now: datetime | None = None) -> str | None:
    """Write an announcement of ``keys`` (already written), or nothing when there are none; its key."""
    keys = sorted(set(keys))
    if not keys:
        return None
    key = announcement_key(writer, now or datetime.now(UTC))
    lake.write_text(key, json.dumps({"writer": writer, "keys": keys}))
    return key


def announced_keys(lake: Lake, key: str) -> list[str]:
    """The keys an announcement names (ValueError when it is not one): keys that could leave the lake
    root are dropped, as every key read from data is."""
    doc = json.loads(lake.read_bytes(key))
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        raise ValueError("not an announcement: no list of keys")
    return [k for k in keys if _within_the_lake(k)]


def _within_the_lake(key) -> bool:
    try:
        checked_key(key)
    except ValueError:
        return False
    return True
