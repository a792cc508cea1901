"""Ops: the deviations of actuals from their forecasts, and the cases they open.

The automation sensor scores each hour as it lands (assets/ops/deviations.py, eager); this job is
for a range of hours at once (a backfill, the main job), which the asset does in a single run.
"""

from dagster import AssetSelection, define_asset_job

from assets.ops.deviations import DEVIATIONS_KEY
from lib.retries import RETRY_POLICY

deviations_job = define_asset_job(
    "deviations_job",
    selection=AssetSelection.assets(DEVIATIONS_KEY),
    description="Score a range of hours' actuals against their forecasts and open or update cases.",
    op_retry_policy=RETRY_POLICY,
)
