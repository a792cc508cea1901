"""Control-plane helpers that are not Dagster resources: retry policy and failure classification,
the compute log manager of the production instance, publishing the code a cluster runs."""
