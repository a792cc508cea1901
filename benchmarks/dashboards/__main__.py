from benchmarks.dashboards.run import main

main()
