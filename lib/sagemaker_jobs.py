"""What a SageMaker job is, whichever runs it: the local twin (resources/sagemaker.py) or SageMaker
itself (resources/sagemaker_aws.py). Both import it from here, so neither imports the other's module.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_PLACEHOLDER = re.compile(r"\{(input|output):([A-Za-z0-9_-]+)\}")


@dataclass
class JobRun:
    """What a finished job left behind, for the asset's metadata."""

    job_name: str
    outputs: dict[str, str]  # name -> lake key (training: "model" and "output" archives)
    logs: str  # where its logs are: a local file, or the CloudWatch log stream
    pipes_results: list = field(default_factory=list)  # what the script reported through Pipes


def job_name(prefix: str, partition: str | None = None) -> str:
    """A SageMaker job name (<= 63 characters of [a-zA-Z0-9-]), unique per call."""
    stem = re.sub(r"[^a-zA-Z0-9-]+", "-", f"{prefix}-{partition}" if partition else prefix).strip("-")
    return f"{stem[:50]}-{os.urandom(4).hex()}"


def hyperparameter_strings(hyperparameters: Mapping[str, Any]) -> dict[str, str]:
    """SageMaker hands every hyperparameter to the script as a string (JSON for non-strings)."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in hyperparameters.items()}


def resolve_arguments(
    arguments: Sequence[str], inputs: Mapping[str, str], outputs: Mapping[str, str], root: str
) -> list[str]:
    """Replace ``{input:NAME}`` / ``{output:NAME}`` with the job's directories under ``root``."""

    def directory(m: re.Match) -> str:
        kind, name = m.groups()
        if name not in (inputs if kind == "input" else outputs):
            raise ValueError(f"argument names {m.group(0)} but the job has no {kind} {name!r}")
        return f"{root}/processing/{kind}/{name}"

    return [_PLACEHOLDER.sub(directory, a) for a in arguments]
