from benchmarks.realdata.run import main

main()
