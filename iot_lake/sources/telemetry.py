"""Landing telemetry: what Firehose delivered in one arrival hour, object by object.

The inventory reads every object of an hour, counts its records, and records each object it
cannot read with the reason (truncated gzip, not gzip, empty) and how far it got. It writes the
result as a manifest beside the landing data, so the curated job processes exactly the objects
and the record count that were inventoried.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
        return json.dumps(
            {
                "hour": self.hour,
                "prefix": self.prefix,
                "totals": self.totals,
                "objects": [asdict(o) for o in self.objects],
            },
            indent=1,
        )


def inventory_key(hour: datetime) -> str:
    return f"{INVENTORY_PREFIX}/telemetry/{hour:%Y/%m/%d/%H}.json"


def inventoried_keys(lake: Lake, hour: datetime) -> list[str]:
    """The object keys the landing inventory of ``hour`` lists: what that hour's runs process."""
    return [o["key"] for o in json.loads(lake.read_bytes(inventory_key(hour)))["objects"]]


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
    """The object's bytes end or break before its gzip stream does, or it exceeds a limit."""


# Memory limits: whatever an object holds, reading it keeps at most about a chunk of compressed
# bytes, OUTPUT_CHUNK of decompressed ones and one line of MAX_LINE_BYTES in memory, and stops
# after MAX_OBJECT_BYTES decompressed (a gzip bomb expands a megabyte into gigabytes).
# Firehose delivers at most 128 MiB per object and IoT Core messages are at most 128 KiB, so
# neither limit ever cuts a real delivery.
READ_CHUNK = 1 << 20
OUTPUT_CHUNK = 8 << 20
MAX_LINE_BYTES = 256 << 10
MAX_OBJECT_BYTES = 2 << 30
# A line over MAX_LINE_BYTES is not kept: in its place the block holds its first RAW_LINE_KEEP
# bytes, a NUL byte and this marker with its length. A NUL byte is never valid in a JSON text, so
# the replacement still counts as a malformed line, and the parsers recognise it
# (long_line_length) to quarantine it as ``line_too_long``.
RAW_LINE_KEEP = 1024
LONG_LINE_MARKER = b"\x00iot-lake:line_too_long:"


def long_line_length(line: bytes) -> int | None:
    """The length of the over-long line ``line`` stands for (see LONG_LINE_MARKER), or None."""
    head, marker, length = line.rpartition(LONG_LINE_MARKER)
    if not marker or len(head) > RAW_LINE_KEEP or not length.isdigit():
        return None
    return int(length)


def _long_line(head: bytes, length: int) -> bytes:
    return head[:RAW_LINE_KEEP] + LONG_LINE_MARKER + str(length).encode()


def iter_blocks(
    lake: Lake, key: str, max_line_bytes: int | None = None, max_object_bytes: int | None = None
) -> Iterator[bytes]:
    """The complete NDJSON lines of a gzip object in blocks (lines joined by newlines), streamed;
    raises UnreadableObject where the object breaks or passes ``max_object_bytes`` decompressed.

    Decompresses incrementally, so a truncated object still yields every line before the cut
    (the partial last line is not yielded: it is part of what could not be read). A line longer
    than ``max_line_bytes`` is replaced by its head and length (LONG_LINE_MARKER). Any error of
    decoding becomes UnreadableObject: nothing an object holds can escape as another exception.
    """
    max_line_bytes = max_line_bytes or MAX_LINE_BYTES  # read at call time: tests lower the limits
    reader = _Decompressor(max_object_bytes or MAX_OBJECT_BYTES)
    pending = b""  # the start of a line whose newline has not come yet
    long_head, long_length = None, 0  # the head and length so far of an over-long line being skipped
    # Reading the store is outside the try: an I/O error is the storage's, not the object's, and
    # fails the step for the retry policy instead of condemning the object.
    with lake.open(key) as f:
        while chunk := f.read(READ_CHUNK):
            try:
                for out in reader.feed(chunk):
                    if long_head is not None:  # skipping the rest of an over-long line
                        cut = out.find(b"\n")
                        skipped = out if cut < 0 else out[:cut]
                        long_length += len(skipped)
                        long_head += skipped[: RAW_LINE_KEEP - len(long_head)]
                        if cut < 0:
                            continue
                        yield _long_line(long_head, long_length)  # a block of its own: never capped again
                        long_head, out = None, out[cut + 1 :]
                    complete, _, pending = (pending + out).rpartition(b"\n")
                    if complete:
                        yield cap_lines(complete, max_line_bytes)
                    if len(pending) > max_line_bytes:
                        long_head, long_length, pending = pending[:RAW_LINE_KEEP], len(pending), b""
            except UnreadableObject:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever the bytes do, it is this object's verdict
                raise UnreadableObject(f"{type(exc).__name__}: {exc}"[:500]) from exc
    if not reader.done:
        raise UnreadableObject("EOFError: gzip stream ends before its end marker (truncated object)")
    if long_head is not None:
        yield _long_line(long_head, long_length)
    elif pending.strip():
        yield cap_lines(pending, max_line_bytes)


