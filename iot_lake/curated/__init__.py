"""Curated layer: validated, normalised, deduplicated telemetry (and its quarantine)."""
