"""Where the shared NAB scoring tool lives (``NAB_TOOL`` overrides it)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def tool_dir() -> Path:
    return Path(os.environ.get("NAB_TOOL", REPO.parent / "shared" / "tools" / "nab")).resolve()
