"""Spark sessions for the job scripts: Sail in-process locally, the cluster's Spark on EMR/Glue."""
