"""The device state route's answer, its slow part serialized once per version of what it is read from.

A device's metrics with their bands for now change only with a commit of the hot state or the
forecasts, or when now enters another 5-minute bucket; under load the same device is asked for many
times in between. So the metrics are kept as JSON per device, with the versions and the bucket they
were built from, and a request only checks that those are still the newest (``update_incremental``:
a commit is served by the very next request) before it adds what is its own: the time of the answer
and the device's active cases, read from the case store each time (operators change them).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, TypeAdapter
from pydantic_core import to_json

from iot_lake.api import readings
from iot_lake.api.hot_state import DeltaHotState, HotState
from iot_lake.curated.state import DEVICE_STATE

FIELDS = ("metric", "value", "unit", "event_ts", "updated_at")


class StateCache:
    """device -> (hot state version, forecasts version, 5-minute bucket) -> the metrics as JSON.

    Safe across the server's threads: a request that finds the entry out of date builds it afresh and
    replaces it (two may build the same one at once after a commit; both answers are current). The
    versions are read before the rows, so an entry is never older than its key."""

    def __init__(self, tables: readings.DeltaTables, metric_model: type[BaseModel], state: HotState):
        self.tables = tables
        self.state = state
        self.metrics = TypeAdapter(list[metric_model])
        self._held: dict[str, tuple[tuple, bytes]] = {}

    def metrics_json(self, device_id: str, now: datetime) -> bytes:
        if not isinstance(self.state, DeltaHotState):
            # DynamoDB (the Lambda) has no version to key on: each request reads it (one Query).
            return self._build(device_id, now)
        key = (
            self.tables.version(DEVICE_STATE),
            self.tables.version(readings.FORECASTS),
            readings.floor_5min(now),
        )
        held = self._held.get(device_id)
        if held is not None and held[0] == key:
            return held[1]
        body = self._build(device_id, now)
        self._held[device_id] = (key, body)
        return body

    def _build(self, device_id: str, now: datetime) -> bytes:
        bands = readings.band_now(self.tables, device_id, now)
        metrics = [
            {**{k: row[k] for k in FIELDS}, "forecast": bands.get(row["metric"])}
            for row in self.state.latest(device_id)
        ]
        return self.metrics.dump_json(self.metrics.validate_python(metrics))

    def answer(self, device_id: str, site_id: str | None, now: datetime, active: list[dict]) -> bytes:
        """The route's JSON body, in DeviceState's field order; times as pydantic writes them."""
        parts = (
            b'{"device_id":' + to_json(device_id),
            b'"site_id":' + to_json(site_id),
            b'"as_of":' + to_json(now),
            b'"metrics":' + self.metrics_json(device_id, now),
            b'"active_cases":' + to_json(active) + b"}",
        )
        return b",".join(parts)
