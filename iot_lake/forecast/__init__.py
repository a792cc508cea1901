"""Forecasting: the training data, the models and their forecasts."""
