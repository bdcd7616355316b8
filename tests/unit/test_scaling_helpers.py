"""The scaling benchmark's pure helpers, against hand-computed values."""
from __future__ import annotations

import pytest

from benchmarks import scaling_report as R
from benchmarks.scaling_probe import cost_summary, phase_of, shard_costs

DEMO = dict(users=20000, items=50000, days=14, seed=0, mechanisms="realistic")


def test_a_size_scales_the_users_only():
    assert R.scaled_world(4, DEMO) == dict(DEMO, users=80000)
    assert R.scaled_world(0.1, DEMO)["users"] == 2000
    assert R.scaled_world(16, DEMO)["items"] == 50000
    assert R.scaled_world(1e-9, DEMO)["users"] == 1
    with pytest.raises(ValueError):
        R.scaled_world(0, DEMO)
    assert [R.size_label(k) for k in (1, 4, 0.25)] == ["1x", "4x", "0.25x"]


def test_growth_per_4x():
    assert R.growth_per_4x(10.0, 40.0, 1_000, 4_000) == pytest.approx(4.0)
    assert R.growth_per_4x(10.0, 44.0, 1_000, 4_000) == pytest.approx(4.4)
    # 16x the events in 20x the time: 20 ** (ln 4 / ln 16) = sqrt(20) per 4x
    assert R.growth_per_4x(2.0, 40.0, 1_000, 16_000) == pytest.approx(20 ** 0.5)
    # 2x the events in 2x the time is linear: 4 per 4x
    assert R.growth_per_4x(3.0, 6.0, 500, 1_000) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        R.growth_per_4x(1.0, 2.0, 1_000, 1_000)


def test_ratios_are_per_runner_against_the_previous_size():
    rows = [dict(runner="direct", events=1000, wall_s=10.0, cpu_s=8.0, peak_rss_mb=500.0),
            dict(runner="portable", events=1000, wall_s=20.0, cpu_s=10.0, peak_rss_mb=900.0),
            dict(runner="direct", events=4000, wall_s=42.0, cpu_s=32.0, peak_rss_mb=550.0),
            dict(runner="portable", events=4000, wall_s=100.0, cpu_s=40.0, peak_rss_mb=900.0)]
    R.add_ratios(rows)
    assert "wall_s_ratio" not in rows[0] and "wall_s_ratio" not in rows[1]
    assert rows[2]["event_ratio"] == 4.0
    assert rows[2]["wall_s_ratio"] == 4.2 and rows[2]["wall_s_per_4x"] == 4.2
    assert rows[2]["cpu_s_ratio"] == 4.0 and rows[2]["peak_rss_mb_ratio"] == 1.1
    assert rows[3]["wall_s_ratio"] == 5.0 and rows[3]["peak_rss_mb_ratio"] == 1.0


def test_log_lines_mark_phases_and_shard_sizes():
    assert phase_of("1.0 feedrank.examples.beam_pipeline read events.parquet rows 0..262144: 262144 valid, "
                    "0 quarantined") == ("read", None)
    assert phase_of("1.0 x read events.parquet row group 3: starting") == ("read", None)
    assert phase_of("1.0 x event-id shard 2: 483550 events kept, 0 duplicates") == ("dedupe", 483550)
    assert phase_of("1.0 x item shard 0: starting") == ("item_history", None)
    assert phase_of("1.0 x item shard 7: 326498 events -> 306104 history rows") == ("item_history", 326498)
    assert phase_of("1.0 x user shard 4: 500 events, 200 impressions -> 1 train") == ("build", 500)
    assert phase_of("1.0 x example gen: 4329 events read, 4329 used") == ("finalize", None)
    assert phase_of("INFO:apache_beam... Running job") is None


def test_shard_costs_are_microseconds_per_event_between_a_shards_start_and_end_lines():
    lines = ["100.000 feedrank.examples.beam_pipeline event-id shard 0: starting",
             "100.500 feedrank.examples.beam_pipeline event-id shard 0: 250000 events kept, 0 duplicates",
             "101.000 feedrank.examples.beam_pipeline user shard 3: starting",
             "INFO:apache_beam... unrelated",
             "103.000 feedrank.examples.beam_pipeline user shard 3: 400000 events, 10 impressions -> 1 train",
             "104.000 feedrank.examples.beam_pipeline user shard 4: 10 events, 1 impressions",   # no start line
             "105.000 feedrank.examples.beam_pipeline item shard 1: starting",
             "105.100 feedrank.examples.beam_pipeline item shard 1: 100000 events -> 90000 history rows"]
    costs = shard_costs(lines)
    assert costs.keys() == {"dedupe", "build", "item_history"}
    assert costs["dedupe"] == [pytest.approx(2.0)]        # 0.5 s / 250k events
    assert costs["build"] == [pytest.approx(5.0)]         # 2 s / 400k events
    assert costs["item_history"] == [pytest.approx(1.0)]  # 0.1 s / 100k events
    assert cost_summary([3.0, 1.0, 2.0, 10.0]) == dict(min=1.0, median=2.5, max=10.0)
