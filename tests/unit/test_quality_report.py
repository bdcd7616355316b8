"""The quality benchmark's report: rows are ordered only where the paired interval excludes 0."""
from __future__ import annotations

from benchmarks import quality_report


def _result():
    def diff(a, b, metric, d, lo, hi):
        return {"a": a, "b": b, "metric": metric, "a_value": 0.0, "diff": d, "lo": lo, "hi": hi,
                "level": 0.95, "resamples": 500, "users": 120, "ordered": lo > 0 or hi < 0}
    return {"seeds": [0], "public": "movielens", "config": "configs/movielens.yaml",
            "paired": [diff("gbdt", "din", "auc", 0.012, 0.004, 0.020),
                       diff("item_prior", "din", "gauc", -0.003, -0.011, 0.006),
                       diff("user_prior", "din", "auc", -0.05, -0.07, -0.03)]}


def test_the_paired_table_orders_only_what_its_interval_separates():
    lines = quality_report.paired_markdown(_result()).splitlines()
    assert "500 resamples" in lines[0] and "seed 0" in lines[0]
    rows = [line for line in lines if line.startswith(("| GBDT", "| Item", "| User"))]
    assert rows == [
        "| GBDT (LightGBM) | DIN | AUC | +0.0120 | [+0.0040, +0.0200] | **a ahead** |",
        "| Item prior (post CTR so far) | DIN | GAUC | -0.0030 | [-0.0110, +0.0060] | no |",
        "| User prior (user CTR so far) | DIN | AUC | -0.0500 | [-0.0700, -0.0300] | **b ahead** |"]


def test_a_public_log_is_named_as_real_not_simulated():
    assert quality_report.world_of(_result()) == "MovieLens 100K (a real public log)"
