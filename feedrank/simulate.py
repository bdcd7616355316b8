"""``python -m feedrank.simulate``: thin entry point of :mod:`feedrank.events.simulate`."""
from feedrank.events.simulate import main, simulate  # noqa: F401

if __name__ == "__main__":
    raise SystemExit(main())
