"""Curated layer: validated, deduplicated Delta tables built by Spark job scripts via Pipes."""

from assets.curated.daily import curated_features, curated_weather
from assets.curated.quality import quality_checks
from assets.curated.telemetry import curated_telemetry

curated_assets = [curated_telemetry, curated_weather, curated_features]
curated_checks = quality_checks

__all__ = ["curated_assets", "curated_checks"]
