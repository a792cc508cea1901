"""What the setups of the benchmarks that run `dagster dev` (latency, soak) do to their fresh lake
before it starts: curate past hours, register a seasonal-naive champion (training is not what they
measure, and a naive model is instant), and remove the landing objects so the running sensors see
only what the benchmark delivers; and plant a known incident in an hour they score (latency measures
its case, the soak checks it opens once under kills)."""

from __future__ import annotations

import gzip
import json
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
PARTITION = "%Y-%m-%d-%H:%M"
INCIDENT_OFFSET = 50.0  # degrees added to the re-sent records: the minutes' means move half as much


def curate_hours(instance, first: datetime, last: datetime):
    """telemetry_hourly_job over the hourly partitions [first, last], as one run; its result."""
    from definitions import defs

    job = defs().resolve_job_def("telemetry_hourly_job")
    return job.execute_in_process(
        tags={RANGE_START: first.strftime(PARTITION), RANGE_END: last.strftime(PARTITION)},
        instance=instance,
        run_config=QUIET,
        raise_on_error=True,
    )


def clear_landing(lake) -> None:
    """Remove the setup's landing objects: the fresh `dagster dev` then sees only the benchmark's."""
    for prefix in ("landing/telemetry", "landing/thirdparty/weather"):
        for obj in list(lake.list(prefix)):
            lake.delete(obj.key)


def register_naive_champion(lake, version: str, start: datetime, end: datetime) -> None:
    """Archive a seasonal naive as SageMaker would, and record it as the champion trained on [start, end)."""
    from iot_lake.forecast import registry
    from iot_lake.forecast.model import Hyperparameters, make, save

    with tempfile.TemporaryDirectory() as tmp:
        save(make("seasonal_naive", Hyperparameters()), Path(tmp) / "model", {"version": version})
        with tarfile.open(Path(tmp) / "model.tar.gz", "w:gz") as tar:
            for path in (Path(tmp) / "model").iterdir():
                tar.add(path, arcname=path.name)
        model_key = f"{registry.jobs_key()}/{version}/output/model.tar.gz"
        lake.write_bytes(model_key, (Path(tmp) / "model.tar.gz").read_bytes())
    registry.record(
        lake,
        registry.ModelVersion(
            version,
            model_key,
            "seasonal_naive",
            1.0,
            start.isoformat(),
            (end - timedelta(minutes=5)).isoformat(),
            start.date().isoformat(),
            [],
            True,
        ),
    )


@dataclass(frozen=True)
class Incident:
    """A planted incident: the object written and the series and minutes it shifts."""

    key: str
    device: str
    metric: str
    first_ts: datetime
    last_ts: datetime


def plant_incident(
    lake, hour: datetime, offset: float = INCIDENT_OFFSET, minutes: int = 10, device: str | None = None
) -> Incident:
    """Write one landing object into ``hour``: a degC temperature series' last ``minutes`` of the hour
    so far, sent again (new message ids) ``offset`` degrees up. The originals are in the hour already
    and each minute's mean takes both, so the 1-minute actuals move offset / 2. 25 up on a copy moved
    them 12.5, which a cold scorer (no deviation history yet) against a forecast biased by a day-old
    anomaly did not alert on. ``device``: that device's series (``temperature_devices``), else the
    first device's."""
    series = _first_temperature_series(_hour_records(lake, hour), device)
    since = _ts(series[-1]) - timedelta(minutes=minutes)
    shifted = [r for r in series if _ts(r) >= since.replace(second=0, microsecond=0)]
    key = f"landing/telemetry/{hour:%Y/%m/%d/%H}/iot-lake-telemetry-1-{hour:%Y-%m-%d-%H}-59-59-{uuid.uuid4()}.gz"
    lake.write_bytes(key, gzip.compress(_shifted_lines(shifted, offset).encode()))
    return Incident(key, shifted[0]["device_id"], "temperature", _ts(shifted[0]), _ts(shifted[-1]))


def _hour_records(lake, hour: datetime) -> list:
    """The JSON values of the hour's landing lines: the simulator's malformed lines skipped, and of a
    truncated object the lines before its cut (as the curated job reads them)."""
    from iot_lake.sources.telemetry import UnreadableObject, iter_lines

    records = []
    for obj in lake.list(f"landing/telemetry/{hour:%Y/%m/%d/%H}"):
        try:
            records += [r for r in map(_parsed, iter_lines(lake, obj.key)) if r is not None]
        except UnreadableObject:
            continue
    return records


def _parsed(line: bytes):
    try:
        return json.loads(line)
    except ValueError:
        return None


def temperature_devices(lake, hour: datetime) -> list[str]:
    """The devices with degC temperature readings in ``hour``'s landing objects, by id: where
    ``plant_incident`` can plant one."""
    return sorted({r["device_id"] for r in _usable_temperatures(_hour_records(lake, hour))})


def _first_temperature_series(records: list, device: str | None = None) -> list[dict]:
    """The degC temperature records of ``device``, or of the first device (by id) that has any, by
    timestamp; only UTC stamps ("Z"), which then compare as text."""
    usable = _usable_temperatures(records)
    if not usable:
        raise RuntimeError("no degC temperature record in the hour to plant an incident on")
    device = device or min(r["device_id"] for r in usable)
    return sorted((r for r in usable if r["device_id"] == device), key=lambda r: r["ts"])


def _usable_temperatures(records: list) -> list[dict]:
    return [
        r
        for r in records
        if isinstance(r, dict)
        and r.get("device_id")
        and r.get("metric") == "temperature"
        and r.get("unit") == "degC"
        and isinstance(r.get("value"), (int, float))
        and isinstance(r.get("ts"), str)
        and r["ts"].endswith("Z")
    ]


def _ts(record: dict) -> datetime:
    return datetime.fromisoformat(record["ts"].replace("Z", "+00:00"))


def _shifted_lines(records: list[dict], offset: float) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    shifted = (
        {**r, "value": round(r["value"] + offset, 4), "message_id": str(uuid.uuid4()), "ingested_at": now}
        for r in records
    )
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in shifted)
