"""The production event log (deploy/dagster.yaml): dagster-postgres's, with pool claims taken one at a time.

A step in a pool claims a slot through ``claim_concurrency_slot``: "is a slot unassigned?", then
"add me to the queue, assigned if so", then "take a free slot row". dagster-postgres runs each of
those statements on its own autocommit connection, so two steps that claim at the same moment both
see the one free slot and both take it (the ``SELECT ... FOR UPDATE SKIP LOCKED`` lock ends with its
statement, and the ``UPDATE`` that follows does not ask again whether the row is still free). For the
lake-writes pool that is two Delta writers on S3 at once, which the pool exists to prevent. Found by
tests/test_deploy.py on CI; the same autocommit window is discussed upstream in dagster-io/dagster
PR #34092 for ``assign_pending_steps``.

The fix holds a PostgreSQL advisory lock named for the pool around the whole claim, so claims of one
pool follow each other and each sees the one before it committed. Releases need no lock: a step
assigned while another frees its slot finds no free slot row and keeps waiting, as Dagster intends.
"""

from __future__ import annotations

from dagster_postgres import PostgresEventLogStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config
from sqlalchemy import text

# Advisory locks share one 64-bit key space per database: the class (first int4) keeps this one's
# keys apart from any other user of advisory locks, the pool's hash (second int4) names the pool.
_LOCK_CLASS = 0x10761A4E  # "iot-lake"


class PoolSafePostgresEventLogStorage(PostgresEventLogStorage):
    """PostgresEventLogStorage whose concurrency claims of one pool are serialized across processes."""

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        # The parent builds a PostgresEventLogStorage by name; the same settings, this class.
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )

    def claim_concurrency_slot(self, concurrency_key, run_id, step_key, priority=None):
        key = {"cls": _LOCK_CLASS, "pool": concurrency_key}
        # Its own connection: the claim's statements below open theirs (autocommit), and a session
        # lock is released when this one closes even if the claim raises.
        with self.index_connection() as lock:
            lock.execute(text("SELECT pg_advisory_lock(:cls, hashtext(:pool))"), key)
            try:
                return super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)
            finally:
                lock.execute(text("SELECT pg_advisory_unlock(:cls, hashtext(:pool))"), key)
