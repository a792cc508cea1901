"""One lake root, local directory or ``s3://bucket[/prefix]``, with the same layout in both.

All storage goes through fsspec, so the code that lists, reads and writes landing objects is
the same on a laptop and against S3. Keys are always relative to the root, with ``/``.
"""

from __future__ import annotations

import posixpath
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from iot_lake.encryption import kms_key_id, s3fs_options

# Top-level areas; identical under ./.lake and s3://bucket.
AREAS = ("landing", "curated", "warehouse", "models", "forecasts", "cases", "quarantine")

TELEMETRY_PREFIX = "landing/telemetry"
WEATHER_PREFIX = "landing/thirdparty/weather"
HISTORIAN_PREFIX = "landing/historical"
INVENTORY_PREFIX = "landing/_inventory"
SIMULATOR_PREFIX = "landing/_simulator"
# Writers of old hours name what they wrote here; the landing sensor lists only the recent hours.
ANNOUNCEMENT_PREFIX = "landing/_announcements"
REGISTRY_PREFIX = f"{HISTORIAN_PREFIX}/device_registry"

_TELEMETRY_KEY = re.compile(r"^landing/telemetry/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/(?P<h>\d{2})/[^/]+$")
_WEATHER_KEY = re.compile(r"^landing/thirdparty/weather/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/[^/]+$")


def telemetry_hour_prefix(hour: datetime) -> str:
    return f"{TELEMETRY_PREFIX}/{hour:%Y/%m/%d/%H}"


def weather_day_prefix(day: date) -> str:
    return f"{WEATHER_PREFIX}/{day:%Y/%m/%d}"


def telemetry_hour_of_key(key: str) -> datetime | None:
    """The arrival hour (UTC) a Firehose object key belongs to, or None if it is not one."""
    m = _TELEMETRY_KEY.match(key)
    if not m:
        return None
    return datetime(int(m["y"]), int(m["m"]), int(m["d"]), int(m["h"]), tzinfo=UTC)


def weather_day_of_key(key: str) -> date | None:
    m = _WEATHER_KEY.match(key)
    if not m:
        return None
    return date(int(m["y"]), int(m["m"]), int(m["d"]))


def is_hidden(key: str) -> bool:
    """Our own side files (inventories, simulator truth, temp files) start with '_' or '.'."""
    return any(part.startswith(("_", ".")) for part in key.split("/"))


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float  # seconds since the epoch; S3 LastModified or file mtime


