"""Make a Delta table's history look old, so a vacuum's retention (at least 24 h) can be tested now.

delta-rs judges a removed file by its remove action's ``deletionTimestamp`` and a file in no version
(a killed writer's) by its modification time: both are moved back. Checkpoints hold the removes too,
so they are dropped and the table is read from its JSON commits, which stay.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def age_table(path: str | Path, hours: float = 48.0) -> None:
    root, shift = Path(path), hours * 3600
    log = root / "_delta_log"
    for commit in sorted(log.glob("*.json")):
        actions = [json.loads(line) for line in commit.read_text().splitlines() if line.strip()]
        for action in actions:
            if "remove" in action and action["remove"].get("deletionTimestamp"):
                action["remove"]["deletionTimestamp"] -= int(shift * 1000)
        commit.write_text("".join(json.dumps(a) + "\n" for a in actions))
    for checkpoint in [*log.glob("*.checkpoint*.parquet"), log / "_last_checkpoint"]:
        checkpoint.unlink(missing_ok=True)
    then = time.time() - shift
    for file in root.rglob("*"):
        if file.is_file() and log not in file.parents:
            os.utime(file, (then, then))
