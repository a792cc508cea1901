"""The historical database: device registry and past readings, from any SQLAlchemy URL.

Readings are extracted incrementally on ``loaded_at`` (when a row entered the database). Each
daily extract writes a manifest with the (low, high] bounds it used; the next extract's low
bound, the watermark, is derived from those manifests. So re-running a day re-reads exactly
its own rows, running days out of order leaves neither gaps nor overlaps, and the state lives
in the lake beside the data instead of in a separate mutable file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

# Where the registry snapshots live is lake layout, importable by Spark jobs without SQLAlchemy.
from iot_lake.lake import HISTORIAN_PREFIX, REGISTRY_PREFIX, Lake, latest_registry_day, registry_key  # noqa: F401
from iot_lake.sources.readings import READINGS_SCHEMA, readings_manifest_key, readings_prefix  # noqa: F401

metadata = sa.MetaData()

sites = sa.Table(
    "sites",
    metadata,
    sa.Column("site_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("latitude", sa.Float, nullable=False),
    sa.Column("longitude", sa.Float, nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)
devices = sa.Table(
    "devices",
    metadata,
    sa.Column("device_id", sa.String(32), primary_key=True),
    sa.Column("site_id", sa.String(32), sa.ForeignKey("sites.site_id"), nullable=False),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("firmware", sa.String(32), nullable=False),
    sa.Column("installed_on", sa.Date, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)
device_metrics = sa.Table(
    "device_metrics",
    metadata,
    sa.Column("device_id", sa.String(32), sa.ForeignKey("devices.device_id"), primary_key=True),
    sa.Column("metric", sa.String(32), primary_key=True),
    sa.Column("unit", sa.String(16), nullable=False),  # the unit the device reports in
    sa.Column("canonical_unit", sa.String(16), nullable=False),
    sa.Column("min_value", sa.Float, nullable=False),  # physical range, canonical unit
    sa.Column("max_value", sa.Float, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)
readings = sa.Table(
    "readings",
    metadata,
    sa.Column("reading_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(32), nullable=False),
    sa.Column("metric", sa.String(32), nullable=False),
    sa.Column("recorded_at", sa.DateTime, nullable=False),  # UTC, naive in the database
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("unit", sa.String(16), nullable=False),
    sa.Column("loaded_at", sa.DateTime, nullable=False, index=True),
    sa.UniqueConstraint("device_id", "metric", "recorded_at"),
)
REGISTRY_TABLES = (sites, devices, device_metrics)


def create_engine(url: str) -> sa.Engine:
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]  # psycopg 3, not the legacy psycopg2
    return sa.create_engine(url, pool_pre_ping=True)


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _naive(dt: datetime | None) -> datetime | None:
    return None if dt is None else dt.astimezone(UTC).replace(tzinfo=None)


def _write_parquet(lake: Lake, key: str, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    lake.write_bytes(key, sink.getvalue().to_pybytes())


@dataclass
class RegistryExtract:
    day: str
    rows: dict[str, int]
    keys: list[str]


def land_registry(lake: Lake, engine: sa.Engine, day: date) -> RegistryExtract:
    """Snapshot the whole registry (small, slowly changing) for one day."""
    rows, keys = {}, []
    with engine.connect() as conn:
        for table in REGISTRY_TABLES:
            result = conn.execute(sa.select(table).order_by(*table.primary_key.columns))
            records = [dict(r._mapping) for r in result]
            arrow = (
                pa.Table.from_pylist(records)
                if records
                else pa.table({c.name: pa.array([], pa.string()) for c in table.columns})
            )
            if "updated_at" in arrow.column_names and records:
                arrow = arrow.set_column(
                    arrow.column_names.index("updated_at"),
                    "updated_at",
                    pa.array([_utc(r["updated_at"]) for r in records], pa.timestamp("us", tz="UTC")),
                )
            key = registry_key(day, table.name)
            _write_parquet(lake, key, arrow)
            rows[table.name] = arrow.num_rows
            keys.append(key)
    return RegistryExtract(day=day.isoformat(), rows=rows, keys=keys)


class HistorianSchemaError(RuntimeError):
    """The readings table lost the column the extract cannot do without (its watermark)."""


WATERMARK = "loaded_at"


def present_readings(conn: sa.Connection) -> sa.Table:
    """The readings table as the database has it now (reflected, not ``readings``): a column added,
    renamed or retyped in the historian lands as it is, and the curated history's ``landed_schema``
    check reports the differences (iot_lake.curated.history_job.schema_drift) instead of the extract
    failing on a name it expected. Only the watermark is indispensable."""
    table = sa.Table("readings", sa.MetaData(), autoload_with=conn)
    if WATERMARK not in table.c:
        raise HistorianSchemaError(
            f"the historian's readings table has no {WATERMARK} column (it has: {', '.join(table.c.keys())}); "
            "the incremental extract reads by it: map the renamed column in iot_lake/sources/historian.py"
        )
    return table


def extract_readings(
    engine: sa.Engine, low: datetime | None, high: datetime, chunk_rows: int = 50_000
) -> Iterator[pa.RecordBatch]:
    """Rows with low < loaded_at <= high, streamed in chunks. Parameterized, never formatted."""
    with engine.connect() as conn:
        table = present_readings(conn)
        query = sa.select(table).where(table.c[WATERMARK] <= sa.bindparam("high"))
        params = {"high": _naive(high)}
        if low is not None:
            query = query.where(table.c[WATERMARK] > sa.bindparam("low"))
            params["low"] = _naive(low)
        query = query.order_by(table.c[WATERMARK], *(table.c[k] for k in ("reading_id",) if k in table.c))
        result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(query, params)
        names = list(result.keys())
        for rows in result.partitions():
            yield pa.RecordBatch.from_arrays([_column(n, v) for n, v in zip(names, zip(*rows))], names=names)


EXPECTED_TYPES = {f.name: f.type for f in READINGS_SCHEMA}


def _column(name: str, values: tuple) -> pa.Array:
    """A column typed as READINGS_SCHEMA says, or, when the database's values no longer fit it (a
    retyped column) or the column is new, as the database has it: the curated side judges it."""
    values = [_utc(v) if isinstance(v, datetime) else v for v in values]
    if name in EXPECTED_TYPES:
        try:
            return pa.array(values, EXPECTED_TYPES[name])
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            pass
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):  # mixed types in one column
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def unified(batches: list[pa.RecordBatch]) -> pa.Table:
    """One part's chunks as one table. Chunks of a drifted table may type a column differently (a
    chunk of nulls, a stray text value in a numeric column): promoted, or else landed as text."""
    tables = [pa.Table.from_batches([b]) for b in batches]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        types: dict[str, set] = {}
        for t in tables:
            for f in t.schema:
                if not pa.types.is_null(f.type):
                    types.setdefault(f.name, set()).add(f.type)
        mixed = {n for n, ts in types.items() if len(ts) > 1}
        tables = [
            t.cast(pa.schema([pa.field(f.name, pa.string() if f.name in mixed else f.type) for f in t.schema]))
            for t in tables
        ]
        return pa.concat_tables(tables, promote_options="permissive")


@dataclass
class ReadingsExtract:
    day: str
    low: str | None  # exclusive watermark the extract started from
    high: str  # inclusive upper bound; the next extract's watermark
    rows: int
    files: list[str]
    extracted_at: str


def _manifests(lake: Lake) -> dict[date, ReadingsExtract]:
    out = {}
    root = lake.path(f"{HISTORIAN_PREFIX}/readings")
    if not lake.fs.exists(root):
        return out
    for path in lake.fs.glob(f"{root}/*/*/*/_manifest.json"):
        m = ReadingsExtract(**json.loads(lake.fs.cat_file(path)))
        out[date.fromisoformat(m.day)] = m
    return out


_EMPTY = datetime(1970, 1, 1, tzinfo=UTC)  # (x, x] selects nothing
COMMIT_LAG = timedelta(minutes=5)


def extract_bounds(lake: Lake, day: date, now: datetime) -> tuple[datetime | None, datetime]:
    """The (low, high] loaded_at bounds for a day's extract, from the manifests already landed."""
    manifests = _manifests(lake)
    if day in manifests and manifests[day].low is not None:
        low = datetime.fromisoformat(manifests[day].low)
    elif day in manifests:
        low = None
    else:
        earlier = [datetime.fromisoformat(m.high) for d, m in manifests.items() if d < day]
        low = max(earlier) if earlier else None
    end_of_day = datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)
    later = [m for d, m in manifests.items() if d > day]
    if any(m.low is None for m in later):
        # A later day already took everything up to its high bound: this day's range is empty.
        return _EMPTY, _EMPTY
    # Stay COMMIT_LAG behind the clock: a transaction still open at extract time may commit rows
    # whose loaded_at is already in the past, and they must fall into the next range, not be skipped.
    high = min([end_of_day, now.astimezone(UTC) - COMMIT_LAG, *(datetime.fromisoformat(m.low) for m in later)])
    if low is not None and high < low:
        high = low
    return low, high


