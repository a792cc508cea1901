"""The code's style is part of the suite: ruff (lint and format) on the Python, sqlfluff on the dbt models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True)


def test_sqlfluff_is_clean():
    """The dbt models, rendered offline by the jinja templater (dbt_project/.sqlfluff)."""
    out = _run(str(BIN / "sqlfluff"), "lint", "dbt_project/models")
    assert out.returncode == 0, (
        "run `.venv/bin/sqlfluff fix dbt_project/models`, then review:\n" + out.stdout + out.stderr
    )


def test_ruff_lint_is_clean():
    out = _run(str(BIN / "ruff"), "check", "--output-format", "concise", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format_is_clean():
    out = _run(str(BIN / "ruff"), "format", "--check", ".")
    assert out.returncode == 0, "run `.venv/bin/ruff format .`:\n" + out.stdout + out.stderr


def test_uv_lock_matches_pyproject():
    """scripts/setup.sh installs from uv.lock: it must hold what pyproject.toml asks for."""
    out = _run(str(BIN / "uv"), "lock", "--check")
    assert out.returncode == 0, "run `.venv/bin/uv lock`:\n" + out.stdout + out.stderr
