"""No poison input: nothing a sender writes can fail an hour, and reading it keeps memory bounded.

Hypothesis drives the object reader, the line parser and the weather reader with arbitrary bytes
and arbitrary JSON. Crafted objects (a gzip bomb, a line of megabytes, 100,000 nested brackets,
an integer of 400 digits, a lone surrogate) then go through the inventory and the Spark job on
Sail, which must curate the hour with every line accounted for.
"""

from __future__ import annotations

import gzip
import json
import zlib
from datetime import timedelta
from unittest import mock

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iot_lake.curated import telemetry_job
from iot_lake.curated.records import REASONS, Record, Registry, Rejection, parse_line
from iot_lake.curated.registries import load_registry
from iot_lake.curated.telemetry_job import PARSED, QUARANTINE_TELEMETRY, curate_hour, parse_objects
from iot_lake.lake import Lake, ObjectInfo, telemetry_hour_prefix
from iot_lake.sources import telemetry, weather
from iot_lake.sources.telemetry import (
    LONG_LINE_MARKER,
    RAW_LINE_KEEP,
    UnreadableObject,
    inventory_object,
    iter_blocks,
    land_inventory,
    long_line_length,
)
from tests.conftest import START, land_faulty_hours

HOUR = START
REGISTRY = Registry.from_rows(
    [{"device_id": "dev-1", "site_id": "site-1"}],
    [
        {
            "device_id": "dev-1",
            "metric": "temperature",
            "unit": "degC",
            "canonical_unit": "degC",
            "min_value": -50,
            "max_value": 150,
        }
    ],
)
VALID = {
    "device_id": "dev-1",
    "site_id": "site-1",
    "metric": "temperature",
    "value": 21.5,
    "unit": "degC",
    "ts": "2026-11-20T00:10:00Z",
    "message_id": "m-1",
    "ingested_at": "2026-11-20T00:10:01Z",
}
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any JSON value, lone surrogates (which JSON's \ud800 escapes produce) and integers beyond a double included.
text = st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=20)
scalars = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=10**300, max_value=10**400) | st.floats() | text
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4), max_leaves=12
)


def _lake(tmp_path) -> Lake:
    return Lake(str(tmp_path))


def _put(lake: Lake, name: str, data: bytes) -> ObjectInfo:
    key = f"{telemetry_hour_prefix(HOUR)}/{name}"
    lake.write_bytes(key, data)
    return ObjectInfo(key=key, size=len(data), mtime=0.0)


def _gzip_members(data: bytes, cuts: list[int]) -> bytes:
    """``data`` as concatenated gzip members, cut at ``cuts`` (as Firehose concatenates them)."""
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    return b"".join(gzip.compress(data[a:b]) for a, b in zip(bounds, bounds[1:]))


def _expected_lines(data: bytes, max_line: int) -> list[bytes]:
    lines = [
        line if len(line) <= max_line else line[:RAW_LINE_KEEP] + LONG_LINE_MARKER + str(len(line)).encode()
        for line in data.split(b"\n")
    ]
    return [line for line in lines if line.strip()]


def _rows(lake: Lake, key: str) -> list[dict]:
    run = parse_objects(lake.url, {}, REGISTRY)
    batches = list(run(iter([pa.RecordBatch.from_pylist([{"key": key}])])))
    return [row for b in batches for row in b.to_pylist()]


@FAST
@given(
    data=st.binary(max_size=3000)
    | st.lists(st.sampled_from([b"\n", b" ", b"x" * 50, b"{}", b"\r\n", b"y" * 70]), max_size=60).map(b"".join),
    cuts=st.lists(st.integers(min_value=0), max_size=3),
    read_chunk=st.integers(min_value=1, max_value=64),
    output_chunk=st.integers(min_value=1, max_value=64),
)
def test_the_reader_yields_every_line_of_any_object_with_long_lines_replaced(
    tmp_path_factory, data, cuts, read_chunk, output_chunk
):
    lake = _lake(tmp_path_factory.mktemp("reader"))
    obj = _put(lake, "x.gz", _gzip_members(data, cuts))
    with mock.patch.multiple(telemetry, READ_CHUNK=read_chunk, OUTPUT_CHUNK=output_chunk):
        got = [
            line
            for block in iter_blocks(lake, obj.key, max_line_bytes=64)
            for line in block.split(b"\n")
            if line.strip()
        ]
    assert got == _expected_lines(data, 64)
    assert all(len(line) <= 64 or long_line_length(line) > 64 for line in got)


