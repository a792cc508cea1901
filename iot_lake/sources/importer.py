"""Real series in: a CSV or Parquet time series landed as Kinesis Data Firehose would have delivered it.

``iot-lake import`` turns one series (a timestamp and a value per row, any cadence) into the
telemetry records of one device metric, in gzip NDJSON objects under the landing hours the records
arrived in, and registers the device, its site and the metric in the historian when they are
missing. The rest of the platform then treats it as any device's telemetry: the landing sensor
inventories the hours, the curated job validates, deduplicates and curates the records.

Everything written is a function of the file and the options: message ids derive from the device,
metric and event time, object keys from the device, metric and arrival hour, and the bytes are
gzip without a timestamp. Re-importing a file rewrites the same objects with the same bytes, and
a record that reaches the curated layer twice is dropped there as a duplicate.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from iot_lake.announcements import announce
from iot_lake.curated.records import MetricRule  # the rule curated validation applies
from iot_lake.fleet import METRICS
from iot_lake.ids import id_problem
from iot_lake.lake import Lake, telemetry_hour_prefix
from iot_lake.simulate.deliveries import SimConfig
from iot_lake.simulate.firehose import LandingObject, split_by_size
from iot_lake.sources.historian import create_engine, device_metrics, devices, metadata, sites
from iot_lake.units import UnitError, conversion, to_canonical

DEFAULT_SITE = "site-import"
STREAM = "iot-lake-import"  # the delivery stream name in object keys: imported objects are told apart
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://iot-lake/import")
# IoT Core receives a reading a moment after the device stamps it; the curated layer judges the
# device clock against ingested_at, so it must never precede the event.
INGEST_LATENCY_MS = 1_000
HOUR_MS = 3_600_000
WEEK_MS = 7 * 86_400_000
# A metric new to the registry has no known physical range: wide enough for any counter a real
# series carries (bytes, requests), so the range check only stops what cannot be a reading.
NEW_METRIC_RANGE = (-1e15, 1e15)
# Column names that hold the timestamps or the values, in order of preference (case-insensitive).
TIMESTAMP_NAMES = ("timestamp", "ts", "time", "datetime", "date", "event_ts", "event_time", "recorded_at")
VALUE_NAMES = ("value", "reading", "y")
_UNIT = re.compile(r"[!#-\[\]-~]{1,16}")  # printable ASCII without quotes or backslashes: fits the registry


class SeriesError(ValueError):
    """The file cannot be imported at all (unreadable, or not one good row)."""


class OptionError(ValueError):
    """An option's value that cannot be used: an invalid id or unit, a column missing or not found."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


class RegistrationError(ValueError):
    """The registry already holds the device or metric in a way this import contradicts."""


@dataclass(frozen=True)
class BadRow:
    row: int  # the CSV line number (the header is line 1), or the Parquet row number from 1
    reason: str


@dataclass(frozen=True)
class Series:
    """The good points of a file, ascending in time, and the rows that were not."""

    timestamp_column: str
    value_column: str
    read: int  # data rows in the file
    rows: np.ndarray  # file row of each point
    ts_ms: np.ndarray  # event time, epoch milliseconds UTC
    values: np.ndarray
    rejected: tuple[BadRow, ...]

    def keep(self, ok: np.ndarray, reasons: Sequence[str]) -> Series:
        """Only the points where ``ok``; the others rejected, each with its reason."""
        bad = tuple(BadRow(int(r), reason) for r, reason, good in zip(self.rows, reasons, ok) if not good)
        return replace(
            self,
            rows=self.rows[ok],
            ts_ms=self.ts_ms[ok],
            values=self.values[ok],
            rejected=tuple(sorted(self.rejected + bad, key=lambda b: b.row)),
        )


# -- reading


