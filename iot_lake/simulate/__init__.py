"""Telemetry simulator: what AWS IoT Core -> Kinesis Data Firehose would land, with known truth."""
