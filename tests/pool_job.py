"""A run whose one step holds the lake-writes pool for a few seconds and records when: started as a
separate process by tests/test_deploy.py, twice at once, against the production instance.

    python -m tests.pool_job OUT.json    # DAGSTER_HOME: the instance
"""

import json
import sys
import time
from pathlib import Path

from dagster import Config, DagsterInstance, job, op

from lib.pools import LAKE_WRITES


class HoldConfig(Config):
    out: str
    seconds: float = 3.0


@op(pool=LAKE_WRITES)
def hold_lake_writes(config: HoldConfig) -> None:
    start = time.time()
    time.sleep(config.seconds)
    Path(config.out).write_text(json.dumps({"start": start, "end": time.time()}))


@job
def pool_job():
    hold_lake_writes()


if __name__ == "__main__":
    with DagsterInstance.get() as instance:
        result = pool_job.execute_in_process(
            instance=instance, run_config={"ops": {"hold_lake_writes": {"config": {"out": sys.argv[1]}}}}
        )
    sys.exit(0 if result.success else 1)