@FAST
@given(data=st.binary(max_size=2000), cut=st.integers(min_value=0, max_value=4000), garbage=st.binary(max_size=40))
def test_any_bytes_read_as_lines_or_unreadable_and_nothing_else_escapes(tmp_path_factory, data, cut, garbage):
    lake = _lake(tmp_path_factory.mktemp("bytes"))
    for payload in (data, gzip.compress(data)[:cut] + garbage, gzip.compress(data) + garbage):
        obj = _put(lake, "x.gz", payload)
        try:
            for _ in iter_blocks(lake, obj.key, max_line_bytes=100, max_object_bytes=1500):
                pass
        except UnreadableObject:
            pass
        inv = inventory_object(lake, obj)  # the inventory's verdict: never an exception
        assert inv.readable or inv.error


def test_a_gzip_bomb_stops_at_the_object_limit_and_keeps_the_lines_before(tmp_path):
    lake = _lake(tmp_path)
    head = (json.dumps(VALID) + "\n").encode() * 3
    bomb = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    payload = bomb.compress(head) + b"".join(bomb.compress(b"\x00" * (1 << 20)) for _ in range(64)) + bomb.flush()
    assert len(payload) < 100_000  # 64 MiB of zeros in well under 100 KB
    obj = _put(lake, "bomb.gz", payload)
    lines = []
    with pytest.raises(UnreadableObject, match="decompressed size exceeds the limit of 16,777,216 bytes"):
        for block in iter_blocks(lake, obj.key, max_object_bytes=16 << 20):
            lines += block.split(b"\n")
    assert lines == head.split(b"\n")[:3]


@FAST
@given(value=json_values, field=st.sampled_from([*VALID, "extra"]))
def test_the_line_parser_gives_any_json_a_verdict_a_table_can_hold(value, field):
    record = {**VALID, field: value}
    for line in (json.dumps(record), json.dumps(record, ensure_ascii=False), json.dumps(value)):
        result = parse_line(line, REGISTRY, HOUR)
        assert isinstance(result, (Record, Rejection))
        if isinstance(result, Rejection):
            assert result.reason in REASONS
        raw = line.encode("utf-8", errors="surrogatepass")  # what a sender can put in an object
        row = telemetry_job._parsed_row(
            raw, REGISTRY, {"source_object": "k", "landing_hour": HOUR, "landing_date": HOUR.date()}, 1
        )
        pa.RecordBatch.from_pylist([row], schema=PARSED)  # no fallback needed: every field is storable


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[" * 100_000, "malformed_json"),  # RecursionError in the JSON decoder
        (json.dumps({**VALID, "value": 10**400}), "non_finite_value"),  # OverflowError in math.isfinite
        (json.dumps({**VALID, "message_id": "\ud800"}), "mistyped_field"),  # a lone surrogate no table can hold
        (json.dumps({**VALID, "unit": "\udfff"}), "mistyped_field"),
        (json.dumps({**VALID, "device_id": "\ud800"}), "invalid_id"),
    ],
)
def test_lines_that_used_to_escape_as_exceptions_get_their_reason(line, reason):
    result = parse_line(line, REGISTRY, HOUR)
    assert isinstance(result, Rejection) and result.reason == reason, result


