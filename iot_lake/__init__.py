"""iot-lake data plane."""
