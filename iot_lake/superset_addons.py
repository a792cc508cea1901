"""Code that runs inside Superset's process (.venv-superset), loaded by the superset_config.py that
`iot-lake dashboards up` writes (docs/dashboards.md, "What a load costs"): it imports only the standard
library, Flask-Caching and Superset, never the platform.

- `WarehouseCache`: chart data cached on disk under a key that includes the warehouse's version, so a
  dbt run that rewrites the warehouse makes every cached answer unreachable: a dashboard is never
  older than the warehouse, and repeated views skip Superset's query building and the query.
- `AccessOnlyEventLogger`: Superset's action log without its metadata-database writes.
- `tune_sqlite`: SQLite's write-ahead log for the local metadata database.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from flask_caching.backends.filesystemcache import FileSystemCache
from superset.utils.log import AbstractEventLogger

NAME = "iot_lake_superset_addons"  # the module's name in sys.modules: Flask-Caching imports the cache by it


def warehouse_version(path: str) -> str:
    """The warehouse file's identity and last write, and its write-ahead log's if it has one: DuckDB
    writes either on every change (a checkpoint rewrites the file, an uncheckpointed change the .wal)."""
    parts = []
    for name in (path, path + ".wal"):
        try:
            st = os.stat(name)
        except FileNotFoundError:
            parts.append("-")
            continue
        parts.append(f"{st.st_ino}.{st.st_size}.{st.st_mtime_ns}")
    return "/".join(parts)


class WarehouseCache(FileSystemCache):
    """Flask-Caching's file cache, every key prefixed with the warehouse's version (a stat per lookup:
    microseconds). Entries of an older version are never read again; the file cache's threshold
    prunes them."""

    def __init__(self, *args: Any, warehouse_path: str, **kwargs: Any):
        self.warehouse_path = warehouse_path
        super().__init__(*args, **kwargs)

    def _get_filename(self, key: str) -> str:
        # Every entry's file is named by its key: versioning the name versions get, set, add, has
        # and delete at once. The cache's own entry count stays put.
        if key != self._fs_count_file:
            key = f"{warehouse_version(self.warehouse_path)}:{key}"
        return super()._get_filename(key)


class AccessOnlyEventLogger(AbstractEventLogger):
    """Superset's default event logger inserts a row into its metadata database for each of ~6 events
    a chart's request logs, and every dashboard view posts more: on SQLite that was most of a chart
    request's time (each insert commits, and the commit expires the request's loaded objects, which
    are then read again). The requests themselves stay in gunicorn's access log."""

    def log_with_context(self, *args: Any, **kwargs: Any) -> None:  # noqa: ARG002
        return None

    def log(self, *args: Any, **kwargs: Any) -> None:  # noqa: ARG002
        return None


def tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    """On each new SQLite connection: the write-ahead log, so readers never wait for a writer, and
    commits without an fsync each (a crash may lose the last commits, never corrupt the database)."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