@FAST
@given(
    lines=st.lists(
        st.one_of(
            st.just(json.dumps(VALID).encode()),
            json_values.map(lambda v: json.dumps({**VALID, "value": v}).encode("utf-8", "surrogatepass")),
            json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
            st.binary(max_size=200).filter(lambda b: b"\n" not in b),
            st.integers(min_value=2000, max_value=5000).map(lambda n: b"{" + b"x" * n),
        ),
        max_size=25,
    ),
    truncate=st.booleans(),
)
def test_every_line_of_an_object_is_a_row_and_the_inventory_counts_them(tmp_path_factory, lines, truncate):
    """Row accounting per object: the inventory's line count is the number of curated and rejected
    rows the Spark job's parser yields; an object is unreadable for both or for neither."""
    lake = _lake(tmp_path_factory.mktemp("accounting"))
    payload = gzip.compress(b"\n".join(lines))
    obj = _put(lake, "x.gz", payload[: len(payload) // 2] if truncate else payload)
    with mock.patch.object(telemetry, "MAX_LINE_BYTES", 1000):
        inv = inventory_object(lake, obj)
        rows = _rows(lake, obj.key)
    parsed = [r for r in rows if r["status"] != "unreadable"]
    assert inv.lines == len(parsed)
    assert inv.readable == (len(parsed) == len(rows))
    assert all(len(r["raw_line"].encode()) <= RAW_LINE_KEEP * 3 for r in parsed if r["status"] == "rejected")


@FAST
@given(
    data=st.binary(max_size=2000) | json_values.map(lambda v: json.dumps(v).encode()),
    ext=st.sampled_from(["csv", "json"]),
)
def test_any_weather_file_is_a_table_or_a_file_error(data, ext):
    try:
        weather.read_weather_bytes(f"x.{ext}", data)
    except weather.WeatherFileError:
        pass


def test_deeply_nested_weather_json_and_an_oversized_file_are_rejected_with_reasons(tmp_path):
    lake = _lake(tmp_path)
    lake.write_bytes("landing/weather/deep.json", b"[" * 100_000)
    report, table = weather.validate_file(lake, "landing/weather/deep.json")
    assert not report.ok and table is None and "RecursionError" in report.errors[0]
    with mock.patch.object(weather, "MAX_WEATHER_FILE_BYTES", 10):
        lake.write_bytes("landing/weather/big.csv", b"site_id,observed_at\n" * 3)
        report, table = weather.validate_file(lake, "landing/weather/big.csv")
    assert not report.ok and "larger than the limit of 10 bytes" in report.errors[0]


def _valid_line_for(lake: Lake) -> dict:
    """A valid record of a device and metric the lake's registry knows, in the middle of its range."""
    (device, metric), rule = sorted(load_registry(lake, HOUR.date()).rules.items())[0]
    return {
        **VALID,
        "device_id": device,
        "site_id": "",
        "metric": metric,
        "unit": rule.unit,
        "value": (rule.min_value + rule.max_value) / 2,
    }


def test_poison_objects_curate_on_sail_with_every_line_accounted(tmp_path, spark):
    """One hour of simulated telemetry plus every poison a sender managed to write: the hour is
    curated, each poison line is quarantined with its reason and at most about 1 KiB of it, the
    bomb is an unreadable object, and the row accounting holds."""
    lake = land_faulty_hours(tmp_path, hours=1)
    valid = _valid_line_for(lake)
    long_line = json.dumps({**valid, "message_id": "m" * (400 << 10)})  # 400 KiB: over the 256 KiB line limit
    poison = [
        json.dumps({**valid, "message_id": "ok-1"}),
        "[" * 100_000,
        json.dumps({**valid, "value": 10**400, "message_id": "big"}),
        json.dumps({**valid, "message_id": "\ud800"}),
        long_line,
        "x" * 5000,
        json.dumps({**valid, "message_id": "ok-2"}),
    ]
    _put(lake, "poison.gz", gzip.compress("\n".join(poison).encode("utf-8", "surrogatepass")))
    # The inventory and the job read with the same (lowered) limit: Sail runs the job's Python in-process.
    with mock.patch.object(telemetry, "MAX_OBJECT_BYTES", 32 << 20):
        bomb = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
        _put(lake, "bomb.gz", bomb.compress(b"\x00" * (40 << 20)) + bomb.flush())
        inventory = land_inventory(lake, HOUR)
        report = curate_hour(spark, lake, HOUR)
    assert report.accounted, report
    assert [o.error for o in inventory.objects if o.key.endswith("bomb.gz")] == [
        "decompressed size exceeds the limit of 33,554,432 bytes"
    ]
    from deltalake import DeltaTable

    quarantine = [
        q
        for q in DeltaTable(lake.path(QUARANTINE_TELEMETRY)).to_pyarrow_table().to_pylist()
        if q["source_object"].endswith("poison.gz")
    ]
    reasons = {q["line_number"]: q["reason"] for q in quarantine}
    assert reasons == {
        2: "malformed_json",
        3: "non_finite_value",
        4: "mistyped_field",
        5: "line_too_long",
        6: "malformed_json",
    }
    by_line = {q["line_number"]: q for q in quarantine}
    assert f"a line of {len(long_line):,} bytes" in by_line[5]["detail"]
    assert "a line of 5,000 bytes; its first 1,024 kept" in by_line[6]["detail"]
    assert all(len(q["raw_line"]) <= RAW_LINE_KEEP for q in quarantine)
    assert report.unreadable_objects >= 1 and report.curated_new >= 2


def test_the_hour_after_the_poison_is_curated_as_usual(tmp_path, spark):
    """The poison of one hour changes nothing for the next: same rows as without it."""
    lake = land_faulty_hours(tmp_path, hours=2)
    _put(lake, "poison.gz", gzip.compress(b"[" * 100_000))
    land_inventory(lake, HOUR)
    first, second = curate_hour(spark, lake, HOUR), curate_hour(spark, lake, HOUR + timedelta(hours=1))
    assert first.accounted and second.accounted and second.curated_new > 0
