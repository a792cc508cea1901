"""The dbt project as Dagster sees it, and its manifest.

Nothing happens on import: ``dbt_project()`` is called by whoever builds the definitions (through
``assets.warehouse.warehouse_assets()``) and cached for the process, as dagster-open-platform does.
Loading the definitions must stay fast, so the manifest is read, not made: setup.sh parses the
project once (``dbt parse``), and it is parsed again here only when it is missing or older than a
file of the project (an edit, or a fresh clone that skipped setup.sh). Not dagster-dbt's
``prepare_if_dev``: under ``dagster dev`` that parses on every load of the definitions, and every
run worker loads them, which would add a parse (~10 s on two cores) to each run.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resources.warehouse import DBT_PROJECT_DIR, dbt_executable

if TYPE_CHECKING:
    from dagster_dbt import DbtProject


def dbt_target() -> str:
    from iot_lake.settings import load_settings

    return "prod" if load_settings().is_prod else "local"


@functools.cache
def dbt_project() -> DbtProject:
    """The project for this environment's target, its manifest parsed if stale (once per process)."""
    from dagster_dbt import DbtProject  # ~4 s to import on two cores: only when the assets are built

    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR, target=dbt_target())
    if _stale(project.manifest_path, project.target or "local"):
        parse(project)
    return project


@functools.cache
def manifest() -> dict[str, Any]:
    """The parsed manifest.json of ``dbt_project()``."""
    with dbt_project().manifest_path.open() as f:
        return json.load(f)


ADAPTERS = {"local": "duckdb", "prod": "redshift"}


def _stale(manifest: Path, target: str) -> bool:
    if not manifest.exists():
        return True
    with manifest.open() as f:
        # The adapter is in the first few hundred bytes of the manifest's metadata.
        if f'"adapter_type": "{ADAPTERS[target]}"' not in f.read(4096):
            return True  # parsed for the other target
    built = manifest.stat().st_mtime
    sources = [DBT_PROJECT_DIR / "dbt_project.yml", DBT_PROJECT_DIR / "profiles.yml"]
    for folder in ("models", "snapshots", "macros", "tests"):
        sources.extend(p for p in (DBT_PROJECT_DIR / folder).rglob("*") if p.suffix in (".sql", ".yml"))
    return any(p.stat().st_mtime > built for p in sources)


def parse(project: DbtProject) -> Path:
    """``dbt parse`` into the project's target/, offline (the profile's connection is never opened)."""
    import subprocess

    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    out = subprocess.run(
        [
            dbt_executable(),
            "parse",
            "--quiet",
            "--project-dir",
            os.fspath(project.project_dir),
            "--profiles-dir",
            os.fspath(project.profiles_dir),
            "--target",
            project.target or "local",
            "--target-path",
            os.fspath(project.target_path),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0 or not project.manifest_path.exists():
        raise RuntimeError(f"dbt parse of {project.project_dir} failed:\n{out.stdout[-4000:]}{out.stderr[-4000:]}")
    return project.manifest_path
