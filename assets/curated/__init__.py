"""Curated layer: validated, deduplicated Delta tables built by Spark job scripts via Pipes."""
