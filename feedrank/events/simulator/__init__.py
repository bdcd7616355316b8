"""The event-log simulator: a hidden world, users browsing it, the log they leave.

`world` holds the hidden taxonomy, posts, users and the true click model;
`browsing` simulates a day of sessions; `generate` writes the tables in the
contract of :mod:`feedrank.events.contract` plus the ground truth.

    python -m feedrank.events.simulator --users 20000 --items 50000 --days 14 --seed 0 --out data/demo
"""
from feedrank.events.simulator.generate import auc, main, simulate

__all__ = ["auc", "main", "simulate"]
