"""The warehouse: where the dbt project runs (target) and how its lake tables are catalogued.

Locally the target is DuckDB, a file under the lake root, and the lake tables are DuckDB views in
it; in prod the target is Redshift and the lake tables are Glue Data Catalog tables, which Athena
and a Redshift Spectrum external schema read. Either way the catalog is refreshed right before
each dbt run, so the run reads the lake tables' current files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from dagster import ConfigurableResource

from iot_lake.lake import Lake
from lib.retries import fail_fast

DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"
PARTIAL_PARSE = "partial_parse.msgpack"
KEEP_PARSE_STATES = 8  # one per warehouse file seen (tests make many): the newest few are kept


def dbt_executable() -> str:
    """The dbt installed beside this interpreter: `.venv/bin/python -m jobs.main` runs without the
    venv on PATH."""
    beside = Path(sys.executable).with_name("dbt")
    return os.fspath(beside) if beside.exists() else "dbt"


def _dbt_cli_class():
    from dagster_dbt import DbtCliResource  # imported per run: it pulls in dbt-core

    class DbtCli(DbtCliResource):
        """Two per-invocation costs of dagster-dbt that these runs do not need, seconds each on two
        cores: it runs `dbt --version` to learn dbt's version (it is the dbt-core of this venv), and
        opens a dbt adapter in this process to fetch row counts or column metadata on request
        (never requested here; the dbt process does the work)."""

        @property
        def _cli_version(self):
            from dbt.version import __version__
            from packaging import version

            return version.parse(__version__)

        def _initialize_dbt_core_adapter(self, args):
            return None

    return DbtCli


def _prune_parse_states() -> None:
    states = sorted((DBT_PROJECT_DIR / "target").glob("partial_parse-*.msgpack"), key=lambda p: p.stat().st_mtime)
    for old in states[:-KEEP_PARSE_STATES]:
        old.unlink(missing_ok=True)


def _set_environ(values: dict[str, str | None]) -> None:
    """Set each variable, or unset it where the value is None."""
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _timestamp(value: str | None) -> str | None:
    """A window bound, checked: the dbt macros put it in SQL as a literal (dbt_project/macros/window.sql)."""
    if value is None:
        return None
    try:
        datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"dbt window bound {value!r} is not an ISO timestamp") from None
    if not set(value) <= set("0123456789-:T. +"):
        raise ValueError(f"dbt window bound {value!r} is not an ISO timestamp")
    return value


class WarehouseResource(ConfigurableResource):
    target: str = "local"  # dbt target: local (DuckDB) | prod (Redshift)
    duckdb_path: str | None = None  # local: the warehouse file
    glue_database: str | None = None  # prod: the Glue database the lake tables are registered in
    region: str | None = None

    def register_lake_tables(self, lake: Lake, storage_options: dict[str, str] | None = None) -> dict:
        """Make the lake tables readable by the warehouse at their current versions."""
        if self.target == "local":
            from iot_lake.warehouse.duckdb_views import register_views

            return register_views(lake, self._duckdb_path())
        from iot_lake.aws import client
        from iot_lake.warehouse.glue import register_tables

        with fail_fast(f"registering the lake tables in Glue database {self.glue_database}"):
            return register_tables(
                lake, client("glue", self.region), self.glue_database, storage_options=storage_options
            )

    def _duckdb_path(self) -> str:
        if not self.duckdb_path:
            raise ValueError("the local warehouse needs duckdb_path")
        return self.duckdb_path

    @contextmanager
    def dbt(self, window: dict[str, str] | None = None) -> Iterator[tuple[DbtCliResource, Path]]:  # noqa: F821
        """The dbt CLI for this target and a fresh target path for one invocation.

        The profile and the window macros read environment variables when the dbt process starts,
        so they are set only meanwhile: the warehouse file locally, and the run's partition window
        (IOT_LAKE_DBT_MIN_TS/MAX_TS). The target path is seeded with the partial-parse state of the
        previous run on the same profile, so dbt re-parses only what changed.
        """
        resource = _dbt_cli_class()(
            project_dir=os.fspath(DBT_PROJECT_DIR),
            profiles_dir=os.fspath(DBT_PROJECT_DIR),
            target=self.target,
            dbt_executable=dbt_executable(),
        )
        env = {
            "IOT_LAKE_DBT_MIN_TS": _timestamp((window or {}).get("min_ts")),
            "IOT_LAKE_DBT_MAX_TS": _timestamp((window or {}).get("max_ts")),
        }
        if self.target == "local":
            env["IOT_LAKE_WAREHOUSE_PATH"] = self._duckdb_path()
        target_path = DBT_PROJECT_DIR / "target" / "runs" / uuid.uuid4().hex[:12]
        target_path.mkdir(parents=True)
        # dbt's partial-parse state is only valid for the profile it was made with (the warehouse
        # file's path is part of it), so it is kept per target and path, from the previous run.
        profile_key = hashlib.sha256(f"{self.target}|{env.get('IOT_LAKE_WAREHOUSE_PATH')}".encode()).hexdigest()[:12]
        state = DBT_PROJECT_DIR / "target" / f"partial_parse-{profile_key}.msgpack"
        if state.exists():
            shutil.copy2(state, target_path / PARTIAL_PARSE)
        before = {k: os.environ.get(k) for k in env}
        try:
            _set_environ(env)
            yield resource, target_path
            if (target_path / PARTIAL_PARSE).exists():
                shutil.copy2(target_path / PARTIAL_PARSE, state)
                _prune_parse_states()
        finally:
            _set_environ(before)
            shutil.rmtree(target_path, ignore_errors=True)
