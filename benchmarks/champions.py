"""A seasonal-naive champion registered in a benchmark's lake, for benchmarks that exercise the runs
after training (latency, soak): training is not what they measure, and a naive model is instant."""

from __future__ import annotations

import tarfile
import tempfile
from datetime import datetime, timedelta
from pathlib import Path


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