def cap_lines(block: bytes, max_line_bytes: int) -> bytes:
    """``block`` with each line over ``max_line_bytes`` replaced by its head and length."""
    if len(block) <= max_line_bytes:
        return block
    ends = np.flatnonzero(np.frombuffer(block, np.uint8) == ord("\n"))
    lengths = np.diff(ends, prepend=-1, append=len(block)) - 1
    if lengths.max() <= max_line_bytes:  # the usual case, found without a Python object per line
        return block
    return b"\n".join(
        line if len(line) <= max_line_bytes else _long_line(line, len(line)) for line in block.split(b"\n")
    )


class _Decompressor:
    """Gzip members one after the other (Firehose concatenates them), in bounded output chunks."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.total = max_bytes, 0
        self.decomp = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)

    @property
    def done(self) -> bool:
        return self.decomp.eof

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            out = self.decomp.decompress(data, OUTPUT_CHUNK)
            self.total += len(out)
            if self.total > self.max_bytes:
                raise UnreadableObject(f"decompressed size exceeds the limit of {self.max_bytes:,} bytes")
            if out:
                yield out
            if self.decomp.eof:  # a member ended: the rest is the next member (or trailing bytes)
                data = self.decomp.unused_data
                if data:
                    self.decomp = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            else:
                data = self.decomp.unconsumed_tail


def iter_lines(lake: Lake, key: str) -> Iterator[bytes]:
    """The complete, non-blank NDJSON lines of a gzip object, one by one (see iter_blocks)."""
    for block in iter_blocks(lake, key):
        yield from (line for line in block.split(b"\n") if line.strip())


def block_lines(block: bytes) -> pa.LargeBinaryArray:
    """The non-blank lines of a block as one Arrow array: what iter_lines yields, without a Python
    object per line (numpy finds the newlines; the lines' bytes are copied once, without them)."""
    buf = np.frombuffer(block, np.uint8)
    newline = buf == ord("\n")
    ends = np.flatnonzero(newline)
    offsets = np.empty(len(ends) + 2, np.int64)
    offsets[0] = 0
    offsets[1:-1] = ends - np.arange(len(ends))
    offsets[-1] = len(buf) - len(ends)
    lines = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(buf[~newline])]
    )
    return lines.filter(pc.invert(pc.match_substring_regex(lines, _BLANK)))


_BLANK = r"^[ \t\r\x0b\x0c]*$"  # what bytes.strip() removes, \n aside
# The line every device firmware sends (docs/landing-contract.md): the fields in this order, no
# whitespace, printable-ASCII strings without escapes, and JSON number grammar, with the parts a
# fast path needs as named groups. A line that matches is certainly one JSON object with these
# fields and types; anything else (other order, escapes, NaN, a broken line) is read one line at
# a time by the general path.
_STR = r"[ !#-\[\]-~]"
_ISO = (
    r"[12][0-9]{3}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]{3}|\.[0-9]{6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
_NUMBER = r"-?(?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,20})?(?:[eE][+-]?[0-9]{1,2})?"  # finite as a double, always
TYPICAL_LINE = (
    rf'^\{{"device_id":"(?P<device_id>{_STR}+)","site_id":"{_STR}*","metric":"(?P<metric>{_STR}+)",'
    rf'"value":(?P<value>{_NUMBER}),"unit":"(?P<unit>{_STR}+)",'
    rf'"ts":(?:(?P<ts_ms>0|[1-9][0-9]{{0,13}})|"(?P<ts_iso>{_ISO})"),'
    rf'"message_id":"(?P<message_id>{_STR}+)","ingested_at":"(?P<ingested_at>{_ISO})"\}}$'
)


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except Exception:  # noqa: BLE001 - any line the parser cannot read is malformed (deep nesting: RecursionError)
        return False


def inventory_object(lake: Lake, obj: ObjectInfo) -> ObjectInventory:
    inv = ObjectInventory(key=obj.key, bytes=obj.size, mtime=obj.mtime)
    reason = quick_check(lake, obj)
    if reason:
        inv.readable, inv.error = False, reason
        return inv
    try:
        for block in iter_blocks(lake, obj.key):
            lines = block_lines(block)
            # Typical lines are JSON objects by construction; only the others need a parser.
            typical = pc.match_substring_regex(lines, TYPICAL_LINE)
            others = lines.filter(pc.invert(typical)).to_pylist()
            records = len(lines) - len(others) + sum(_is_record(line) for line in others)
            inv.records += records
            inv.malformed_lines += len(lines) - records
    except UnreadableObject as exc:
        inv.readable, inv.error = False, str(exc)
    except OSError:
        raise  # the storage failed, not the object: the retry policy reads it again
    except Exception as exc:  # noqa: BLE001 - a bug here must not fail the hour: the object says why
        inv.readable, inv.error = False, f"inventory error: {type(exc).__name__}: {exc}"[:500]
    return inv


def inventory_hour(lake: Lake, hour: datetime) -> HourInventory:
    prefix = telemetry_hour_prefix(hour)
    inv = HourInventory(hour=hour.isoformat(), prefix=prefix)
    # zlib and Arrow's regex kernels release the GIL (and S3 reads wait on the network), so
    # threads inventory objects side by side.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        inv.objects.extend(pool.map(lambda obj: inventory_object(lake, obj), lake.list(prefix)))
    return inv


def land_inventory(lake: Lake, hour: datetime) -> HourInventory:
    inv = inventory_hour(lake, hour)
    lake.write_text(inventory_key(hour), inv.to_json())
    return inv