class Lake:
    def __init__(self, root: str, storage_options: dict[str, Any] | None = None):
        self.url = root.rstrip("/")
        options = dict(storage_options or {})
        if self.url.startswith("s3://"):
            # Other processes (Firehose, runs) write the bucket: a listing cached in this process
            # would hide their new objects from info()/open() (s3fs never refreshes a cached dir).
            options.setdefault("use_listings_cache", False)
            # Jobs on EMR, Glue and SageMaker get the lake's KMS key in their environment.
            if "s3_additional_kwargs" not in options:
                options.update(s3fs_options(kms_key_id()))
        self.fs, base = fsspec.core.url_to_fs(self.url, **options)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if self.is_local:
            base = str(base)
            self.fs.makedirs(base, exist_ok=True)
        self.base = base.rstrip("/")

    def __repr__(self) -> str:
        return f"Lake({self.url!r})"

    def ensure_layout(self) -> None:
        """Create the top-level areas on a local disk; S3 prefixes exist once written to."""
        if self.is_local:
            for area in AREAS:
                self.fs.makedirs(self.path(area), exist_ok=True)

    def path(self, key: str) -> str:
        """Filesystem path of a key (what fsspec calls take)."""
        return posixpath.join(self.base, checked_key(key)) if key else self.base

    def uri(self, key: str) -> str:
        """Full URI of a key, for engines that open it themselves (Spark, DuckDB)."""
        return posixpath.join(self.url, checked_key(key))

    def key_of(self, path: str) -> str:
        return path[len(self.base) :].lstrip("/")

    def exists(self, key: str) -> bool:
        return self.fs.exists(self.path(key))

    def read_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(self.path(key))

    def open(self, key: str, mode: str = "rb"):
        return self.fs.open(self.path(key), mode)

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write a whole object; readers never see a partial one.

        S3 PUTs are atomic already; on a local disk write a hidden temp file and rename it.
        """
        path = self.path(key)
        if not self.is_local:
            self.fs.pipe_file(path, data)
            return
        parent = posixpath.dirname(path)
        self.fs.makedirs(parent, exist_ok=True)
        tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, path)

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode("utf-8"))

    def delete(self, key: str, recursive: bool = False) -> None:
        if self.exists(key):
            self.fs.rm(self.path(key), recursive=recursive)

    def move_files(self, paths: Iterable[str], source: str, target: str) -> None:
        """Move files under ``source`` to the same relative paths under ``target``, one by one.

        Not s3fs's recursive ``mv``: on S3 that also copies the source prefix itself as a key, which
        S3 does not have, so a swap failed (NoSuchKey) after every file was written.
        """
        root, destination = self.path(source), self.path(target)
        for path in sorted(paths):
            moved = posixpath.join(destination, posixpath.relpath(path, root))
            if self.is_local:  # S3 has no directories to make (s3fs's makedirs lists the bucket's root)
                self.fs.makedirs(posixpath.dirname(moved), exist_ok=True)
            self.fs.mv(path, moved)

    def list(self, prefix: str, side_files: bool = False) -> Iterator[ObjectInfo]:
        """Every object under a prefix (recursively), hidden side files excluded.

        ``side_files`` lists a side area itself (a prefix under ``_``): only temp files are left out.
        """
        root = self.path(prefix)
        if not self.fs.exists(root):
            return
        for path, info in sorted(self.fs.find(root, detail=True).items()):
            if info.get("type") == "directory":
                continue
            key = self.key_of(path)
            if is_hidden(key.removeprefix(prefix) if side_files else key):
                continue
            yield ObjectInfo(key=key, size=int(info.get("size") or 0), mtime=_mtime(info))

    def list_between(self, prefix: str, low: tuple[str, ...], high: tuple[str, ...]) -> Iterator[ObjectInfo]:
        """The objects under ``prefix/Y/M/D[/H]`` whose date path lies within [low, high] (zero-padded parts).

        Walks the date levels and descends only into folders that can hold such a path, so the cost
        follows the folders in the range, not the history under the prefix.
        """
        for leaf in self._date_folders(prefix, (), low, high):
            yield from self.list(leaf, side_files=is_hidden(prefix))

    def _date_folders(self, prefix: str, parts: tuple[str, ...], low: tuple[str, ...], high: tuple[str, ...]):
        if len(parts) == len(low):
            yield "/".join([prefix, *parts])
            return
        depth = len(parts) + 1
        for name in self._folder_names("/".join([prefix, *parts])):
            if low[:depth] <= (*parts, name) <= high[:depth]:
                yield from self._date_folders(prefix, (*parts, name), low, high)

    def _folder_names(self, prefix: str) -> list[str]:
        try:
            entries = self.fs.ls(self.path(prefix), detail=True)
        except FileNotFoundError:
            return []
        names = (e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory")
        return sorted(n for n in names if n.isdigit())


def checked_key(key: str) -> str:
    """The key, if it stays under the lake root; ValueError otherwise. Keys come from data too
    (inventories, announcements, the champion pointer, a run's outputs): an absolute key, a URL, a
    '.' or '..' segment, a backslash or a control character could reach outside the lake."""
    if not isinstance(key, str):
        raise ValueError(f"lake key must be a string, got {type(key).__name__}")
    if key.startswith("/") or "://" in key or "\\" in key or any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise ValueError(f"lake key {key[:200]!r} is not a relative key under the lake root")
    if any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"lake key {key[:200]!r} has a '.' or '..' segment")
    return key


def _mtime(info: dict[str, Any]) -> float:
    modified = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    if isinstance(modified, datetime):
        return modified.timestamp()
    return float(modified or 0.0)


def dates_between(start: datetime, end: datetime) -> list[date]:
    """Every day from ``start``'s to ``end``'s, both included: the date partitions a time range touches."""
    return [start.date() + timedelta(days=d) for d in range((end.date() - start.date()).days + 1)]


def registry_key(day: date, table: str) -> str:
    return f"{REGISTRY_PREFIX}/{day:%Y/%m/%d}/{table}.parquet"


def latest_registry_day(lake: Lake, day: date) -> date | None:
    """The newest day on or before ``day`` whose registry snapshot has landed."""
    days = sorted(
        d
        for path in lake.fs.glob(lake.path(f"{REGISTRY_PREFIX}/*/*/*/devices.parquet"))
        if (d := date(*map(int, lake.key_of(path).split("/")[-4:-1]))) <= day
    )
    return days[-1] if days else None


def registry_day_for(lake: Lake, day: date) -> date | None:
    """The registry snapshot that describes ``day``: the newest landed on or before it, else the
    earliest landed. A historian's readings reach back before the first nightly extract landed its
    registry, and the first snapshot is the best description there is of the devices that sent them
    (a device's attributes as of then, not as they were on the day). None before any snapshot landed."""
    snapshot = latest_registry_day(lake, day)
    if snapshot is not None:
        return snapshot
    days = sorted(
        date(*map(int, lake.key_of(path).split("/")[-4:-1]))
        for path in lake.fs.glob(lake.path(f"{REGISTRY_PREFIX}/*/*/*/devices.parquet"))
    )
    return days[0] if days else None


def registry_rows(lake: Lake, day: date, table: str) -> list[dict]:
    """The rows of one table (devices, device_metrics) of the registry snapshot landed on ``day``."""
    import pyarrow.parquet as pq

    with lake.open(registry_key(day, table)) as f:
        return pq.read_table(f).to_pylist()
