"""ML assets: forecast training data, the nightly model and the hourly batch forecasts."""
