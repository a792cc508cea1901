"""A stand-in batch script for a processing job: ``scale_readings.py --factor F IN_DIR OUT_DIR``.

Multiplies every number of every ``*.txt`` under IN_DIR into the same file under OUT_DIR and
reports through Dagster Pipes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dagster_pipes import open_dagster_pipes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--factor", type=float, required=True)
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    with open_dagster_pipes() as pipes:
        files = sorted(args.source.rglob("*.txt"))
        for path in files:
            scaled = [float(v) * args.factor for v in path.read_text().split()]
            out = args.target / path.relative_to(args.source)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(" ".join(f"{v:g}" for v in scaled))
        pipes.report_asset_materialization(metadata={"files": len(files)})


if __name__ == "__main__":
    main()
