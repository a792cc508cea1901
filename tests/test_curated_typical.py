"""The column-wise fast path agrees with parse_line, line for line; it only ever accepts."""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict

import pyarrow as pa
import pytest

from iot_lake.curated.records import Record, parse_line
from iot_lake.curated.registries import load_registry
from iot_lake.curated.telemetry_job import PARSED, parse_objects
from iot_lake.curated.typical import RegistryIndex, parse_typical
from iot_lake.lake import TELEMETRY_PREFIX, telemetry_hour_of_key
from iot_lake.sources.telemetry import UnreadableObject, block_lines, iter_lines
from tests.conftest import START
from tests.test_curated_records import IMPERIAL, METRIC_DEVICE, REGISTRY

INDEX = RegistryIndex.of(REGISTRY)


def typical_line(**fields) -> str:
    """A line the way firmware writes it: fixed field order, no whitespace (json.dumps would add some)."""
    base = {
        "device_id": METRIC_DEVICE.device_id,
        "site_id": METRIC_DEVICE.site_id,
        "metric": "temperature",
        "value": "48.5",
        "unit": "degC",
        "ts": '"2026-11-20T10:00:00.250Z"',
        "message_id": "6f1c1a52-0c3f-4b53-a2a4-1e1a8d3f0c11",
        "ingested_at": "2026-11-20T10:00:00.900Z",
    }
    base.update(fields)
    return (
        '{{"device_id":"{device_id}","site_id":"{site_id}","metric":"{metric}","value":{value},'
        '"unit":"{unit}","ts":{ts},"message_id":"{message_id}","ingested_at":"{ingested_at}"}}'
    ).format(**base)


def fast_records(lines: list[str]) -> dict[int, dict]:
    typical = parse_typical(block_lines("\n".join(lines).encode()), INDEX)
    rows = typical.records.to_pylist()
    assert sorted([r["position"] for r in rows] + typical.rest.tolist()) == list(range(len(lines)))
    return {r.pop("position"): r for r in rows}


EDGE_CASES = [
    typical_line(),
    typical_line(value="-0"),  # the integer 0 to Python's json: no negative zero
    typical_line(value="-0.0"),
    typical_line(value="0"),
    typical_line(value="1e2"),
    typical_line(value="1.5E-3"),
    typical_line(value="150"),  # the top of the range, inclusive
    typical_line(value="150.0000001"),
    typical_line(value="-40"),
    typical_line(value="1e99"),
    typical_line(value="NaN"),
    typical_line(value="Infinity"),
    typical_line(value="007"),  # not JSON
    typical_line(value='"48.5"'),
    typical_line(ts="1763632800250"),  # epoch milliseconds
    typical_line(ts="0", ingested_at="1970-01-01T00:04:00Z"),
    typical_line(ts='"2026-11-20T15:30:00.250+05:30"'),
    typical_line(ts='"2026-11-20T05:00:00.250-05:00"'),
    typical_line(ts='"2026-11-21T09:59:00+23:59"'),
    typical_line(ts='"2026-11-20T10:00:00.123456Z"'),
    typical_line(ts='"2026-11-20T10:00:00Z"'),
    typical_line(ts='"2026-11-20T10:00:00.25Z"'),  # two fraction digits: left to parse_line
    typical_line(ts='"2026-11-20T10:00:00.250z"'),
    typical_line(ts='"2026-11-20T10:00:00.250"'),  # naive: UTC by parse_line
    typical_line(ts='"2026-11-20T24:00:00Z"'),
    typical_line(ts='"yesterday 3pm"'),
    typical_line(ts="1.7e12"),
    typical_line(ts='"2026-11-20T10:05:00.900Z"'),  # exactly the clock tolerance after ingestion
    typical_line(ts='"2026-11-20T10:05:00.901Z"'),  # 1 ms beyond it
    typical_line(ts='"2026-11-13T10:00:00.900Z"'),  # exactly the longest lateness before ingestion
    typical_line(ts='"2026-11-13T10:00:00.899Z"'),  # 1 ms beyond it
    typical_line(ingested_at="not a time"),
    typical_line(device_id="dev-9999"),
    typical_line(metric="humidity"),
    typical_line(unit="psi"),  # a unit that does not convert to degC
    typical_line(unit="degF", value="100"),
    typical_line(device_id=IMPERIAL.device_id, site_id=IMPERIAL.site_id, unit="degF", value="212"),
    typical_line(message_id=""),
    typical_line(message_id="caf\u00e9"),
    typical_line(message_id='a\\"b'),
    typical_line().replace(",", ", "),
    typical_line().replace('{"device_id"', '{"metric":"temperature","device_id"', 1),
    typical_line()[:-5],
    typical_line() + " ",
]


