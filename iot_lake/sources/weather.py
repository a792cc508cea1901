"""Third-party weather files: validated against a schema on read; bad files reported, not fatal.

A file-level defect (unparseable, missing column, a value of the wrong type) rejects the file;
a row-level defect (a value outside its physical range) rejects that row only. Every rejection
comes with a reason.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from iot_lake.ids import ARROW_PATTERNS
from iot_lake.lake import INVENTORY_PREFIX, Lake, weather_day_prefix

SCHEMA = pa.schema(
    [
        ("site_id", pa.string()),
        ("observed_at", pa.timestamp("s", tz="UTC")),
        ("temperature_c", pa.float64()),
        ("humidity_pct", pa.float64()),
        ("wind_speed_ms", pa.float64()),
        ("precipitation_mm", pa.float64()),
    ]
)
RANGES = {
    "temperature_c": (-90.0, 60.0),
    "humidity_pct": (0.0, 100.0),
    "wind_speed_ms": (0.0, 115.0),
    "precipitation_mm": (0.0, 500.0),
}


# A day of hourly observations for a few hundred sites is well under a megabyte; a file over this
# is rejected unread, so no file can take the landing job's memory.
MAX_WEATHER_FILE_BYTES = 64 << 20


class WeatherFileError(ValueError):
    """The file cannot be used at all."""


@dataclass
class WeatherFileReport:
    key: str
    format: str
    ok: bool
    rows: int = 0
    rejected_rows: int = 0
    errors: list[str] = field(default_factory=list)


def _cast(table: pa.Table) -> pa.Table:
    missing = [f.name for f in SCHEMA if f.name not in table.column_names]
    if missing:
        raise WeatherFileError(f"missing column(s): {', '.join(missing)}")
    columns = []
    for f in SCHEMA:
        col = table.column(f.name)
        try:
            if pa.types.is_timestamp(f.type) and pa.types.is_string(col.type):
                col = pc.strptime(col, format="%Y-%m-%dT%H:%M:%SZ", unit="s")
                col = pc.assume_timezone(col, "UTC")
            columns.append(col.cast(f.type))
        except Exception as exc:  # noqa: BLE001 - ArrowInvalid, ArrowNotImplementedError, ArrowTypeError, ...
            raise WeatherFileError(f"column {f.name} has a value of the wrong type: {exc}") from None
    return pa.table(columns, schema=SCHEMA)


def read_weather_bytes(key: str, data: bytes) -> pa.Table:
    """Parse and type one file. Raises WeatherFileError when the file as a whole is unusable."""
    if b"\x00" in data:
        raise WeatherFileError("binary content (NUL bytes) in a text feed")
    try:
        if key.endswith(".csv"):
            # Read every column as text first so a type error names the column instead of the parser.
            names = pacsv.read_csv(io.BytesIO(data), read_options=pacsv.ReadOptions(block_size=1 << 20)).column_names
            table = pacsv.read_csv(
                io.BytesIO(data), convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names})
            )
        elif key.endswith(".json"):
            doc = json.loads(data)
            rows = doc.get("observations") if isinstance(doc, dict) else doc
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise WeatherFileError("JSON is not a list of observations")
            names = sorted({k for r in rows for k in r})
            table = pa.table(
                {n: pa.array([None if r.get(n) is None else str(r.get(n)) for r in rows], pa.string()) for n in names}
            )
        else:
            raise WeatherFileError("unknown format (expected .csv or .json)")
    except WeatherFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the bytes do, the verdict is the file's (deep JSON: RecursionError)
        raise WeatherFileError(f"unparseable: {type(exc).__name__}: {exc}"[:500]) from None
    if table.num_rows == 0:
        raise WeatherFileError("no observations")
    return _cast(table)


def valid_rows_mask(table: pa.Table) -> tuple[pa.ChunkedArray, list[str]]:
    """Rows inside every physical range and with a valid site id and a time; and the reasons for the rest."""
    mask = pc.and_(pc.is_valid(table["site_id"]), pc.is_valid(table["observed_at"]))
    reasons = []
    valid_site = pc.fill_null(pc.match_substring_regex(table["site_id"], ARROW_PATTERNS["site"]), False)
    if bad := table.num_rows - pc.sum(pc.cast(valid_site, pa.int64())).as_py():
        reasons.append(f"{bad} row(s) with a missing or invalid site id (iot_lake.ids)")
    mask = pc.and_(mask, valid_site)
    for name, (lo, hi) in RANGES.items():
        in_range = pc.and_(pc.greater_equal(table[name], lo), pc.less_equal(table[name], hi))
        in_range = pc.fill_null(in_range, False)
        bad = table.num_rows - pc.sum(pc.cast(in_range, pa.int64())).as_py()
        if bad:
            reasons.append(f"{bad} row(s) with {name} outside [{lo}, {hi}] or missing")
        mask = pc.and_(mask, in_range)
    return mask, reasons


def validate_file(lake: Lake, key: str, size: int | None = None) -> tuple[WeatherFileReport, pa.Table | None]:
    fmt = key.rsplit(".", 1)[-1]
    try:
        if (size if size is not None else lake.fs.size(lake.path(key))) > MAX_WEATHER_FILE_BYTES:
            raise WeatherFileError(f"larger than the limit of {MAX_WEATHER_FILE_BYTES:,} bytes: not read")
        table = read_weather_bytes(key, lake.read_bytes(key))
    except WeatherFileError as exc:
        return WeatherFileReport(key=key, format=fmt, ok=False, errors=[str(exc)]), None
    mask, reasons = valid_rows_mask(table)
    good = table.filter(mask)
    report = WeatherFileReport(
        key=key, format=fmt, ok=True, rows=good.num_rows, rejected_rows=table.num_rows - good.num_rows, errors=reasons
    )
    return report, good


@dataclass
class WeatherDay:
    day: str
    files: list[WeatherFileReport]
    table: pa.Table  # the valid rows of every usable file

    @property
    def bad_files(self) -> list[WeatherFileReport]:
        return [f for f in self.files if not f.ok]

    def to_json(self) -> str:
        return json.dumps(
            {"day": self.day, "rows": self.table.num_rows, "files": [asdict(f) for f in self.files]}, indent=1
        )


def weather_inventory_key(day: date) -> str:
    return f"{INVENTORY_PREFIX}/weather/{day:%Y/%m/%d}.json"


def land_weather_day(lake: Lake, day: date) -> WeatherDay:
    reports, tables = [], []
    for obj in lake.list(weather_day_prefix(day)):
        report, table = validate_file(lake, obj.key, obj.size)
        reports.append(report)
        if table is not None:
            tables.append(table)
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    result = WeatherDay(day=day.isoformat(), files=reports, table=table)
    lake.write_text(weather_inventory_key(day), result.to_json())
    return result
