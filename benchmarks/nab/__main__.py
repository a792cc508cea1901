from benchmarks.nab.run import main

main()