def test_fast_path_accepts_only_what_parse_line_curates_with_the_same_values():
    fast = fast_records(EDGE_CASES)
    assert len(fast) >= 15  # the fast path carries the typical lines
    for position, text in enumerate(EDGE_CASES):
        expected = parse_line(text, REGISTRY)
        if position in fast:
            assert isinstance(expected, Record), text
            assert _exactly(fast[position]) == _exactly(asdict(expected)), text


def _exactly(row: dict) -> dict:
    """Floats by repr, so -0.0 and 0.0 differ."""
    return {k: repr(v) if isinstance(v, float) else v for k, v in row.items()}


def _reference_rows(lake, registry, keys) -> list[dict]:
    """What parse_objects produced line by line before the fast path (each object with its landing hour)."""
    rows = []
    for key in keys:
        hour = telemetry_hour_of_key(key)
        origin = {"source_object": key, "landing_hour": hour, "landing_date": hour.date()}
        try:
            for number, raw in enumerate(iter_lines(lake, key), start=1):
                text = raw.decode("utf-8", errors="replace")
                result = parse_line(text, registry, hour)
                if isinstance(result, Record):
                    row = {**asdict(result), "status": "ok", "event_date": result.event_ts.date()}
                else:
                    row = {
                        "status": "rejected",
                        "reason": result.reason,
                        "detail": result.detail,
                        "device_id": result.device_id,
                        "metric": result.metric,
                        "raw_line": text,
                    }
                rows.append({**row, **origin, "line_number": number})
        except UnreadableObject as exc:
            rows.append({"status": "unreadable", "reason": "unreadable_object", "detail": str(exc), **origin})
    return pa.Table.from_pylist(rows, schema=PARSED).to_pylist()


def _sorted(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (r["source_object"], r["line_number"] or 0, r["status"]))


def test_parse_objects_gives_every_line_the_verdict_parse_line_gives(landed):
    registry = load_registry(landed, START.date())
    keys = [o.key for o in landed.list(TELEMETRY_PREFIX)]
    # A hand-made object too: blank and whitespace lines, CRLF, bad UTF-8, no final newline.
    odd = f"{TELEMETRY_PREFIX}/{START:%Y/%m/%d/%H}/odd.gz"
    body = (
        "\n".join([typical_line(), "", "  ", typical_line(value="-0") + "\r", EDGE_CASES[1]]).encode()
        + b"\n\xff{}\n \t"
    )
    landed.write_bytes(odd, gzip.compress(body + b"\n" + typical_line(value="1").encode()))
    keys.append(odd)
    batches = list(parse_objects(landed.url, {}, registry)([pa.record_batch({"key": keys})]))
    got = pa.Table.from_batches(batches, schema=PARSED).to_pylist()
    expected = _reference_rows(landed, registry, keys)
    assert {r["status"] for r in expected} == {"ok", "rejected", "unreadable"}
    assert [_exactly(r) for r in _sorted(got)] == [_exactly(r) for r in _sorted(expected)]


@pytest.mark.parametrize("block", [b"a\n\nb", b"a", b" \r\n{x}\n\t", b"x\n\n\n y \n", b"\n"])
def test_block_lines_are_the_lines_iter_lines_yields(block):
    assert block_lines(block).to_pylist() == [line for line in block.split(b"\n") if line.strip()]


def test_a_whole_block_with_an_impossible_date_still_parses_line_by_line():
    lines = [typical_line(), typical_line(ts='"2026-02-30T10:00:00Z"')]
    typical = parse_typical(block_lines("\n".join(lines).encode()), INDEX)
    assert typical.records.num_rows == 0 and typical.rest.tolist() == [0, 1]
    assert json.loads(lines[0])["value"] == 48.5
