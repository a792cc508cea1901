"""Landing layer: the inventory of telemetry hours, weather validation, and the assets themselves."""

from __future__ import annotations

import gzip
import json
from datetime import date, timedelta

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from assets.landing.telemetry import landing_telemetry
from assets.landing.weather import landing_weather
from iot_lake.fleet import build_fleet
from iot_lake.lake import Lake, telemetry_hour_prefix
from iot_lake.simulate.weather import weather_file
from iot_lake.sources.telemetry import inventory_hour, inventory_key
from iot_lake.sources.weather import land_weather_day, validate_file
from resources.lake import LakeResource
from tests.conftest import START, simulate, truth_objects


def test_inventory_counts_match_what_was_delivered(two_days):
    lake, _ = two_days
    truth = truth_objects(lake)
    for hour in (START, START + timedelta(hours=13), START + timedelta(hours=47)):
        inv = inventory_hour(lake, hour)
        assert len(inv.objects) == 12
        for o in inv.objects:
            t = truth[o.key]
            if t["truncated_at_byte"]:
                assert not o.readable and "truncated" in o.error
                assert o.lines < t["lines"]  # what was readable before the cut, no more
            else:
                assert o.readable and o.error is None
                assert o.lines == t["lines"]
                assert o.malformed_lines == t["bad"].get("malformed_json", 0)


def test_inventory_reports_each_unreadable_object_with_its_reason(tmp_path):
    lake, _ = simulate(tmp_path, hours=1, truncated_rate=0)
    prefix = telemetry_hour_prefix(START)
    lake.write_bytes(f"{prefix}/junk.gz", b"this is not gzip at all")
    lake.write_bytes(f"{prefix}/empty.gz", b"")
    lake.write_bytes(f"{prefix}/plain.json", b'{"device_id": "dev-0001"}\n')
    good = gzip.compress(b'{"a": 1}\n[1, 2]\n{"b": 2}\n')
    lake.write_bytes(f"{prefix}/cut.gz", good + gzip.compress(b'{"c": 3}\n')[:12])  # 2nd member cut short
    inv = inventory_hour(lake, START)
    reasons = {o.key.rsplit("/", 1)[1]: o.error for o in inv.unreadable}
    assert reasons["junk.gz"] == "not gzip (bad magic bytes)"
    assert reasons["empty.gz"] == "empty object"
    assert reasons["plain.json"] == "not a .gz object"
    assert "truncated" in reasons["cut.gz"] or "Error" in reasons["cut.gz"]
    cut = next(o for o in inv.objects if o.key.endswith("cut.gz"))
    assert (cut.records, cut.malformed_lines) == (2, 1)  # the complete first member is still counted
    assert inv.totals["unreadable_objects"] == 4 and inv.totals["objects"] == 16


@pytest.mark.parametrize(
    ("defect", "ok", "message"),
    [
        (None, True, None),
        ("missing_column", False, "missing column(s): temperature_c"),
        ("not_a_number", False, "column temperature_c has a value of the wrong type"),
        ("garbled", False, None),
        ("out_of_range", True, "1 row(s) with humidity_pct outside [0.0, 100.0]"),
    ],
)
@pytest.mark.parametrize("site_index", [0, 1], ids=["csv", "json"])
def test_weather_validation_reports_each_defect(tmp_path, monkeypatch, defect, ok, message, site_index):
    fleet = build_fleet(20, seed=1)
    site = fleet.sites[site_index]
    from iot_lake.simulate import weather as weather_sim

    monkeypatch.setattr(weather_sim, "DEFECTS", (defect,) if defect else weather_sim.DEFECTS)
    f = weather_file(fleet, site, date(2026, 11, 20), bad_rate=1.0 if defect else 0.0)
    assert f.defect == defect
    lake = Lake(str(tmp_path))
    lake.write_bytes(f.key, f.body)
    report, table = validate_file(lake, f.key)
    assert report.ok is ok and report.format == ("csv" if site_index == 0 else "json")
    if message:
        assert any(message in e for e in report.errors), report.errors
    if ok:
        assert table.num_rows == report.rows == 24 - report.rejected_rows
        assert table.column("site_id").to_pylist() == [site.site_id] * table.num_rows
    else:
        assert table is None and report.errors


def test_weather_day_keeps_good_files_when_one_is_bad(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write_bytes(
        "landing/thirdparty/weather/2026/11/20/weather_site-01_20261120.csv",
        b"site_id,observed_at,temperature_c,humidity_pct,wind_speed_ms,precipitation_mm\n"
        b"site-01,2026-11-20T00:00:00Z,4.5,80,3.1,0\nsite-01,2026-11-20T01:00:00Z,4.1,82,2.9,0.2\n",
    )
    lake.write_bytes("landing/thirdparty/weather/2026/11/20/weather_site-02_20261120.json", b'{"observations": 5}')
    day = land_weather_day(lake, date(2026, 11, 20))
    assert day.table.num_rows == 2
    assert [f.key.rsplit("/", 1)[1] for f in day.bad_files] == ["weather_site-02_20261120.json"]
    assert "not a list of observations" in day.bad_files[0].errors[0]
    assert json.loads(lake.read_bytes("landing/_inventory/weather/2026/11/20.json"))["rows"] == 2


def test_landing_assets_materialize_with_inventory_metadata_and_checks(tmp_path):
    lake, _ = simulate(tmp_path / "lake", hours=24, devices=10, truncated_rate=0.2, bad_weather_rate=1.0)
    resources = {"lake": LakeResource(root=lake.url)}
    instance = DagsterInstance.ephemeral()
    hour_key = "2026-11-20-05:00"
    result = materialize([landing_telemetry], partition_key=hour_key, resources=resources, instance=instance)
    assert result.success
    mat = result.asset_materializations_for_node("landing__telemetry")[0]
    expected = inventory_hour(lake, START + timedelta(hours=5))
    assert mat.partition == hour_key
    assert mat.metadata["records"].value == expected.totals["records"] > 0
    assert mat.metadata["unreadable_objects"].value == len(expected.unreadable) > 0
    assert len(mat.metadata["objects_table"].value.records) == 12
    assert lake.exists(inventory_key(START + timedelta(hours=5)))
    check = result.get_asset_check_evaluations()[0]
    assert check.check_name == "objects_readable" and check.passed is False

    # A range of hours in one run: each hour's materialization lists the window's unreadable objects,
    # not its every object (the inventories in the lake have those).
    window = {"dagster/asset_partition_range_start": "2026-11-20-00:00", "dagster/asset_partition_range_end": hour_key}
    result = materialize([landing_telemetry], resources=resources, instance=instance, tags=window)
    mats = result.asset_materializations_for_node("landing__telemetry")
    bad = [o.key for h in range(6) for o in inventory_hour(lake, START + timedelta(hours=h)).unreadable]
    assert len(mats) == 6 and bad and mats[0].metadata["hours"].value == 6
    assert [r.data["key"] for r in mats[-1].metadata["objects_table"].value.records] == [
        k.split("/", 2)[-1] for k in bad
    ]

    result = materialize([landing_weather], partition_key="2026-11-20", resources=resources, instance=instance)
    assert result.success
    mat = result.asset_materializations_for_node("landing__weather")[0]
    assert mat.metadata["files"].value == 1 and mat.metadata["problems"].value != "none"
    assert result.get_asset_check_evaluations()[0].passed is False
    latest = instance.get_latest_materialization_event(AssetKey(["landing", "weather"]))
    assert latest is not None
