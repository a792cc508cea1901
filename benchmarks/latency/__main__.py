from benchmarks.latency.run import main

main()
