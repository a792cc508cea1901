"""Readers for the three sources: landing telemetry, the historical database, third-party weather."""
