"""The online A/B test of a challenger against the champion (docs/ab.md).

* `assign`: the stable user -> arm hash the transformer assigns by (and the
  simulators predict its assignment with);
* `load`: an A/B run directory (the served log, the request records, the
  simulator's truth) -> per-impression and per-request tables;
* `stats`: ratio metrics clustered by user (delta method, bootstrap), the
  relative lift's confidence interval, the sample-ratio-mismatch test;
* `report`: per-arm metrics, lifts, guardrails, the cumulative lift over time;
* `decision`: the promotion rule (`pipeline.py promote --from-ab DIR`);
* `simulate`: repeated A/B tests drawn from a truth pool (the coverage benchmark).

The local serving stack and `make ab-demo`'s driver are in ``serving.ab``.
"""
from __future__ import annotations

CHAMPION_ARM = "champion"
CHALLENGER_ARM = "challenger"
ARMS = (CHAMPION_ARM, CHALLENGER_ARM)


class ABError(ValueError):
    """An A/B input or result the user can act on (one line)."""
