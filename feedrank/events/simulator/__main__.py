"""``python -m feedrank.events.simulator``: the simulator's command line."""
from feedrank.events.simulator.generate import main

if __name__ == "__main__":
    raise SystemExit(main())
