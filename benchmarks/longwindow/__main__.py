from benchmarks.longwindow.run import main

main()
