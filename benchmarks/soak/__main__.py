from benchmarks.soak.run import main

main()
