"""NAB (Numenta Anomaly Benchmark) scores of iot_lake.detect.nab on the development subset."""
