"""Keeps the Dagster instance's SQLite files open while a process stores many events (the main job).

Dagster's SQLite storage opens and closes a connection for every event it stores: one to the run's
own file, one more to ``index.db`` for an asset or check event. The files are in WAL mode, and the
close of the last connection to a WAL file checkpoints it, syncs it and deletes its ``-wal`` and
``-shm`` files, which the next event creates again. A range run reports a materialization per
partition and asset (the main job's runs store about 5,000 events), so each paid that round trip.

While ``kept_open(root)`` is active, every SQLite file under ``root`` that SQLAlchemy connects to
gets one more connection of its own, idle: the others' closes are no longer the last, so the WAL is
checkpointed as it fills (SQLite's automatic checkpoint, on commit) and once more when the block
ends. Nothing else changes: same journal mode and synchronous setting, and an idle connection holds
no lock, so the UI and the daemon read and write as before. Measured on 300 events stored by a
Dagster instance: 171 file deletions instead of 1,371, 1,619 syncs instead of 3,405, and 18-20
instead of 32-43 ms an event (load 4-5 on 2 cores).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.engine import Engine


class _Keepers:
    def __init__(self, root: str) -> None:
        self.root = os.path.join(os.path.realpath(root), "")
        self.lock = threading.Lock()
        self.open: dict[str, sqlite3.Connection] = {}
        self.in_wal: set[str] = set()

    def on_connect(self, dbapi_connection, _record) -> None:
        if not isinstance(dbapi_connection, sqlite3.Connection):
            return
        try:
            path = dbapi_connection.execute("PRAGMA database_list").fetchone()[2]
            if not path or not os.path.realpath(path).startswith(self.root):
                return
            with self.lock:
                self._keep(path)
        except sqlite3.Error:
            pass  # only an optimisation: the event is stored either way

    def _keep(self, path: str) -> None:
        if path in self.in_wal:
            return
        keeper = self.open.get(path)
        if keeper is None:
            keeper = self.open[path] = sqlite3.connect(path, check_same_thread=False)
        # A read maps the WAL index, which the connection then holds until it closes. A file Dagster
        # is creating is switched to WAL after its first connection, so it is read again on the next.
        keeper.execute("SELECT count(*) FROM sqlite_master").fetchall()
        if keeper.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            self.in_wal.add(path)

    def close(self) -> None:
        with self.lock:
            for keeper in self.open.values():
                keeper.close()
            self.open.clear()


@contextmanager
def kept_open(root: str | os.PathLike) -> Iterator[None]:
    """Keep each SQLite file under ``root`` (the instance's storage) open until the block ends."""
    keepers = _Keepers(os.fspath(root))
    event.listen(Engine, "connect", keepers.on_connect)
    try:
        yield
    finally:
        event.remove(Engine, "connect", keepers.on_connect)
        keepers.close()
