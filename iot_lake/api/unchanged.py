"""What the API reads from the case store per request, kept while the store has not changed.

Every keyed request verified its key (a SELECT) and the state route read the device's active cases
(another): under load those two were most of the state route's time. On SQLite, ``PRAGMA
data_version`` on a connection of its own tells in a few microseconds whether any other connection,
of this process or another (the CLI, the detector, an operator's action here), committed since the
last look; while it has not, an answer read before is still the store's answer. So a revoked key is
refused and a new case is listed by the very next request, as without the cache. Other databases
have no such counter: there every request reads.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Hashable
from typing import Any

import sqlalchemy as sa

MAX_VALUES = 10_000  # per store version: keys and devices of a fleet, not an unbounded set of strings


class Unchanged:
    def __init__(self, url: str):
        self._connection = _version_connection(url)
        self._lock = threading.Lock()
        self._version: int | None = None
        self._values: dict[Hashable, Any] = {}

    def look(self) -> int | None:
        """The store's version now (values kept under an older one are dropped); None on other databases.
        A request that reads several values looks once and passes the version to each ``get``."""
        if self._connection is None:
            return None
        with self._lock:
            version = self._connection.execute("PRAGMA data_version").fetchone()[0]
            if version != self._version:
                self._version, self._values = version, {}
            return version

    def get(self, key: Hashable, read: Callable[[], Any], version: int | None = None) -> Any:
        """``read()``, or what it returned before if the store has not changed since ``version`` (what
        ``look()`` returned at the start of the request; looked up now when not given)."""
        if self._connection is None:
            return read()
        if version is None:
            version = self.look()
        with self._lock:
            if self._version == version and key in self._values:
                return self._values[key]
        # Read after the version was taken: the value is at least as new as the version it is kept under.
        value = read()
        with self._lock:
            if self._version == version and len(self._values) < MAX_VALUES:
                self._values[key] = value
        return value


def _version_connection(url: str) -> sqlite3.Connection | None:
    """A connection that only ever asks for the data version (it never writes: its own commits would
    not count); None when the store is not an SQLite file."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return sqlite3.connect(parsed.database, check_same_thread=False, isolation_level=None)
