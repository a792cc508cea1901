"""Real sensor data (NAB realAWSCloudwatch) through the whole pipeline, cases scored like NAB."""
