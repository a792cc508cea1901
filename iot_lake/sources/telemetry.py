"""Landing telemetry: what Firehose delivered in one arrival hour, object by object.

The inventory reads every object of an hour, counts its records, and records each object it
cannot read with the reason (truncated gzip, not gzip, empty) and how far it got. It writes the
result as a manifest beside the landing data, so the curated job processes exactly the objects
and the record count that were inventoried.
"""

from __future__ import annotations

import gzip
import json
import zlib
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


def _count_lines(inv: ObjectInventory, data: bytes) -> None:
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            ok = isinstance(json.loads(line), dict)
        except ValueError:
            ok = False
        if ok:
            inv.records += 1
        else:
            inv.malformed_lines += 1


def inventory_object(lake: Lake, obj: ObjectInfo) -> ObjectInventory:
    inv = ObjectInventory(key=obj.key, bytes=obj.size, mtime=obj.mtime)
    reason = quick_check(lake, obj)
    if reason:
        inv.readable, inv.error = False, reason
        return inv
    # Decompress incrementally so a truncated stream still yields the lines before the cut.
    decomp = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    pending = b""
    try:
        with lake.open(obj.key) as f:
            while chunk := f.read(1 << 20):
                pending += decomp.decompress(chunk)
                complete, _, pending = pending.rpartition(b"\n")
                _count_lines(inv, complete)
                while decomp.eof and decomp.unused_data:  # concatenated gzip members
                    rest = decomp.unused_data
                    decomp = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                    pending += decomp.decompress(rest)
        if not decomp.eof:
            raise EOFError("gzip stream ends before its end marker (truncated object)")
        _count_lines(inv, pending)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        # The partial last line is not counted: it is part of what could not be read.
        inv.readable, inv.error = False, f"{type(exc).__name__}: {exc}"
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
