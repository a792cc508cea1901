"""The local event log (dagster.yaml): Dagster's SQLite one, with each file's SQLAlchemy engine reused.

Dagster's ``SqliteEventLogStorage`` creates a new SQLAlchemy engine for every connection, that is for
every event it stores (two or three for an asset or check event: the run's file and ``index.db``).
An engine owns SQLAlchemy's cache of compiled statements, so every insert and query was compiled
again, and the engine built again, each time: about half of the 20 ms a range run spent per event
(profiled on the main job's hourly warehouse run: 23,306 statements compiled for 5,264 events), and
a range run stores an event per partition and asset (the main job: thousands).

Here each file keeps its engine for the next connection, in a small least-recently-used set. The
engines keep ``NullPool`` as upstream, so a connection is still opened and closed per event and no
connection outlives it: nothing is held across a fork, another process or the UI sees the same
files as before, and ``lib/sqlite_keepalive.py`` still applies. Only the engine object and its
compiled statements are kept. The rows of a check planned over a range of partitions are written
as upstream writes them, without serializing the event once per partition
(``_store_asset_check_evaluation_planned``). tests/test_sqlite_event_log.py compares what is stored
with Dagster's own storage. Production uses PostgreSQL (deploy/dagster.yaml), whose storage keeps
one engine already.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes import serialize_value
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

# A run writes its own file and index.db; the UI reads a few runs at a time. More files than this
# each cost what they cost before (an engine, statements compiled once more).
ENGINES_KEPT = 16


def storage_config(base_dir: str) -> dict[str, Any]:
    """dagster.yaml's storage entries with this event log: the files where ``storage: sqlite:
    base_dir`` keeps them (runs in history/, event logs in history/runs/, schedules in schedules/)."""
    return {
        "run_storage": {
            "module": "dagster._core.storage.runs",
            "class": "SqliteRunStorage",
            "config": {"base_dir": f"{base_dir}/history/"},
        },
        "event_log_storage": {
            "module": "lib.sqlite_event_log",
            "class": "EngineKeepingSqliteEventLogStorage",
            "config": {"base_dir": f"{base_dir}/history/runs/"},
        },
        "schedule_storage": {
            "module": "dagster._core.storage.schedules",
            "class": "SqliteScheduleStorage",
            "config": {"base_dir": f"{base_dir}/schedules"},
        },
    }


class EngineKeepingSqliteEventLogStorage(SqliteEventLogStorage):
    """SqliteEventLogStorage that reuses one engine per file (its compiled statements with it)."""

    def __init__(self, base_dir: str, inst_data=None):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        # Its own lock: has_table is called while a connection (and the parent's _db_lock) is held.
        self._engines_lock = threading.Lock()
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        # The parent builds a SqliteEventLogStorage by name; the same settings, this class.
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        with self._engines_lock:
            engine = self._engines.pop(shard, None)
            if engine is None:
                engine = create_engine(
                    self.conn_string_for_shard(shard),
                    poolclass=NullPool,
                    connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
                )
            self._engines[shard] = engine  # now the most recently used
            while len(self._engines) > ENGINES_KEPT:
                self._engines.popitem(last=False)[1].dispose()
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # As the parent's, but for the engine: under the same lock, the file created on first use.
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                with conn.begin():
                    yield conn

    def _store_asset_check_evaluation_planned(self, event, event_id) -> None:
        # The parent's rows, made faster: it serializes the event again for each partition's row (a
        # range run's check planned over 360 hours: its 360-key event 360 times) and inserts them as
        # one VALUES list of 360 rows, compiled anew each time; here the event is serialized once
        # and the rows go in as one executemany of a statement compiled once. The main job's hourly
        # warehouse run plans 68 checks over 360 hours: 10 s before it began.
        planned = event.dagster_event.event_specific_data
        keys = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        row = {
            "asset_key": planned.asset_key.to_string(),
            "check_name": planned.check_name,
            "run_id": event.run_id,
            "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
            "evaluation_event": serialize_value(event),
            "evaluation_event_timestamp": self._event_insert_timestamp(event),
            "evaluation_event_storage_id": event_id,
        }
        with self.index_connection() as conn:
            conn.execute(AssetCheckExecutionsTable.insert(), [{**row, "partition": key} for key in keys])

    def has_table(self, table_name: str) -> bool:
        # Asked of index.db for every asset event with tags (a partition's): upstream, one more engine each.
        engine = self._engine(INDEX_SHARD_NAME)
        with engine.connect() as conn:
            return bool(engine.dialect.has_table(conn, table_name))

    def dispose(self) -> None:
        super().dispose()
        with self._engines_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()