def read_table(path: Path) -> tuple[pd.DataFrame, np.ndarray, list[BadRow]]:
    """The file's rows (CSV cells as text), each row's number, and the CSV rows that are not rows."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix in (".parquet", ".pq"):
        try:
            frame = pq.read_table(path).to_pandas()
        except (pa.ArrowException, OSError) as exc:
            raise SeriesError(f"{path} is not a readable Parquet file: {exc}") from None
        frame.columns = [str(c) for c in frame.columns]
        return frame, np.arange(1, len(frame) + 1), []
    raise SeriesError(f"{path}: only .csv and .parquet files can be imported")


def _read_csv(path: Path) -> tuple[pd.DataFrame, np.ndarray, list[BadRow]]:
    records, rows, bad = [], [], []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            for fields in reader:
                if not fields:
                    continue  # a blank line holds no row
                if len(fields) != len(header):
                    bad.append(BadRow(reader.line_num, f"{len(fields)} fields where the header has {len(header)}"))
                    continue
                records.append(fields)
                rows.append(reader.line_num)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SeriesError(f"{path} is not a readable CSV file (UTF-8, comma-separated): {exc}") from None
    if not header:
        raise SeriesError(f"{path} is empty: a CSV file needs a header row")
    if len(set(header)) < len(header):
        raise SeriesError(f"{path}: the header names a column twice ({', '.join(header)})")
    return pd.DataFrame(records, columns=header, dtype=object), np.array(rows, dtype=np.int64), bad


def pick_columns(frame: pd.DataFrame, timestamp_column: str | None, value_column: str | None) -> tuple[str, str]:
    columns = list(frame.columns)
    listed = ", ".join(columns) or "none"
    for name, option in ((timestamp_column, "--timestamp-column"), (value_column, "--value-column")):
        if name is not None and name not in columns:
            raise OptionError(option, f"no column {name!r} in the file (columns: {listed})")
    ts = timestamp_column or _named(columns, TIMESTAMP_NAMES) or _datetime_column(frame)
    if ts is None:
        raise OptionError("--timestamp-column", f"cannot tell which column holds the timestamps (columns: {listed})")
    others = [c for c in columns if c != ts]
    value = value_column or _named(others, VALUE_NAMES) or (others[0] if len(others) == 1 else None)
    if value is None:
        raise OptionError("--value-column", f"cannot tell which column holds the values (columns: {listed})")
    if value == ts:
        raise OptionError("--value-column", f"{value!r} is the timestamp column")
    return ts, value


def _named(columns: list[str], names: Sequence[str]) -> str | None:
    lower = {c.lower(): c for c in reversed(columns)}  # reversed: the first of equal names wins
    return next((lower[n] for n in names if n in lower), None)


def _datetime_column(frame: pd.DataFrame) -> str | None:
    return next((c for c in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[c])), None)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_times(raw: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Epoch milliseconds of each cell (0 where it is no time), and why each is not a time ('' when it is).

    ISO 8601 (a naive time is UTC, an offset is honoured) or epoch seconds or milliseconds, told
    apart by their size: 1e11 seconds is the year 5138, 1e11 milliseconds March 1973.
    """
    if pd.api.types.is_datetime64_any_dtype(raw):
        times = raw.dt.tz_localize("UTC") if raw.dt.tz is None else raw.dt.tz_convert("UTC")
        missing = raw.isna().to_numpy()
    else:
        text = raw.astype("string").str.strip()
        missing = (text.isna() | (text == "")).to_numpy(dtype=bool)
        numbers = pd.to_numeric(raw if pd.api.types.is_numeric_dtype(raw) else text, errors="coerce")
        if numbers.notna().sum() > (~missing).sum() / 2:  # mostly numbers: an epoch column
            unit = "ms" if numbers.abs().median() >= 1e11 else "s"
            times = pd.to_datetime(numbers, unit=unit, utc=True, errors="coerce")
        else:
            times = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    ok = times.notna().to_numpy()
    ms = np.zeros(len(raw), dtype=np.int64)
    ms[ok] = (times[ok] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ms")
    reasons = [
        "" if good else "missing timestamp" if gone else f"not a time: {_shown(cell)}"
        for good, gone, cell in zip(ok, missing, raw.tolist())
    ]
    return ms, reasons


def parse_values(raw: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Each cell as a float, and why it is not a finite number ('' when it is)."""
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        numbers = pd.to_numeric(raw, errors="coerce").astype("float64")
        missing = raw.isna().to_numpy()  # Parquet nulls, and NaN (pandas does not tell them apart)
    else:
        text = raw.astype("string").str.strip()
        missing = (text.isna() | (text == "")).to_numpy(dtype=bool)
        numbers = pd.to_numeric(text, errors="coerce").astype("float64")
    values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(values)
    reasons = []
    for good, gone, value, cell in zip(finite, missing, values, raw.tolist()):
        if good:
            reasons.append("")
        elif gone:
            reasons.append("missing value")
        elif np.isinf(value) or str(cell).strip().lower().lstrip("+-") == "nan":
            reasons.append(f"not a finite number: {_shown(cell)}")
        else:
            reasons.append(f"not a number: {_shown(cell)}")
    return values, reasons


def read_series(path: Path, timestamp_column: str | None = None, value_column: str | None = None) -> Series:
    """The file's good points in time order; bad rows and repeated timestamps rejected with reasons."""
    frame, rows, bad = read_table(path)
    ts_col, value_col = pick_columns(frame, timestamp_column, value_column)
    ts_ms, time_reasons = parse_times(frame[ts_col])
    values, value_reasons = parse_values(frame[value_col])
    series = Series(ts_col, value_col, len(frame) + len(bad), rows, ts_ms, values, tuple(bad))
    reasons = [t or v for t, v in zip(time_reasons, value_reasons)]
    series = series.keep(np.array([not r for r in reasons], dtype=bool), reasons)
    return _without_repeats(series)


def _without_repeats(series: Series) -> Series:
    """The points in time order, each time once: the file's first row with it is kept."""
    order = np.argsort(series.ts_ms, kind="stable")  # stable: of equal times the file's first comes first
    series = replace(series, rows=series.rows[order], ts_ms=series.ts_ms[order], values=series.values[order])
    repeated = np.zeros(len(order), dtype=bool)
    repeated[1:] = series.ts_ms[1:] == series.ts_ms[:-1]
    first_row = pd.Series(series.rows).groupby(series.ts_ms).transform("first").to_numpy()
    return series.keep(~repeated, [f"duplicate timestamp (row {r} has it)" for r in first_row])


def within_range(series: Series, unit: str, rule: MetricRule) -> Series:
    """Only the points inside the metric's physical range: the curated layer would quarantine the rest."""
    canonical = to_canonical(series.values, unit, rule.canonical_unit)
    ok = (canonical >= rule.min_value) & (canonical <= rule.max_value)
    reason = f"outside the range of the metric, [{rule.min_value:g}, {rule.max_value:g}] {rule.canonical_unit}"
    return series.keep(ok, [reason] * len(ok))


def week_shift_ms(first_ms: int, start: date | None) -> int:
    """Whole weeks that move ``first_ms`` into the 7 days from ``start`` (UTC): weekday and time of day kept."""
    if start is None:
        return 0
    start_ms = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp() * 1000)
    return -((first_ms - start_ms) // WEEK_MS) * WEEK_MS


# -- the registry


@dataclass(frozen=True)
class Registration:
    """What the registry holds for the import, and the rows it lacks."""

    site_id: str
    rule: MetricRule
    missing: dict[str, dict] = field(default_factory=dict)  # "site" | "device" | "metric" -> row to insert


def metric_rule(conn: sa.Connection, metric: str, unit: str) -> MetricRule:
    """A device metric's rule: the metric's canonical unit and range as the registry or the fleet has them,
    or, for a metric new to both, its own unit and a wide range."""
    known = conn.execute(
        sa.select(
            device_metrics.c.canonical_unit,
            sa.func.min(device_metrics.c.min_value),
            sa.func.max(device_metrics.c.max_value),
        )
        .where(device_metrics.c.metric == metric)
        .group_by(device_metrics.c.canonical_unit)
        .order_by(device_metrics.c.canonical_unit)
    ).first()
    if known is not None:
        return MetricRule(unit, known[0], float(known[1]), float(known[2]))
    if metric in METRICS:
        spec = METRICS[metric]
        return MetricRule(unit, spec.unit, spec.min_value, spec.max_value)
    return MetricRule(unit, unit, *NEW_METRIC_RANGE)


def plan_registration(
    conn: sa.Connection, device_id: str, site_id: str | None, metric: str, unit: str, installed_on: date
) -> Registration:
    """What to register, reading only; existing rows are taken as they are, never changed."""
    now = datetime.now(UTC).replace(tzinfo=None)
    device = conn.execute(sa.select(devices).where(devices.c.device_id == device_id)).mappings().first()
    if device is not None and site_id is not None and site_id != device["site_id"]:
        raise RegistrationError(
            f"device {device_id} is registered at site {device['site_id']}, not {site_id}: leave --site out"
        )
    site = device["site_id"] if device is not None else site_id or DEFAULT_SITE
    missing: dict[str, dict] = {}
    if conn.execute(sa.select(sites.c.site_id).where(sites.c.site_id == site)).first() is None:
        # Where the series was measured is unknown: no coordinates (0, 0) and UTC.
        missing["site"] = dict(site_id=site, name=site, latitude=0.0, longitude=0.0, timezone="UTC", updated_at=now)
    if device is None:
        missing["device"] = dict(
            device_id=device_id, site_id=site, model="imported", firmware="-", installed_on=installed_on, updated_at=now
        )
    row = (
        conn.execute(
            sa.select(device_metrics).where(device_metrics.c.device_id == device_id, device_metrics.c.metric == metric)
        )
        .mappings()
        .first()
    )
    if row is not None:
        rule = MetricRule(row["unit"], row["canonical_unit"], float(row["min_value"]), float(row["max_value"]))
    else:
        rule = metric_rule(conn, metric, unit)
        missing["metric"] = dict(device_id=device_id, metric=metric, **asdict(rule), updated_at=now)
    try:
        conversion(unit, rule.canonical_unit)
    except UnitError:
        raise RegistrationError(
            f"{metric} is registered in {rule.canonical_unit}, and {unit} does not convert to it"
        ) from None
    return Registration(site, rule, missing)


def register(conn: sa.Connection, plan: Registration) -> None:
    """Insert the missing rows, parents first (foreign keys hold throughout)."""
    for name, table in (("site", sites), ("device", devices), ("metric", device_metrics)):
        if name in plan.missing:
            conn.execute(table.insert(), [plan.missing[name]])


def historian_engine(url: str) -> sa.Engine:
    """The historian, with its tables created if it has none yet (an embedded SQLite not seeded by the simulator)."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite" and engine.url.database:
        Path(engine.url.database).resolve().parent.mkdir(parents=True, exist_ok=True)
    metadata.create_all(engine)
    return engine


# -- landing


def message_id(device_id: str, metric: str, ts_ms: int) -> str:
    """The same reading always gets the same id, as a device's retried publish does."""
    return str(uuid.uuid5(NAMESPACE, f"{device_id}|{metric}|{ts_ms}"))


def _iso_ms(ms: np.ndarray) -> np.ndarray:
    return np.char.add(np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms"), "Z")


def record_lines(series: Series, device_id: str, site_id: str, metric: str, unit: str) -> list[str]:
    """One NDJSON line per point, fields in the order device firmware sends them (the curated fast path's)."""
    head = json.dumps({"device_id": device_id, "site_id": site_id, "metric": metric}, separators=(",", ":"))[:-1]
    unit_token = json.dumps(unit)
    ts, ingested = _iso_ms(series.ts_ms), _iso_ms(series.ts_ms + INGEST_LATENCY_MS)
    return [
        f'{head},"value":{value!r},"unit":{unit_token},"ts":"{t}",'
        f'"message_id":"{message_id(device_id, metric, ms)}","ingested_at":"{i}"}}'
        for value, t, ms, i in zip(series.values.tolist(), ts, series.ts_ms.tolist(), ingested)
    ]


def landing_objects(series: Series, lines: list[str], device_id: str, metric: str) -> list[LandingObject]:
    """The lines in Firehose objects, one per arrival hour (more past the size cap), named by device, metric, hour."""
    hours = (series.ts_ms + INGEST_LATENCY_MS) // HOUR_MS
    starts = np.flatnonzero(np.r_[True, hours[1:] != hours[:-1]])  # points are in time order
    out = []
    for begin, end in zip(starts, [*starts[1:], len(lines)]):
        hour = datetime.fromtimestamp(int(hours[begin]) * 3600, tz=UTC)
        for part, chunk in enumerate(split_by_size(lines[begin:end], SimConfig.max_object_bytes)):
            name = uuid.uuid5(NAMESPACE, f"{device_id}|{metric}|{hour.isoformat()}|{part}")
            out.append(
                LandingObject(
                    key=f"{telemetry_hour_prefix(hour)}/{STREAM}-1-{hour:%Y-%m-%d-%H-%M-%S}-{name}.gz",
                    body=gzip.compress(("\n".join(chunk) + "\n").encode("utf-8"), mtime=0),
                    truth={"lines": len(chunk)},
                )
            )
    return out


# -- the import


@dataclass
class ImportReport:
    path: str
    device_id: str
    site_id: str
    metric: str
    unit: str
    canonical_unit: str
    timestamp_column: str
    value_column: str
    read: int  # data rows in the file: rows + rejected
    rows: int  # points landed
    rejected: int
    shift_seconds: int
    first: str  # event time of the first point landed, shifted (ISO 8601, UTC)
    last: str
    objects: list[str]
    registered: dict[str, bool]  # site / device / metric: added by this import (False: already there)
    rejected_rows: list[dict]

    def to_dict(self) -> dict:
        return asdict(self)


def check_options(device_id: str, site_id: str | None, metric: str, unit: str) -> None:
    """OptionError for the first value that may not be used in a record, key or registry row."""
    for option, kind, value in (
        ("--device", "device", device_id),
        ("--site", "site", site_id),
        ("--metric", "metric", metric),
    ):
        if value is not None and (problem := id_problem(kind, value)):
            raise OptionError(option, problem)
    if not _UNIT.fullmatch(unit):
        raise OptionError("--unit", f"invalid unit {unit!r}: 1-16 printable ASCII characters, no spaces or quotes")


def _no_rows(path: Path, series: Series) -> SeriesError:
    shown = "; ".join(f"row {b.row}: {b.reason}" for b in series.rejected[:5])
    more = f" (and {len(series.rejected) - 5} more)" if len(series.rejected) > 5 else ""
    return SeriesError(f"no good rows in {path}: {series.read} read, {len(series.rejected)} rejected: {shown}{more}")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def import_series(
    lake: Lake,
    historian_url: str,
    path: Path,
    device_id: str,
    metric: str,
    unit: str,
    site_id: str | None = None,
    timestamp_column: str | None = None,
    value_column: str | None = None,
    start: date | None = None,
) -> ImportReport:
    """Land the file's series as telemetry of ``device_id``'s ``metric`` and register what is missing.

    Nothing is written when the file has no good row or contradicts the registry.
    """
    check_options(device_id, site_id, metric, unit)
    series = read_series(path, timestamp_column, value_column)
    if not len(series.ts_ms):
        raise _no_rows(path, series)
    shift = week_shift_ms(int(series.ts_ms[0]), start)
    series = replace(series, ts_ms=series.ts_ms + shift)
    installed_on = datetime.fromtimestamp(int(series.ts_ms[0]) / 1000, tz=UTC).date()
    engine = historian_engine(historian_url)
    try:
        with engine.begin() as conn:
            plan = plan_registration(conn, device_id, site_id, metric, unit, installed_on)
            series = within_range(series, unit, plan.rule)
            if not len(series.ts_ms):
                raise _no_rows(path, series)
            register(conn, plan)
    finally:
        engine.dispose()
    lines = record_lines(series, device_id, plan.site_id, metric, unit)
    objects = landing_objects(series, lines, device_id, metric)
    # An object per hour: a two-week series is hundreds of PUTs, which wait on the network side by side.
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda obj: lake.write_bytes(obj.key, obj.body), objects))
    # Past hours: the landing sensor lists only the open ones, so it learns of these from the announcement.
    announce(lake, "import", [o.key for o in objects])
    return ImportReport(
        path=str(path),
        device_id=device_id,
        site_id=plan.site_id,
        metric=metric,
        unit=unit,
        canonical_unit=plan.rule.canonical_unit,
        timestamp_column=series.timestamp_column,
        value_column=series.value_column,
        read=series.read,
        rows=len(series.ts_ms),
        rejected=len(series.rejected),
        shift_seconds=shift // 1000,
        first=_iso(int(series.ts_ms[0])),
        last=_iso(int(series.ts_ms[-1])),
        objects=[o.key for o in objects],
        registered={name: name in plan.missing for name in ("site", "device", "metric")},
        rejected_rows=[asdict(b) for b in series.rejected],
    )
