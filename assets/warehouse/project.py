"""The dbt project as Dagster sees it, and its manifest.

Loading the definitions must stay fast, so the manifest is read, not made, on import: setup.sh
parses the project once (``dbt parse``), ``dagster dev`` re-parses it on start to pick up edits
(``prepare_if_dev``), and a checkout without one (a fresh clone that skipped setup.sh) parses it
here once, the first time.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster_dbt import DbtProject

from iot_lake.settings import load_settings
from resources.warehouse import DBT_PROJECT_DIR, dbt_executable


def dbt_target() -> str:
    return "prod" if load_settings().is_prod else "local"


def _project() -> DbtProject:
    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR, target=dbt_target())
    project.prepare_if_dev()
    if not project.manifest_path.exists():
        parse(project)
    return project


def parse(project: DbtProject) -> Path:
    """``dbt parse`` into the project's target/, offline (the profile's connection is never opened)."""
    import subprocess

    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    out = subprocess.run([dbt_executable(), "parse", "--quiet", "--project-dir", os.fspath(project.project_dir),
                          "--profiles-dir", os.fspath(project.profiles_dir), "--target", project.target or "local",
                          "--target-path", os.fspath(project.target_path)],
                         env=env, capture_output=True, text=True)
    if out.returncode != 0 or not project.manifest_path.exists():
        raise RuntimeError(f"dbt parse of {project.project_dir} failed:\n{out.stdout[-4000:]}{out.stderr[-4000:]}")
    return project.manifest_path


dbt_project = _project()
