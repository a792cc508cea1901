"""A snapshot of what the definitions declare: assets, checks, jobs, schedules, sensors and resources.

The asset graph, the jobs' selections and the automation are easy to change by accident (a moved
module, a selection by tag, a dbt model renamed), and a change there is a change to what runs in
production. This test writes them down, sorted, in tests/snapshots/definitions.json, and fails
with a diff when they differ. When the change is meant, regenerate the file and commit it with
the change, so the review shows it:

    UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/test_definitions_snapshot.py

The snapshot is of the embedded default (IOT_LAKE_ENV unset); production differs only where
settings choose (the warehouse schedules' default status, the resources' configuration).
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetKey,
    AutomationCondition,
    Definitions,
    RetryPolicy,
    TimeWindowPartitionMapping,
    TimeWindowPartitionsDefinition,
)

SNAPSHOT = Path(__file__).resolve().parent / "snapshots" / "definitions.json"
UPDATE = "UPDATE_SNAPSHOTS"


def _key(key: AssetKey) -> str:
    return key.to_user_string()


def _partitions(partitions_def) -> dict[str, Any] | None:
    if partitions_def is None:
        return None
    out: dict[str, Any] = {"type": type(partitions_def).__name__}
    if isinstance(partitions_def, TimeWindowPartitionsDefinition):
        out.update(
            start=partitions_def.start.isoformat(),
            cron=partitions_def.cron_schedule,
            timezone=partitions_def.timezone,
            end_offset=partitions_def.end_offset,
        )
    return out


def _condition(condition: AutomationCondition | None) -> str | None:
    """Its label where it has one (the statement it was written to make), else its tree of names."""
    if condition is None:
        return None
    if condition.get_label():
        return condition.get_label()
    children = [_condition(c) for c in condition.children]
    return f"{condition.name}({', '.join(children)})" if children else condition.name


def _retry(policy: RetryPolicy | None) -> str | None:
    # max_retries and delay come from the environment (lib/retries.py): only their shape is declared here.
    if policy is None:
        return None
    backoff, jitter = (x.value if x else None for x in (policy.backoff, policy.jitter))
    return f"backoff={backoff} jitter={jitter}"


def _freshness(policy) -> str | None:
    if policy is None:
        return None
    windows = {
        name: str(window.to_timedelta())
        for name in ("fail_window", "warn_window")
        if (window := getattr(policy, name, None)) is not None
    }
    if not windows:
        return repr(policy)
    return f"{type(policy).__name__}({', '.join(f'{k}={v}' for k, v in windows.items())})"


def _mapping(mapping) -> str:
    if isinstance(mapping, TimeWindowPartitionMapping):
        return f"{type(mapping).__name__}(start_offset={mapping.start_offset}, end_offset={mapping.end_offset})"
    return type(mapping).__name__


def describe(defs: Definitions) -> dict[str, Any]:
    """What the definitions declare, as plain sorted data."""
    graph = defs.resolve_asset_graph()
    repo = defs.get_repository_def()
    assets = {}
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        backfill = node.backfill_policy
        assets[_key(key)] = {
            "group": node.group_name,
            "deps": sorted(_key(p) for p in node.parent_keys),
            "partition_mappings": {_key(p): _mapping(m) for p, m in sorted(node.partition_mappings.items())},
            "partitions": _partitions(node.partitions_def),
            "backfill_policy": None if backfill is None else str(backfill.policy_type.value),
            "automation_condition": _condition(node.automation_condition),
            "freshness_policy": _freshness(node.freshness_policy),
            "retry_policy": _retry(node.assets_def.op.retry_policy) if node.is_executable else None,
            "owners": sorted(node.owners),
            "kinds": sorted(node.kinds),
        }
    checks = {
        f"{_key(k.asset_key)}:{k.name}": {
            "asset": _key(k.asset_key),
            "blocking": graph.get_check_spec(k).blocking,
        }
        for k in sorted(graph.asset_check_keys, key=lambda k: (_key(k.asset_key), k.name))
    }
    jobs = {}
    for job in sorted(repo.get_all_jobs(), key=lambda j: j.name):
        if job.name.startswith("__"):  # Dagster's implicit asset job
            continue
        entry: dict[str, Any] = {
            "executor": job.executor_def.name,
            "op_retry_policy": _retry(job.op_retry_policy),
            "partitions": _partitions(job.partitions_def),
        }
        if job.is_asset_job:
            entry["assets"] = sorted(_key(k) for k in job.asset_layer.executable_asset_keys)
            entry["checks"] = sorted(
                f"{_key(k.asset_key)}:{k.name}" for k in job.asset_layer.asset_graph.asset_check_keys
            )
        else:
            entry["ops"] = sorted(node.name for node in job.nodes)
        jobs[job.name] = entry
    schedules = {
        s.name: {
            "cron": s.cron_schedule,
            "timezone": s.execution_timezone,
            "job": s.job_name,
            "default_status": s.default_status.value,
        }
        for s in sorted(repo.schedule_defs, key=lambda s: s.name)
    }
    sensors = {}
    for s in sorted(repo.sensor_defs, key=lambda s: s.name):
        entry = {
            "type": type(s).__name__,
            "default_status": s.default_status.value,
            "minimum_interval_seconds": s.minimum_interval_seconds,
        }
        if s.has_jobs:
            entry["jobs"] = sorted(t.job_name for t in s.targets)
        if s.asset_selection is not None:
            entry["assets"] = sorted(_key(k) for k in s.asset_selection.resolve(graph))
        sensors[s.name] = entry
    return {
        "assets": assets,
        "checks": checks,
        "jobs": jobs,
        "schedules": schedules,
        "sensors": sensors,
        "resources": {name: type(r).__name__ for name, r in sorted(defs.resources.items())},
        "executor": defs.executor.name if defs.executor else None,
    }


def changes_between(old: Any, new: Any, path: str = "") -> list[str]:
    """One line per difference, named by its path: ``jobs/warehouse_job/assets: + warehouse/dim_site``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(old.keys() | new.keys()):
            where = f"{path}/{key}" if path else key
            if key not in new:
                out.append(f"{where}: removed")
            elif key not in old:
                out.append(f"{where}: added")
            else:
                out.extend(changes_between(old[key], new[key], where))
        return out
    if isinstance(old, list) and isinstance(new, list):
        gone, came = [x for x in old if x not in new], [x for x in new if x not in old]
        return [f"{path}: - {x}" for x in gone] + [f"{path}: + {x}" for x in came] if gone or came else []
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def render(defs: Definitions) -> str:
    return json.dumps(describe(defs), indent=2, sort_keys=True) + "\n"


def test_definitions_match_the_snapshot(defs):
    current = render(defs)
    if os.environ.get(UPDATE):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(current)
        return
    if not SNAPSHOT.exists():
        pytest.fail(f"no snapshot yet: {UPDATE}=1 .venv/bin/python -m pytest tests/test_definitions_snapshot.py")
    expected = SNAPSHOT.read_text()
    if current != expected:
        changes = "\n".join(f"  {c}" for c in changes_between(json.loads(expected), json.loads(current)))
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                current.splitlines(keepends=True),
                fromfile="tests/snapshots/definitions.json (committed)",
                tofile="the definitions now",
            )
        )
        pytest.fail(
            "The definitions differ from tests/snapshots/definitions.json. If the change is meant, regenerate it "
            f"with `{UPDATE}=1 .venv/bin/python -m pytest tests/test_definitions_snapshot.py` and commit it.\n\n"
            f"What changed:\n{changes}\n\n{diff}",
            pytrace=False,
        )
