from benchmarks.api.run import main

main()
