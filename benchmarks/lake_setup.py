"""What the setups of the benchmarks that run `dagster dev` (latency, soak) do to their fresh lake
before it starts: curate past hours, register a seasonal-naive champion (training is not what they
measure, and a naive model is instant), and remove the landing objects so the running sensors see
only what the benchmark delivers."""

from __future__ import annotations

import tarfile
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
PARTITION = "%Y-%m-%d-%H:%M"


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
