"""``python -m tests.job_runs ARGV_JSON...``: telemetry_job.main() once per JSON argv list, in one
process, so that a run and a re-run share one Spark start (a JVM's takes ~10 s).

A module rather than ``python -c``: pyspark-client takes a main module without a file for a doctest
run and exits.
"""

import json
import sys

from iot_lake.curated.telemetry_job import main

if __name__ == "__main__":
    for argv in sys.argv[1:]:
        main(json.loads(argv))
