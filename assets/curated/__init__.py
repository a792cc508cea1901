"""Curated layer: validated, deduplicated Delta tables built by Spark job scripts via Pipes."""

from assets.curated.daily import curated_features, curated_weather
from assets.curated.telemetry import curated_telemetry

curated_assets = [curated_telemetry, curated_weather, curated_features]
