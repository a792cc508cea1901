"""What a benchmark measured, in one shape, so ``python -m benchmarks`` can put every figure in one table.

Each benchmark's ``main`` takes ``--json PATH`` and writes its results there as a JSON list. A result
is a measured figure next to the reference measured in the same run; the target, where the project
has one, applies to the ratio (``target_on="ratio"``) or to the figure itself (``"value"``).

``python -m benchmarks --out FILE`` writes a whole run: ``{"metadata": {...}, "results": [...]}``, the
metadata saying when, where and under what load it ran (``run_metadata``), so a page rendered from
the file (``benchmarks.report``) carries them. ``read_run`` also reads the older list-only files.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click


@dataclass
class Result:
    benchmark: str
    measure: str
    value: float
    unit: str = "s"
    reference: str | None = None  # what the figure is compared with
    reference_value: float | None = None
    target: float | None = None
    target_on: str = "ratio"  # "ratio" | "value"
    higher_is_better: bool = False
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.reference_value in (None, 0):
            return None
        return self.value / self.reference_value

    @property
    def met(self) -> bool | None:
        judged = self.ratio if self.target_on == "ratio" else self.value
        if self.target is None or judged is None:
            return None
        return judged >= self.target if self.higher_is_better else judged <= self.target


# Every benchmark takes --json FILE: python -m benchmarks collects what each writes there.
json_option = click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the results there (for python -m benchmarks).",
)


def workdir_option(name: str = "", help: str | None = None):
    """--workdir: where a benchmark caches its inputs between runs, $TMPDIR/iot-lake-bench[/name]."""
    default = Path(tempfile.gettempdir()) / "iot-lake-bench"
    return click.option(
        "--workdir",
        type=click.Path(path_type=Path),
        default=default / name if name else default,
        show_default=True,
        help=help,
    )


def write(path: str | Path | None, results: list[Result]) -> None:
    if path is None:
        return
    Path(path).write_text(json.dumps([asdict(r) for r in results], indent=1))


def _result(doc: dict[str, Any]) -> Result:
    # Whole-run files also hold the derived ``ratio`` and ``met``: recomputed, not read.
    names = {f.name for f in fields(Result)}
    return Result(**{k: v for k, v in doc.items() if k in names})


def read(path: str | Path) -> list[Result]:
    return read_run(path)[0]


def read_run(path: str | Path) -> tuple[list[Result], dict[str, Any]]:
    """(results, metadata) of a benchmark's list or of a whole run; a list has no metadata."""
    doc = json.loads(Path(path).read_text())
    if isinstance(doc, list):
        return [_result(r) for r in doc], {}
    return [_result(r) for r in doc["results"]], dict(doc.get("metadata") or {})


def write_run(path: str | Path, results: list[Result], metadata: dict[str, Any]) -> None:
    doc = {"metadata": metadata, "results": [{**asdict(r), "ratio": r.ratio, "met": r.met} for r in results]}
    Path(path).write_text(json.dumps(doc, indent=1) + "\n")


def merged(
    kept: tuple[list[Result], dict[str, Any]], new: tuple[list[Result], dict[str, Any]], order: list[str]
) -> tuple[list[Result], dict[str, Any]]:
    """A partial run laid over an earlier one: the new run's benchmarks replace theirs, the others'
    figures stay, each benchmark's entry keeping the date and commit it was measured at (the page
    shows them), in ``order``. Runs of different sizes (--quick or full) do not mix."""
    (old_results, old_meta), (new_results, new_meta) = kept, new
    if old_meta.get("quick") is not None and old_meta.get("quick") != new_meta.get("quick"):
        raise ValueError("the earlier run has other sizes (--quick or full): its figures cannot stand beside these")
    ran = {b["name"] for b in new_meta.get("benchmarks", [])} | {r.benchmark for r in new_results}
    stamp = {"date": old_meta.get("date"), "commit": old_meta.get("commit")}
    entries = [{**stamp, **b} for b in old_meta.get("benchmarks", []) if b["name"] not in ran]
    entries += [{"date": new_meta.get("date"), "commit": new_meta.get("commit"), **b} for b in new_meta["benchmarks"]]
    rank = {name: i for i, name in enumerate(order)}
    results = [r for r in old_results if r.benchmark not in ran] + new_results
    meta = {
        **new_meta,
        "benchmarks": sorted(entries, key=lambda b: rank.get(b["name"], len(rank))),
        "note": "a partial run over an earlier one: each benchmark's date and commit are in the table below",
    }
    return sorted(results, key=lambda r: rank.get(r.benchmark, len(rank))), meta


def git_commit(repo: str | Path) -> str | None:
    """The checked-out commit, with ``+dirty`` when tracked files have changed; None outside git."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def run_metadata(repo: str | Path, quick: bool, started: datetime | None = None) -> dict[str, Any]:
    """When, where and how busy: what a reader needs to weigh the figures of a run."""
    return {
        "date": (started or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "load_average_start": round(load_average(), 2),
        "quick": quick,
        "commit": git_commit(repo),
    }


def load_average() -> float:
    """Other work on the cores moves wall times: every table says how busy the machine was."""
    return os.getloadavg()[0]
