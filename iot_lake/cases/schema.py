"""The case store's tables, the same on SQLite and PostgreSQL, and how to connect to either.

``create_tables`` creates what is missing and migrates an existing store to ``SCHEMA_VERSION``
(recorded in ``schema_version``). New tables need nothing more (``create_all`` adds them); a column
added to an existing table is listed in ``ADDED_COLUMNS`` under the version that added it, because
``create_all`` never alters a table that exists.

Versions: 1, cases, history, outbox and alerts (no ``schema_version`` table yet); 2, site incidents
(``site_incidents``, ``cases.site_incident_key``) and sinks' receipts (``outbox.receipt``,
``alert_outbox.receipt``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from iot_lake.cases.model import ACTIVE, OPEN, RESOLVED, SEVERITIES, STATUSES, utc

SCHEMA_VERSION = 2


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
SITE_KEY = sa.String(300)  # site id (64) | anchor start | device (64) | metric (64)

# Cases of several devices of one site close together in time (iot_lake.cases.store). Before cases
# in the metadata: cases.site_incident_key refers to it.
site_incidents = sa.Table(
    "site_incidents",
    metadata,
    sa.Column("site_incident_key", SITE_KEY, primary_key=True),
    sa.Column("site_id", sa.String(64), nullable=False),
    # No foreign key to cases: the two tables would refer to each other.
    sa.Column("anchor_case_key", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("first_start", UtcDateTime, nullable=False),
    sa.Column("last_start", UtcDateTime, nullable=False),
    sa.Column("opened_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("resolved_at", UtcDateTime),
    sa.CheckConstraint(_in("status", (OPEN, RESOLVED)), name="site_incident_status"),
    sa.Index("site_incidents_by_site", "site_id", "status", "last_start"),
)

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
    sa.Column("site_incident_key", SITE_KEY, sa.ForeignKey("site_incidents.site_incident_key")),  # version 2
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
        # What the sink answered that later events of the stream refer to (an incident's ARN). Version 2.
        sa.Column("receipt", sa.String(2048)),
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

schema_version = sa.Table("schema_version", metadata, sa.Column("version", sa.Integer, nullable=False))

# Columns added to tables that existing stores already have, by the version that added them.
ADDED_COLUMNS = {2: [(cases, "site_incident_key"), (outbox, "receipt"), (alert_outbox, "receipt")]}
# Indexes on added columns: create_all skips an existing table with its indexes.
ADDED_INDEXES = {2: [sa.Index("cases_by_site_incident", cases.c.site_incident_key)]}


class SchemaError(RuntimeError):
    pass


_SCHEMA_LOCK = 7_041_990  # an arbitrary pg_advisory_xact_lock key: one process creates the tables at a time


def create_engine(url: str) -> sa.Engine:
    """An engine whose transactions serialise writers on SQLite as row locks do on PostgreSQL."""
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]  # psycopg 3, not the legacy psycopg2
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    parsed = sa.engine.make_url(url)
    if parsed.database not in (None, "", ":memory:"):  # a new lake's store: its folder may not exist yet
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" below issues BEGIN, not pysqlite
        dbapi_connection.execute("PRAGMA foreign_keys = ON")
        dbapi_connection.execute("PRAGMA journal_mode = WAL")  # readers do not wait for the writer

    @sa.event.listens_for(engine, "begin")
    def _begin(conn):
        # IMMEDIATE takes the write lock up front: a read-then-write transaction (observe) cannot
        # interleave with another one, which deferred transactions would let happen. A transaction
        # that only reads (``reading``) needs no lock: in WAL mode it reads a snapshot beside the writer.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


READ_ONLY = "iot_lake_read_only"


def reading(engine: sa.Engine) -> sa.Engine:
    """The engine for transactions that only read. On SQLite every other transaction takes the write
    lock, so concurrent reads (the API's, under load) would queue for it one at a time; on PostgreSQL
    nothing changes."""
    return engine.execution_options(**{READ_ONLY: True})


def create_tables(engine: sa.Engine) -> None:
    """Create what is missing and migrate to SCHEMA_VERSION; safe to run from many processes at once
    (PostgreSQL: an advisory lock; SQLite: the write lock its transactions take up front)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        metadata.create_all(conn)
        migrate(conn)


def stored_version(conn: sa.Connection) -> int | None:
    return conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()


def migrate(conn: sa.Connection) -> None:
    """Bring the tables create_all found to SCHEMA_VERSION, in the caller's transaction.

    A store without a version is at version 1 or was just created; the columns are checked rather
    than assumed, so both cases (and a migration interrupted before its commit) end the same way.
    """
    stored = stored_version(conn)
    if stored is not None and stored > SCHEMA_VERSION:
        # Older code must not write to a store whose rows it does not fully understand.
        raise SchemaError(f"the case store is at schema version {stored}, newer than this code's {SCHEMA_VERSION}")
    if stored == SCHEMA_VERSION:
        return
    inspector = sa.inspect(conn)
    for version in range((stored or 1) + 1, SCHEMA_VERSION + 1):
        for table, name in ADDED_COLUMNS.get(version, []):
            if name not in {c["name"] for c in inspector.get_columns(table.name)}:
                conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {_column_ddl(table.c[name], conn)}"))
        for index in ADDED_INDEXES.get(version, []):
            index.create(conn, checkfirst=True)
    conn.execute(sa.delete(schema_version))
    conn.execute(sa.insert(schema_version).values(version=SCHEMA_VERSION))


def _column_ddl(column: sa.Column, conn: sa.Connection) -> str:
    """``name TYPE [REFERENCES table (column)]``; added columns are nullable (SQLite requires a NULL
    default for a column with a foreign key, and existing rows have no value)."""
    ddl = str(sa.schema.CreateColumn(column).compile(dialect=conn.dialect))
    for fk in column.foreign_keys:
        ddl += f" REFERENCES {fk.column.table.name} ({fk.column.name})"
    return ddl
