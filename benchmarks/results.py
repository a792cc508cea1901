"""What a benchmark measured, in one shape, so ``python -m benchmarks`` can put every figure in one table.

Each benchmark's ``main`` takes ``--json PATH`` and writes its results there as a JSON list. A result
is a measured figure next to the reference measured in the same run; the target, where the project
has one, applies to the ratio (``target_on="ratio"``) or to the figure itself (``"value"``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


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


def write(path: str | Path | None, results: list[Result]) -> None:
    if path is None:
        return
    Path(path).write_text(json.dumps([asdict(r) for r in results], indent=1))


def read(path: str | Path) -> list[Result]:
    return [Result(**r) for r in json.loads(Path(path).read_text())]


def load_average() -> float:
    """Other work on the cores moves wall times: every table says how busy the machine was."""
    return os.getloadavg()[0]
