from benchmarks.backtest.run import main

main()
