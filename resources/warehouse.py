"""The warehouse: where the dbt project runs (target) and how its lake tables are catalogued.

Locally the target is DuckDB, a file under the lake root, and the lake tables are DuckDB views in
it; in prod the target is Redshift and the lake tables are Glue Data Catalog tables, which Athena
and a Redshift Spectrum external schema read. Either way the catalog is refreshed right before
each dbt run, so the run reads the lake tables' current files.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
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


@functools.cache
def dbt_cli(target: str) -> DbtCliResource:  # noqa: F821
    """dagster-dbt's CLI resource for the target, one per process.

    Only public API: each DbtCliResource runs `dbt --version` once (to learn the dbt version, ~10 s
    on two cores, most of it importing dbt and every adapter), so one instance is kept and reused by
    every dbt run of the process (the main job and the tests run many). Each invocation still opens
    a dbt adapter in this process (~1 s; ~5 s for the first, which imports dbt-core), which
    dagster-dbt only uses for row counts or column metadata (never requested here): no public
    setting turns that off.
    """
    from dagster_dbt import DbtCliResource  # imported per run: it pulls in dbt-core

    return DbtCliResource(
        project_dir=os.fspath(DBT_PROJECT_DIR),
        profiles_dir=os.fspath(DBT_PROJECT_DIR),
        target=target,
        dbt_executable=dbt_executable(),
    )


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


def event_time_args(start: datetime, end: datetime) -> list[str]:
    """dbt's --event-time-start/--event-time-end for a window, checked: timestamps (dbt parses them
    as such too), whole hours (the microbatch batches' bounds), start before end. Naive UTC, as
    the warehouse keeps timestamps."""
    bounds = []
    for bound in (start, end):
        if not isinstance(bound, datetime):
            raise ValueError(f"dbt window bound {bound!r} is not a datetime")
        if bound.tzinfo is not None:
            bound = bound.astimezone(UTC).replace(tzinfo=None)
        if bound != bound.replace(minute=0, second=0, microsecond=0):
            raise ValueError(f"dbt window bound {bound} is not a whole hour")
        bounds.append(bound)
    if bounds[0] >= bounds[1]:
        raise ValueError(f"dbt window [{bounds[0]}, {bounds[1]}) is empty")
    fmt = "%Y-%m-%dT%H:%M:%S"
    return ["--event-time-start", bounds[0].strftime(fmt), "--event-time-end", bounds[1].strftime(fmt)]


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
    def dbt(self) -> Iterator[tuple[DbtCliResource, Path]]:  # noqa: F821
        """The dbt CLI for this target and a fresh target path for one invocation.

        The profile reads the warehouse file's path (locally) from the environment when the dbt
        process starts, so it is set only meanwhile. The target path is seeded with the
        partial-parse state of the previous run on the same profile, so dbt re-parses only what
        changed.
        """
        resource = dbt_cli(self.target)
        env = {}
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
