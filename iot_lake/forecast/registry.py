"""Model versions and the champion, kept in the lake beside the models.

    models/forecast/training_data/<day>/          parquet snapshot a model was trained on
    models/forecast/jobs/<job>/output/model.tar.gz where the training job (SageMaker or local) put it
    models/forecast/versions/<version>.json       one per trained model: metrics, data range, URI
    models/forecast/champion.json                 the version batch forecasts use
    models/forecast/metrics/                      Delta, one row per version: what the warehouse reads

A trained model is a challenger. It is promoted only if its backtest MASE is at least as good as
the champion's on the same hold-out day (train.py scores the champion there); the first model
is promoted because there is nothing to beat. Every version is kept, promoted or not.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import BinaryIO

import pyarrow as pa

from iot_lake.lake import Lake

PREFIX = "models/forecast"
# The training job's hyperparameter carrying the champion archive's registered sha256.
CHAMPION_SHA256 = "champion_sha256"
CHAMPION_KEY = f"{PREFIX}/champion.json"
# The versions' metrics as a Delta table: the warehouse cannot read the JSON entries.
METRICS_KEY = f"{PREFIX}/metrics"
NAIVE_METHODS = ("seasonal_naive", "seasonal_naive_weekly")
METRICS_SCHEMA = pa.schema(
    [
        ("version", pa.string()),
        ("trained_for", pa.date32()),
        ("trained_at", pa.timestamp("us")),  # naive UTC, as the warehouse's timestamps are
        ("method", pa.string()),
        ("mase", pa.float64()),
        ("coverage_80", pa.float64()),
        ("coverage_95", pa.float64()),
        ("naive_method", pa.string()),
        ("naive_mase", pa.float64()),
        ("promoted", pa.bool_()),
        ("reason", pa.string()),
    ]
)


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
    mase: float | None  # None: a fallback nothing could be scored for
    data_first: str
    data_last: str
    trained_for: str  # the daily partition
    backtest: list[dict]
    promoted: bool = False
    reason: str = ""
    freq: str = "5min"  # the series' resolution: batch forecasts need history at the same one
    method_reason: str = ""  # why this method: the backtest winner, or the fallback with too little history
    skipped: dict[str, str] = field(default_factory=dict)  # candidate -> why it could not train (e.g. history)
    sha256: str | None = None  # of model.tar.gz when registered; checked before it is unpickled


def should_promote(backtest: list[dict], method: str, champion_mase: float | None = None) -> tuple[bool, str]:
    """(promote?, why) from train.py's backtest rows: the chosen method against the champion's row.

    Without a champion row (the champion was fitted on this very hold-out, e.g. a re-run of its
    day) the champion's own recorded MASE stands in for it.
    """
    rows = {r["model"]: r for r in backtest}
    if method not in rows:  # the fallback of a fleet too young to score anything
        if "champion" in rows or champion_mase is not None:
            return False, f"{method} is an unscored fallback: the scored champion stays"
        return True, f"no champion to compare with ({method} is an unscored fallback)"
    challenger = rows[method]["mase"]
    if "champion" in rows:
        # train.py scores the champion only on origins after its own data; the challenger's MASE on
        # exactly those origins is in the champion's row.
        champion, where = rows["champion"]["mase"], "on the same hold-out"
        if rows["champion"].get("challenger_mase") is not None:
            challenger, where = rows["champion"]["challenger_mase"], "on the same origins"
    elif champion_mase is not None:
        champion, where = champion_mase, "as recorded on its own hold-out"
    else:
        return True, "no champion to compare with"
    if challenger <= champion:
        return True, f"MASE {challenger:.4f} <= champion's {champion:.4f} {where}"
    return False, f"MASE {challenger:.4f} > champion's {champion:.4f} {where}"


def chosen_row(backtest: list[dict], method: str) -> dict:
    """The chosen method's backtest row; empty for a fallback nothing could be scored for."""
    return next((r for r in backtest if r["model"] == method), {})


def metrics_row(version: ModelVersion, trained_at: datetime | None = None) -> dict:
    """The version's row of the metrics table: the chosen method's scores and the better naive's."""
    chosen = chosen_row(version.backtest, version.method)
    naive = min(
        (r for r in version.backtest if r["model"] in NAIVE_METHODS and r.get("mase") is not None),
        key=lambda r: r["mase"],
        default={},
    )
    trained_at = trained_at or datetime.now(UTC)
    return {
        "version": version.version,
        "trained_for": date.fromisoformat(version.trained_for),
        "trained_at": trained_at.astimezone(UTC).replace(tzinfo=None),
        "method": version.method,
        "mase": _number(version.mase),
        "coverage_80": _number(chosen.get("coverage_80")),
        "coverage_95": _number(chosen.get("coverage_95")),
        "naive_method": naive.get("model"),
        "naive_mase": _number(naive.get("mase")),
        "promoted": version.promoted,
        "reason": version.reason,
    }


def _number(value) -> float | None:
    """NaN (a score the backtest could not give: no calibrated day) is stored as null: SQL engines
    sort NaN above every number, so the warehouse's range tests would fail on it."""
    return None if value is None or math.isnan(value) else float(value)


def write_metrics(lake: Lake, row: dict, storage_options: dict[str, str] | None = None) -> None:
    """Upsert the row by version: a re-run of the same training replaces its row, never adds one."""
    from deltalake import DeltaTable, write_deltalake
    from deltalake.exceptions import TableNotFoundError

    source = pa.Table.from_pylist([row], METRICS_SCHEMA)
    uri = lake.uri(METRICS_KEY)
    try:
        table = DeltaTable(uri, storage_options=storage_options)
    except TableNotFoundError:
        write_deltalake(uri, source, storage_options=storage_options)
        return
    (
        table.merge(source, predicate="t.version = s.version", source_alias="s", target_alias="t")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )


def record(lake: Lake, version: ModelVersion, storage_options: dict[str, str] | None = None) -> None:
    """Write the version's entry and its metrics row and, if it is promoted, make it the champion."""
    lake.write_text(version_key(version.version), json.dumps(asdict(version), indent=2))
    write_metrics(lake, metrics_row(version), storage_options)
    if version.promoted:
        lake.write_text(
            CHAMPION_KEY,
            json.dumps(
                {
                    "version": version.version,
                    "model_key": version.model_key,
                    "data_last": version.data_last,
                    "freq": version.freq,
                    "sha256": version.sha256,
                },
                indent=2,
            ),
        )


def sha256_of(f: BinaryIO) -> str:
    """The sha256 of what an open binary file holds, read in blocks (archives can be large)."""
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def archive_sha256(lake: Lake, key: str) -> str:
    """The sha256 of a model archive in the lake, as registered; model.load checks it the same way."""
    with lake.open(key) as f:
        return sha256_of(f)


def champion(lake: Lake) -> dict | None:
    return json.loads(lake.read_bytes(CHAMPION_KEY)) if lake.exists(CHAMPION_KEY) else None


def version(lake: Lake, name: str) -> dict:
    return json.loads(lake.read_bytes(version_key(name)))
