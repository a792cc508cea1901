"""Forecasting device metrics: training data, models, training and batch-forecast entry points."""
