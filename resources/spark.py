"""SparkRunner: runs a data-plane Spark job script through Dagster Pipes.

The script and its arguments are the same everywhere; only where it runs differs. The embedded
default runs it as a local subprocess that starts Sail in-process. (EMR Serverless and Glue, with
the same script on S3, are issue 4's production half and not wired yet.)
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

from dagster import AssetExecutionContext, ConfigurableResource, PipesSubprocessClient

# Dagster's own Pipes machinery calls this preview API on every run; it is not ours to act on.
warnings.filterwarnings("ignore", message="Function `PipesMessageReader.expected_writer_count` is currently in preview")


class SparkRunner(ConfigurableResource):
    mode: str = "local"

    def run(self, context: AssetExecutionContext, module: str, args: Sequence[str]):
        if self.mode != "local":
            raise NotImplementedError(f"SparkRunner mode {self.mode!r} is not available yet; use IOT_LAKE_ENV=local")
        return PipesSubprocessClient().run(
            command=[sys.executable, "-m", module, *args],
            context=context,
            env={"IOT_LAKE_SPARK": "sail"},
        )
