"""Anomaly detection on device telemetry: streaming, per-series scorers whose scores are in [0, 1]
and comparable across series.  `nab.py` holds the scorer tuned on the Numenta Anomaly Benchmark."""
