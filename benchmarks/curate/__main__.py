from benchmarks.curate.run import main

main()
