"""Landing layer: what the three sources delivered, inventoried and validated, never altered."""

from assets.landing.historian import device_registry, historical_readings
from assets.landing.telemetry import landing_telemetry
from assets.landing.weather import landing_weather

landing_assets = [landing_telemetry, landing_weather, device_registry, historical_readings]