def land_readings(lake: Lake, engine: sa.Engine, day: date, now: datetime | None = None) -> ReadingsExtract:
    """Extract the day's new readings into landing/historical/readings/YYYY/MM/DD/ (idempotent)."""
    now = now or datetime.now(UTC)
    low, high = extract_bounds(lake, day, now)
    prefix = readings_prefix(day)
    for stale in lake.list(prefix):
        lake.delete(stale.key)
    rows, files, batch_rows, part = 0, [], [], 0

    def flush() -> None:
        nonlocal part, batch_rows
        if batch_rows:
            key = f"{prefix}/part-{part:05d}.parquet"
            _write_parquet(lake, key, unified(batch_rows))
            files.append(key)
            part += 1
            batch_rows = []

    pending = 0
    for batch in extract_readings(engine, low, high):
        batch_rows.append(batch)
        rows += batch.num_rows
        pending += batch.num_rows
        if pending >= 500_000:
            flush()
            pending = 0
    flush()
    manifest = ReadingsExtract(
        day=day.isoformat(),
        low=low.isoformat() if low else None,
        high=high.isoformat(),
        rows=rows,
        files=files,
        extracted_at=datetime.now(UTC).isoformat(),
    )
    lake.write_text(readings_manifest_key(day), json.dumps(asdict(manifest), indent=1))
    return manifest
