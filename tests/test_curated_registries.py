"""Which registry snapshot a landing day is validated against (iot_lake.curated.registries)."""

from __future__ import annotations

import io
from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from iot_lake.curated.registries import RegistrySnapshots, load_registry, one_registry
from iot_lake.lake import registry_key, registry_rows
from tests.conftest import START


def _retire_in_snapshot(lake, day, device_id: str) -> None:
    """Land ``day``'s snapshot: the first snapshot without ``device_id``."""
    for table in ("devices", "device_metrics"):
        rows = [r for r in registry_rows(lake, START.date(), table) if r["device_id"] != device_id]
        out = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), out)
        lake.write_bytes(registry_key(day, table), out.getvalue())


def test_each_day_takes_the_newest_snapshot_on_or_before_it_each_loaded_and_indexed_once(landed):
    first, second = START.date(), START.date() + timedelta(days=2)
    retired = registry_rows(landed, first, "devices")[0]["device_id"]
    _retire_in_snapshot(landed, second, retired)
    days = [first + timedelta(days=n) for n in range(4)]

    snapshots = RegistrySnapshots.load(landed, reversed(days))

    assert snapshots.snapshot_of == {days[0]: first, days[1]: first, days[2]: second, days[3]: second}
    assert set(snapshots.registries) == {first, second}
    assert retired in snapshots.registries[first].sites and retired not in snapshots.registries[second].sites
    assert snapshots.registries[second] == load_registry(landed, days[3])
    lookup = snapshots.lookup()
    pairs = [lookup(day) for day in days]
    assert pairs[0][0] is pairs[1][0] and pairs[0][1] is pairs[1][1]  # one index per snapshot
    assert pairs[2][1] is pairs[3][1] and pairs[1][1] is not pairs[2][1]
    assert retired in pairs[0][1].device_ids.to_pylist() and retired not in pairs[3][1].device_ids.to_pylist()


def test_a_day_before_any_snapshot_fails_with_what_to_do(landed):
    with pytest.raises(RuntimeError, match="materialize landing/device_registry"):
        RegistrySnapshots.load(landed, [START.date(), START.date() - timedelta(days=1)])


def test_one_registry_validates_every_day_against_it(landed):
    registry = load_registry(landed, START.date())
    lookup = one_registry(registry)
    assert lookup(START.date()) is lookup(START.date() + timedelta(days=30))
    assert lookup(START.date())[0] is registry
