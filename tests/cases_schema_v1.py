"""FROZEN: the case store schema as of version 1 (before site incidents), for the migration tests. Never edit."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from iot_lake.cases.model import ACTIVE, SEVERITIES, STATUSES, utc


class UtcDateTime(sa.TypeDecorator):
    """Naive UTC in the database (as the historian stores it), aware UTC in Python."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else utc(value).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else utc(value)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


JSON = sa.JSON().with_variant(JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite autoincrements INTEGER keys only

metadata = sa.MetaData()

cases = sa.Table(
    "cases",
    metadata,
    sa.Column("case_key", sa.String(200), primary_key=True),  # device_id|metric|incident_start ISO
    sa.Column("device_id", sa.String(64), nullable=False),
    sa.Column("metric", sa.String(32), nullable=False),
    sa.Column("site_id", sa.String(32)),
    sa.Column("incident_start", UtcDateTime, nullable=False),
    sa.Column("last_seen", UtcDateTime, nullable=False),  # the latest anomalous point
    sa.Column("back_in_band_since", UtcDateTime),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("auto_resolved", sa.Boolean, nullable=False, default=False),
    sa.Column("evidence", JSON, nullable=False),
    sa.Column("opened_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("resolved_at", UtcDateTime),
    sa.Column("reopen_count", sa.Integer, nullable=False, default=0),
    sa.CheckConstraint(_in("status", STATUSES), name="case_status"),
    sa.CheckConstraint(_in("severity", SEVERITIES), name="case_severity"),
    sa.Index("cases_by_series", "device_id", "metric", "incident_start"),
    # The database, not the code path, guarantees one active case per series: two observers
    # racing to open different incidents for it cannot both commit.
    sa.Index(
        "one_active_case_per_series",
        "device_id",
        "metric",
        unique=True,
        sqlite_where=sa.text(_in("status", ACTIVE)),
        postgresql_where=sa.text(_in("status", ACTIVE)),
    ),
)

case_history = sa.Table(
    "case_history",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("case_key", sa.String(200), sa.ForeignKey("cases.case_key"), nullable=False, index=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("from_status", sa.String(16)),
    sa.Column("to_status", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("note", sa.Text),
)


def _outbox(name: str, key: str, parent: str) -> sa.Table:
    """Events waiting for, or delivered to, each sink: one row per event and sink, retried until delivered."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column(key, sa.String(200), sa.ForeignKey(f"{parent}.{key}"), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("sink", sa.String(64), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, default=0),
        sa.Column("next_attempt_at", UtcDateTime, nullable=False),
        sa.Column("delivered_at", UtcDateTime),
        sa.Column("last_error", sa.Text),
        sa.Index(f"{name}_pending", "sink", "delivered_at"),
    )


outbox = _outbox("outbox", "case_key", "cases")

# Alerts about the platform itself (a failed run, a failed data-quality check) go to the same sinks
# through an outbox of their own: an alert is not a case of a series, and tables of their own leave
# existing stores' tables as they are (create_all adds new tables, it never alters).
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("alert_key", sa.String(200), primary_key=True),  # what makes a re-raise a no-op
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("title", sa.String(300), nullable=False),
    sa.Column("payload", JSON, nullable=False),
    sa.Column("raised_at", UtcDateTime, nullable=False),
)

alert_outbox = _outbox("alert_outbox", "alert_key", "alerts")

_SCHEMA_LOCK = 7_041_990  # an arbitrary pg_advisory_xact_lock key: one process creates the tables at a time


def create_engine(url: str) -> sa.Engine:
    """An engine whose transactions serialise writers on SQLite as row locks do on PostgreSQL."""
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]  # psycopg 3, not the legacy psycopg2
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" below issues BEGIN, not pysqlite
        dbapi_connection.execute("PRAGMA foreign_keys = ON")
        dbapi_connection.execute("PRAGMA journal_mode = WAL")  # readers do not wait for the writer

    @sa.event.listens_for(engine, "begin")
    def _begin(conn):
        # IMMEDIATE takes the write lock up front: a read-then-write transaction (observe) cannot
        # interleave with another one, which deferred transactions would let happen.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def create_tables(engine: sa.Engine) -> None:
    """Create what is missing; safe to run from many processes at once."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        metadata.create_all(conn)
