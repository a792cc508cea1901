"""A stand-in training script in SageMaker's script mode: the mean of the numbers in the train channel.

Reads what script mode provides (SM_CHANNEL_TRAIN, the hyperparameters file, SM_MODEL_DIR,
SM_OUTPUT_DATA_DIR) and reports through Dagster Pipes, as the forecasting scripts will. The
hyperparameter ``fail`` makes it fail, for the failure path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dagster_pipes import open_dagster_pipes


def main() -> None:
    with open_dagster_pipes() as pipes:
        hps = json.loads((Path(os.environ["SM_INPUT_CONFIG_DIR"]) / "hyperparameters.json").read_text())
        if hps.get("fail") == "true":
            raise RuntimeError("asked to fail by the fail hyperparameter")
        values = [
            float(v)
            for path in sorted(Path(os.environ["SM_CHANNEL_TRAIN"]).rglob("*.txt"))
            for v in path.read_text().split()
        ]
        mean = sum(values) / len(values) * float(hps["scale"])
        (Path(os.environ["SM_MODEL_DIR"]) / "model.json").write_text(json.dumps({"mean": mean}))
        (Path(os.environ["SM_OUTPUT_DATA_DIR"]) / "metrics.json").write_text(json.dumps({"n": len(values)}))
        pipes.log.info(f"mean of {len(values)} values: {mean}")
        pipes.report_asset_materialization(
            metadata={"mean": mean, "values": len(values), "job": os.environ["TRAINING_JOB_NAME"]}
        )


if __name__ == "__main__":
    main()
