"""Model versions and the champion, kept in the lake beside the models.

    models/forecast/training_data/<day>/          parquet snapshot a model was trained on
    models/forecast/jobs/<job>/output/model.tar.gz where the training job (SageMaker or local) put it
    models/forecast/versions/<version>.json       one per trained model: metrics, data range, URI
    models/forecast/champion.json                 the version batch forecasts use

A trained model is a challenger. It is promoted only if its backtest MASE is at least as good as
the champion's on the same hold-out day (train.py scores the champion there); the first model
is promoted because there is nothing to beat. Every version is kept, promoted or not.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from iot_lake.lake import Lake

PREFIX = "models/forecast"
CHAMPION_KEY = f"{PREFIX}/champion.json"


def training_data_key(day) -> str:
    return f"{PREFIX}/training_data/{day:%Y-%m-%d}"


def history_key(origin) -> str:
    return f"{PREFIX}/history/{origin:%Y-%m-%dT%H}"


def jobs_key() -> str:
    return f"{PREFIX}/jobs"


def version_key(version: str) -> str:
    return f"{PREFIX}/versions/{version}.json"


@dataclass
class ModelVersion:
    version: str  # the training job's name
    model_key: str  # model.tar.gz in the lake
    method: str
    mase: float
    data_first: str
    data_last: str
    trained_for: str  # the daily partition
    backtest: list[dict]
    promoted: bool = False
    reason: str = ""


def should_promote(backtest: list[dict], method: str) -> tuple[bool, str]:
    """(promote?, why) from train.py's backtest rows: the chosen method against the champion's row."""
    rows = {r["model"]: r for r in backtest}
    challenger = rows[method]["mase"]
    if "champion" not in rows:
        return True, "no champion to compare with"
    champion = rows["champion"]["mase"]
    if champion is None or (isinstance(champion, float) and math.isnan(champion)):
        return True, "the champion could not be scored on this hold-out"
    if challenger <= champion:
        return True, f"MASE {challenger:.4f} <= champion's {champion:.4f} on the same hold-out"
    return False, f"MASE {challenger:.4f} > champion's {champion:.4f} on the same hold-out"


def record(lake: Lake, version: ModelVersion) -> None:
    """Write the version's entry and, if it is promoted, make it the champion."""
    lake.write_text(version_key(version.version), json.dumps(asdict(version), indent=2))
    if version.promoted:
        lake.write_text(CHAMPION_KEY, json.dumps({"version": version.version, "model_key": version.model_key,
                                                  "data_last": version.data_last}, indent=2))


def champion(lake: Lake) -> dict | None:
    return json.loads(lake.read_bytes(CHAMPION_KEY)) if lake.exists(CHAMPION_KEY) else None
