"""Concurrency pools: steps that must not run at the same time, across all runs.

``LAKE_WRITES`` holds every step that commits to the lake's Delta tables: the Spark jobs (curated
telemetry and its aggregates, weather, features), the delta-rs writes of batch forecasts,
deviations and the cases mirror, and the nightly maintenance (compaction, vacuum). On S3, two
writers committing to one table at once need a log store that serializes their commits (DynamoDB
for delta-spark), which production does not set up, so deploy/dagster.yaml limits the pool to one
step at a time. Locally the lake is a directory, where Delta's commit is an atomic
rename-without-replace that already serializes commits (a conflicting writer retries), so the
local instance leaves the pool unlimited: no slot can be left claimed by a killed local run.
"""

LAKE_WRITES = "lake_delta_writes"
