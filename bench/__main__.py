import sys

if sys.argv[1:2] == ["traffic"]:  # python -m bench traffic: bench/traffic.py
    from bench.traffic import main as traffic

    sys.exit(traffic(sys.argv[2:]))

from bench.run import main

sys.exit(main())
