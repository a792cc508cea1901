from benchmarks.sensor.run import main

main()
