"""NAB scores of the streaming anomaly scorer (iot_lake.detect.nab) on the development subset.

    .venv/bin/python -m benchmarks.nab                          # the tuned defaults
    .venv/bin/python -m benchmarks.nab -p suppress=3600 -p ...  # a variant (NabParams fields)
    .venv/bin/python -m benchmarks.nab --loco                   # + leave-one-category-out (~5 min)

Runs the shared scoring tool (``../shared/tools/nab/run_detector.py``, override with
``NAB_TOOL=dir``; the corpus with ``NAB_DATA=dir``) with ``--check-causal 5``, then prints the
normalised score of the three NAB profiles (standard, reward_low_FP_rate, reward_low_FN_rate).
The tool writes NAB-format results and ``scores.json`` under --out.  Tune on the development
subset only: the rest of NAB is held out for independent evaluation.
"""

from __future__ import annotations

import ast
import os
import sys
import tempfile
from pathlib import Path

import click

from benchmarks.nab.tool import tool_dir
from benchmarks.results import Result, write

REPO = Path(__file__).resolve().parents[2]
DETECTOR = "iot_lake.detect.nab:nab_detector"


def run(params: dict | None = None, out: str | None = None, jobs: int = 2, check_causal: int = 5) -> dict:
    """Score the detector with the NAB tool; returns {profile: normalised score}."""
    tool = tool_dir()
    if not (tool / "run_detector.py").exists():
        raise click.ClickException(f"NAB tool not found under {tool} (set NAB_TOOL)")
    sys.path.insert(0, str(tool))
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    os.environ["PYTHONPATH"] = os.pathsep.join(  # the tool's worker processes import the detector
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p
    )
    import run_detector  # the shared tool

    argv = [
        "--detector",
        DETECTOR,
        "--name",
        "iot_lake_nab",
        "--jobs",
        str(jobs),
        "--out",
        out or os.path.join(tempfile.gettempdir(), "nab-results"),
    ]
    if check_causal:
        argv += ["--check-causal", str(check_causal)]
    for k, v in (params or {}).items():
        argv += ["--param", f"{k}={v!r}"]
    res = run_detector.main(argv)
    return {name: r["score"] for name, r in res.items()}


@click.command()
@click.option("-p", "--param", "params", multiple=True, help="NabParams field=value (repeatable)")
@click.option("--out", default=None, help="results directory (default: $TMPDIR/nab-results)")
@click.option("--jobs", default=2, show_default=True)
@click.option(
    "--check-causal",
    default=5,
    show_default=True,
    help="files re-run on prefixes to verify streaming honesty (0: skip)",
)
@click.option("--loco", is_flag=True, help="Also tune on two categories, score the third (benchmarks.nab.loco).")
@click.option("--json", "json_path", default=None, help="Also write the results there (for python -m benchmarks).")
def main(params, out, jobs, check_causal, loco, json_path):
    parsed = {}
    for item in params:
        k, v = item.split("=", 1)
        try:
            parsed[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            parsed[k] = v
    scores = run(parsed, out, jobs, check_causal)
    print()
    for name, s in scores.items():
        print(f"NAB {name:20s} {s:6.2f}")
    # NAB normalises each profile so that a perfect detector scores 100 and the null detector 0: that
    # scale is the reference.
    results = [
        Result(
            "nab",
            f"NAB score, {name}",
            s,
            "score",
            reference="perfect detector",
            reference_value=100.0,
            higher_is_better=True,
        )
        for name, s in scores.items()
    ]
    if loco:
        from benchmarks.nab.loco import loco as run_loco
        from benchmarks.nab.loco import table

        res = run_loco(jobs)
        print()
        print(table(res))
        for cat, by_profile in res["loco"].items():
            for name, s in by_profile.items():
                results.append(
                    Result(
                        "nab",
                        f"NAB LOCO {cat}, {name}",
                        s,
                        "score",
                        reference="in-sample (tuned defaults)",
                        reference_value=res["in_sample"][cat][name],
                        higher_is_better=True,
                        note="params tuned on the other categories"
                        if cat != "all"
                        else "each file scored with params tuned without its category",
                    )
                )
    write(json_path, results)


if __name__ == "__main__":
    main()
