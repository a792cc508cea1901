"""Registry snapshots for validation: which snapshot a day's lines are checked against, loaded once.

The registry lands as a snapshot a day (landing/device_registry). Lines landed on a day are
validated against the newest snapshot landed on or before it, exactly as a run of that day alone
would. A batch that spans days may span snapshots; the batch jobs load each snapshot once on the
driver and ship the mapping to the workers, which build each snapshot's lookup index once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from iot_lake.curated.records import Registry
from iot_lake.curated.typical import RegistryIndex
from iot_lake.lake import Lake, latest_registry_day, registry_rows

Lookup = Callable[[date], tuple[Registry, RegistryIndex]]


def load_registry(lake: Lake, day: date) -> Registry:
    """The newest registry snapshot landed on or before ``day``."""
    return _read_snapshot(lake, day, latest_registry_day(lake, day))


def _read_snapshot(lake: Lake, day: date, snapshot: date | None) -> Registry:
    """The Registry of ``snapshot``, the one ``day`` is validated against (None: none landed yet)."""
    if snapshot is None:
        raise RuntimeError(f"no device registry landed on or before {day}: materialize landing/device_registry first")
    return Registry.from_rows(registry_rows(lake, snapshot, "devices"), registry_rows(lake, snapshot, "device_metrics"))


@dataclass(frozen=True)
class RegistrySnapshots:
    """Days -> the snapshot each is validated against (``snapshot_of``), and each snapshot's Registry."""

    snapshot_of: dict[date, date]
    registries: dict[date, Registry]

    @classmethod
    def load(cls, lake: Lake, days) -> RegistrySnapshots:
        """The snapshots of these days, each loaded once; fails for a day before any snapshot."""
        snapshot_of, registries = {}, {}
        for day in sorted(set(days)):
            snapshot = latest_registry_day(lake, day)
            if snapshot not in registries:
                registries[snapshot] = _read_snapshot(lake, day, snapshot)
            snapshot_of[day] = snapshot
        return cls(snapshot_of, registries)

    def lookup(self) -> Lookup:
        """For a worker: day -> its snapshot's Registry and index, each index built once (days share
        snapshots), at first use."""
        indexes: dict[date, RegistryIndex] = {}

        def of(day: date) -> tuple[Registry, RegistryIndex]:
            snapshot = self.snapshot_of[day]
            registry = self.registries[snapshot]
            if snapshot not in indexes:
                indexes[snapshot] = RegistryIndex.of(registry)
            return registry, indexes[snapshot]

        return of


def one_registry(registry: Registry) -> Lookup:
    """A lookup that validates every day against ``registry`` (the streaming scorer: one hour at a time)."""
    pair = (registry, RegistryIndex.of(registry))
    return lambda day: pair
