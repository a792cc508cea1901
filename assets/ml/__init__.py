"""ML assets: forecast training data, the nightly model and the hourly batch forecasts."""

from assets.ml.forecast import batch_forecast, forecast_model, forecast_training_data

ml_assets = [forecast_training_data, forecast_model, batch_forecast]

__all__ = ["ml_assets"]
