"""The soak benchmark: `dagster dev`'s webserver and daemon with the simulator following in accelerated
time, the daemon and run workers killed (-9) at random moments (benchmarks/soak/run.py)."""
