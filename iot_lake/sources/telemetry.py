"""Landing telemetry: what Firehose delivered in one arrival hour, object by object.

The inventory reads every object of an hour, counts its records, and records each object it
cannot read with the reason (truncated gzip, not gzip, empty) and how far it got. It writes the
result as a manifest beside the landing data, so the curated job processes exactly the objects
and the record count that were inventoried.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime

from iot_lake.lake import INVENTORY_PREFIX, Lake, ObjectInfo, telemetry_hour_prefix

GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class ObjectInventory:
    key: str
    bytes: int
    mtime: float
    records: int = 0  # lines that parse as JSON objects
    malformed_lines: int = 0  # lines that do not (curated quarantines them)
    readable: bool = True
    error: str | None = None  # why the object could not be read to its end

    @property
    def lines(self) -> int:
        return self.records + self.malformed_lines


@dataclass
class HourInventory:
    hour: str
    prefix: str
    objects: list[ObjectInventory] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, int]:
        return {
            "objects": len(self.objects),
            "bytes": sum(o.bytes for o in self.objects),
            "records": sum(o.records for o in self.objects),
            "malformed_lines": sum(o.malformed_lines for o in self.objects),
            "unreadable_objects": sum(not o.readable for o in self.objects),
        }

    @property
    def unreadable(self) -> list[ObjectInventory]:
        return [o for o in self.objects if not o.readable]

    def to_json(self) -> str:
        return json.dumps({"hour": self.hour, "prefix": self.prefix, "totals": self.totals,
                           "objects": [asdict(o) for o in self.objects]}, indent=1)


def inventory_key(hour: datetime) -> str:
    return f"{INVENTORY_PREFIX}/telemetry/{hour:%Y/%m/%d/%H}.json"


def quick_check(lake: Lake, obj: ObjectInfo) -> str | None:
    """Cheap readability check for a sensor: the reason an object is unreadable, or None."""
    if obj.size == 0:
        return "empty object"
    if not obj.key.endswith(".gz"):
        return "not a .gz object"
    try:
        with lake.open(obj.key) as f:
            head = f.read(2)
    except OSError as exc:
        return f"cannot open: {exc}"
    if head != GZIP_MAGIC:
        return "not gzip (bad magic bytes)"
    return None


class UnreadableObject(Exception):
    """The object's bytes end or break before its gzip stream does."""


def iter_lines(lake: Lake, key: str) -> Iterator[bytes]:
    """The complete NDJSON lines of a gzip object, streamed; raises UnreadableObject where it breaks.

    Decompresses incrementally, so a truncated object still yields every line before the cut
    (the partial last line is not yielded: it is part of what could not be read).
    """
    decomp = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    pending = b""
    try:
        with lake.open(key) as f:
            while chunk := f.read(1 << 20):
                pending += decomp.decompress(chunk)
                while decomp.eof and decomp.unused_data:  # concatenated gzip members
                    rest = decomp.unused_data
                    decomp = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                    pending += decomp.decompress(rest)
                complete, _, pending = pending.rpartition(b"\n")
                if complete:
                    yield from (line for line in complete.split(b"\n") if line.strip())
        if not decomp.eof:
            raise UnreadableObject("EOFError: gzip stream ends before its end marker (truncated object)")
    except (EOFError, zlib.error, OSError) as exc:
        raise UnreadableObject(f"{type(exc).__name__}: {exc}") from exc
    if pending.strip():
        yield pending


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def inventory_object(lake: Lake, obj: ObjectInfo) -> ObjectInventory:
    inv = ObjectInventory(key=obj.key, bytes=obj.size, mtime=obj.mtime)
    reason = quick_check(lake, obj)
    if reason:
        inv.readable, inv.error = False, reason
        return inv
    try:
        for line in iter_lines(lake, obj.key):
            if _is_record(line):
                inv.records += 1
            else:
                inv.malformed_lines += 1
    except UnreadableObject as exc:
        inv.readable, inv.error = False, str(exc)
    return inv


def inventory_hour(lake: Lake, hour: datetime) -> HourInventory:
    prefix = telemetry_hour_prefix(hour)
    inv = HourInventory(hour=hour.isoformat(), prefix=prefix)
    for obj in lake.list(prefix):
        inv.objects.append(inventory_object(lake, obj))
    return inv


def land_inventory(lake: Lake, hour: datetime) -> HourInventory:
    inv = inventory_hour(lake, hour)
    lake.write_text(inventory_key(hour), inv.to_json())
    return inv
