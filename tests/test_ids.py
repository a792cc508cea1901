"""Hostile device, site and metric ids: rejected with an error naming them before they reach a path,
a key, a query or a resource name; as data (a registry row, a quarantined line) they survive intact."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from iot_lake.cases.model import case_key
from iot_lake.cases.sinks import CloudWatchSink
from iot_lake.curated.records import REASONS, Registry, Rejection, parse_line
from iot_lake.curated.typical import RegistryIndex, parse_typical
from iot_lake.ids import InvalidIdentifier, id_problem, validate_id
from iot_lake.sources.telemetry import block_lines
from iot_lake.sources.weather import RANGES, valid_rows_mask
from tests.test_curated_records import METRIC_DEVICE, REGISTRY
from tests.test_curated_typical import typical_line

HOSTILE = [
    "../../landing/telemetry",
    "dev/../../x",
    "..",
    "dev-01/..",
    "a/b",  # path traversal
    "dev'; DROP TABLE readings; --",
    'dev"1',
    "dev`1",  # quotes, SQL
    "dev;1",
    "dev\n1",
    "dev\r\n1",
    "dev\t1",
    "dev 1",
    "dev\x00",
    "dev|1",  # separators, control characters
    "",
    "-dev",
    ".",
    "x" * 65,
    "dév-1",
]
GOOD = ["dev-0001", "site-01", "SITE_2", "plant.a:line-3", "9"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_ids_are_refused_with_an_error_naming_them(value):
    for kind in ("device", "site", "metric"):
        with pytest.raises(InvalidIdentifier) as err:
            validate_id(kind, value)
        assert repr(value) in str(err.value) and f"invalid {kind} id" in str(err.value)


def test_ordinary_ids_pass():
    assert [validate_id("device", v) for v in GOOD] == GOOD
    assert validate_id("metric", "temperature") == "temperature"
    assert id_problem("metric", "Temperature") is not None  # metrics are lower-case names
    assert "not a string" in id_problem("device", 7)


def test_invalid_id_is_a_quarantine_reason_checked_before_the_registry():
    assert REASONS.index("invalid_id") < REASONS.index("unknown_device")


@pytest.mark.parametrize("value", ["../../curated/x", "dev'; DROP TABLE t; --", "dev\n1", "dev;1"])
def test_lines_with_hostile_ids_are_quarantined_even_if_the_registry_has_them(value):
    # A registry that itself carries the hostile id (it comes from an external database).
    rule = REGISTRY.rules[(METRIC_DEVICE.device_id, "temperature")]
    registry = Registry(
        sites={**REGISTRY.sites, value: METRIC_DEVICE.site_id}, rules={**REGISTRY.rules, (value, "temperature"): rule}
    )
    line = json.dumps(
        {
            "device_id": value,
            "metric": "temperature",
            "value": 20.0,
            "unit": "degC",
            "ts": "2026-11-20T10:00:00Z",
            "message_id": "m-1",
        }
    )
    result = parse_line(line, registry)
    assert isinstance(result, Rejection) and result.reason == "invalid_id"
    assert repr(value) in result.detail and result.device_id == value  # kept as data, for the quarantine

    bad_metric = parse_line(
        line.replace('"temperature"', '"temp;erature"').replace(json.dumps(value), '"dev-0001"'), registry
    )
    assert bad_metric.reason == "invalid_id" and "'temp;erature'" in bad_metric.detail


def test_the_typical_fast_path_never_accepts_a_hostile_id():
    hostile = "dev;0001"
    registry = Registry(
        sites={**REGISTRY.sites, hostile: METRIC_DEVICE.site_id},
        rules={**REGISTRY.rules, (hostile, "temperature"): REGISTRY.rules[(METRIC_DEVICE.device_id, "temperature")]},
    )
    lines = [typical_line(), typical_line(device_id=hostile)]
    typical = parse_typical(block_lines("\n".join(lines).encode()), RegistryIndex.of(registry))
    assert [r["position"] for r in typical.records.to_pylist()] == [0]
    assert typical.rest.tolist() == [1]  # left to parse_line, which rejects it as invalid_id


def test_a_registry_site_id_that_is_hostile_quarantines_its_lines():
    registry = Registry(sites={**REGISTRY.sites, METRIC_DEVICE.device_id: "../site"}, rules=REGISTRY.rules)
    line = json.dumps(
        {
            "device_id": METRIC_DEVICE.device_id,
            "metric": "temperature",
            "value": 20.0,
            "unit": "degC",
            "ts": "2026-11-20T10:00:00Z",
            "message_id": "m-1",
        }
    )
    result = parse_line(line, registry)
    assert result.reason == "invalid_id" and "'../site'" in result.detail


def test_weather_rows_with_hostile_site_ids_are_rejected_with_a_reason():
    table = pa.table(
        {
            "site_id": ["site-01", "../../x", "s'1; --", None],
            "observed_at": pa.array([datetime(2026, 11, 20, tzinfo=UTC)] * 4, pa.timestamp("us", tz="UTC")),
            **{name: [10.0] * 4 for name in RANGES},
        }
    )
    mask, reasons = valid_rows_mask(table)
    assert mask.to_pylist() == [True, False, False, False]
    assert reasons == ["3 row(s) with a missing or invalid site id (iot_lake.ids)"]


def test_case_keys_and_alarm_names_refuse_hostile_ids():
    start = datetime(2026, 11, 20, tzinfo=UTC)
    assert case_key("dev-0001", "temperature", start).startswith("dev-0001|temperature|")
    with pytest.raises(InvalidIdentifier, match="invalid device id 'dev|x'"):
        case_key("dev|x", "temperature", start)
    sink = CloudWatchSink("us-east-1")
    with pytest.raises(InvalidIdentifier, match=r"invalid metric id 'temperature\\n'"):
        sink.alarm_definition("dev-0001", "temperature\n")


def test_dbt_window_bounds_must_be_timestamps_before_they_reach_dbt():
    from datetime import datetime

    from resources.warehouse import event_time_args

    start, end = datetime(2026, 11, 20, 5), datetime(2026, 11, 20, 6)
    assert event_time_args(start, end) == [
        "--event-time-start",
        "2026-11-20T05:00:00",
        "--event-time-end",
        "2026-11-20T06:00:00",
    ]
    for hostile in ("2026-11-20' or '1'='1", "2026-11-20;drop table x", "../2026"):
        with pytest.raises(ValueError, match="is not a datetime"):
            event_time_args(hostile, end)
    with pytest.raises(ValueError, match="not a whole hour"):
        event_time_args(start.replace(minute=30), end)
    with pytest.raises(ValueError, match="is empty"):
        event_time_args(end, start)
