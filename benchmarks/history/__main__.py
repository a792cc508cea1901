from benchmarks.history.run import main

main()
