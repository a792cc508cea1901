from benchmarks.forecast.run import main

main()
