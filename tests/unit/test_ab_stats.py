"""The A/B statistics and report: hand-computed delta-method variance and SRM, the interval
against a user bootstrap and against the truth of simulated tests, the report of a simulated
A/B run directory, the promotion rule's refusals, and bad input."""
import json
import math
import os

import numpy as np
import pandas as pd
import pytest

import pipeline
from feedrank.ab import CHALLENGER_ARM, CHAMPION_ARM, ABError, load, pool, report, simulate, stats
from feedrank.ab.decision import decide
from feedrank.config import AbConfig
from tests.helpers.config import TINY_CONFIG


def test_delta_method_variance_matches_a_hand_computation():
    # Three users: impressions 2, 3, 5 and clicks 1, 0, 2 -> R = 3/10.
    # Residuals c - R n = 0.4, -0.9, 0.5; squares sum to 1.22; nbar = 10/3;
    # Var = 1.22 / (m (m-1) nbar^2) = 1.22 / (3 * 2 * 100/9) = 0.0183.
    r = stats.ratio(np.array([1, 0, 2]), np.array([2, 3, 5]))
    assert r.ratio == pytest.approx(0.3) and r.users == 3
    assert r.var == pytest.approx(0.0183, rel=1e-12)
    # The textbook form (s_yy - 2 R s_xy + R^2 s_xx) / (m xbar^2) with sample (co)variances:
    # s_yy = 1, s_xx = 7/3, s_xy = 1 -> (1 - 0.6 + 0.21) / (3 * 100/9) = 0.61 * 9 / 300 = 0.0183.
    assert (1 - 2 * 0.3 * 1 + 0.09 * 7 / 3) / (3 * (10 / 3) ** 2) == pytest.approx(r.var)
    # The lift of B (R = 0.4, Var 0.0025) over A on the log scale, by hand.
    b = stats.Ratio(0.4, 0.0025, 4.0, 10.0, 3)
    lift = stats.lift(b, r)
    se = math.sqrt(0.0025 / 0.16 + 0.0183 / 0.09)
    assert lift.estimate == pytest.approx(0.4 / 0.3 - 1)
    assert lift.se_log == pytest.approx(se)
    assert lift.lo == pytest.approx(math.exp(math.log(4 / 3) - 1.959963984540054 * se) - 1)
    assert lift.hi == pytest.approx(math.exp(math.log(4 / 3) + 1.959963984540054 * se) - 1)
    lin = stats.lift(b, r, scale="linear")
    assert (lin.hi - lin.lo) / 2 == pytest.approx(1.959963984540054 * (4 / 3) * se)


def test_srm_matches_a_hand_computation():
    # 4900 champion vs 5100 challenger at share 0.5: chi2 = 2 * 100^2 / 5000 = 4, p = erfc(sqrt(2)).
    s = stats.srm(4900, 5100, 0.5)
    assert s.chi2 == pytest.approx(4.0) and s.p_value == pytest.approx(0.0455003, abs=1e-6)
    # At share 0.3: expected 7000 / 3000 of 10000; 7100 / 2900 -> 100^2/7000 + 100^2/3000.
    s = stats.srm(7100, 2900, 0.3)
    assert s.chi2 == pytest.approx(1e4 / 7000 + 1e4 / 3000)
    assert s.observed_share == pytest.approx(0.29)
    with pytest.raises(ABError, match="share"):
        stats.srm(10, 10, 1.0)


def test_the_delta_interval_agrees_with_the_user_bootstrap():
    draw = simulate.Sampler(pool.synthetic(users=3000, lift=0.08, seed=3)).draw(3000, seed=5)
    a, b = draw.arms[CHAMPION_ARM], draw.arms[CHALLENGER_ARM]
    delta = stats.lift(stats.ratio(b.clicks, b.impressions), stats.ratio(a.clicks, a.impressions))
    boot = stats.bootstrap_lift(a.clicks, a.impressions, b.clicks, b.impressions, reps=2000, seed=1)
    width = delta.hi - delta.lo
    assert boot.estimate == pytest.approx(delta.estimate)
    assert abs(boot.lo - delta.lo) < 0.08 * width and abs(boot.hi - delta.hi) < 0.08 * width
    assert boot.se_log == pytest.approx(delta.se_log, rel=0.1)


def test_the_interval_covers_the_true_lift_and_the_clustering_matters():
    """200 simulated tests on heterogeneous users: the user-clustered interval covers the pool's lift
    about 95% of the time; a per-impression (binomial) interval that ignores the users covers less."""
    sampler = simulate.Sampler(pool.synthetic(users=4000, lift=0.05, seed=7, user_sd=1.2, requests_mean=6))
    hits, naive_hits = [], []
    for seed in range(200):
        d = sampler.draw(1500, seed)
        a, b = d.arms[CHAMPION_ARM], d.arms[CHALLENGER_ARM]
        lift = stats.lift(stats.ratio(b.clicks, b.impressions), stats.ratio(a.clicks, a.impressions))
        truth = d.true_population["lift_ctr"]
        hits.append(lift.lo <= truth <= lift.hi)
        pa, pb = a.clicks.sum() / a.impressions.sum(), b.clicks.sum() / b.impressions.sum()
        se = math.sqrt((1 - pa) / (pa * a.impressions.sum()) + (1 - pb) / (pb * b.impressions.sum()))
        d_log = math.log(pb / pa)
        naive_hits.append(math.exp(d_log - 1.96 * se) - 1 <= truth <= math.exp(d_log + 1.96 * se) - 1)
    assert 0.91 <= np.mean(hits) <= 0.99, np.mean(hits)
    assert np.mean(naive_hits) < np.mean(hits) - 0.04, (np.mean(naive_hits), np.mean(hits))


@pytest.fixture(scope="module")
def ab_pool():
    return pool.synthetic(users=1500, lift=0.25, seed=11)


def _run(tmp_path, ab_pool, name="run", **kw):
    out = tmp_path / name
    true = simulate.write_run(ab_pool, str(out), seed=2, **kw)
    return str(out), true


def test_report_counts_match_the_log_and_show_the_true_lift(tmp_path, ab_pool):
    ab_dir, true = _run(tmp_path, ab_pool)
    rep = report.build(load.load(ab_dir), AbConfig())
    events = pd.concat(pd.read_parquet(os.path.join(ab_dir, "events", f)) for f in
                       sorted(os.listdir(os.path.join(ab_dir, "events"))))
    imp = events[events["event"] == "impression"]
    arm_of_request = imp.drop_duplicates("request_id").set_index("request_id")["arm"]
    for arm in (CHAMPION_ARM, CHALLENGER_ARM):
        mine = imp[imp["arm"] == arm]
        clicks = events[(events["event"] == "click") & events["request_id"].map(arm_of_request).eq(arm)]
        row = rep["arms"][arm]
        assert row["impressions"] == len(mine) and row["users"] == mine["user_id"].nunique()
        assert row["requests"] == mine["request_id"].nunique() and row["clicks"] == len(clicks)
        assert row["ctr"] == pytest.approx(len(clicks) / len(mine))
        assert row["model_versions"] == ["1" if arm == CHAMPION_ARM else "2"]
    assert rep["truth"]["lift_ctr"] == pytest.approx(true["lift_ctr"])
    assert rep["lift"]["ctr"]["lo"] < rep["lift"]["ctr"]["estimate"] < rep["lift"]["ctr"]["hi"]
    assert rep["decision"]["promote"] is True, rep["decision"]["reasons"]
    assert len(rep["timeline"]) >= 5 and rep["timeline"][-1]["lift"] == pytest.approx(rep["lift"]["ctr"]["estimate"])
    text = report.format_text(rep)
    assert f"true {100 * true['lift_ctr']:+.2f}%" in text and "decision: PROMOTE" in text
    paths = report.write(rep, ab_dir)
    stored = json.load(open(paths["json"]))
    assert stored["arms"]["challenger"]["impressions"] == rep["arms"]["challenger"]["impressions"]
    assert open(paths["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("rule, kw, ab, reason", [
    ("lift", {}, {"min_lift": 0.9}, "is not above ab.min_lift"),
    ("srm", {"drop_challenger_users": 0.2}, {}, "sample-ratio mismatch"),
    ("latency", {"latency_ms": {CHAMPION_ARM: 20.0, CHALLENGER_ARM: 400.0}}, {}, "p99 latency"),
    ("errors", {"error_rate": {CHALLENGER_ARM: 0.05}}, {}, "error rate"),
])
def test_the_decision_refuses_on_each_failing_rule_with_the_reason(tmp_path, ab_pool, rule, kw, ab, reason):
    ab_dir, _ = _run(tmp_path, ab_pool, **kw)
    rep = report.build(load.load(ab_dir), AbConfig(**ab))
    d = decide(rep, AbConfig(**ab))
    assert d.promote is False
    failed = [c for c in d.checks if not c.ok]
    assert [c.name for c in failed] == [rule], d.reasons
    assert reason in failed[0].detail


def test_without_request_records_the_guardrails_cannot_pass(tmp_path, ab_pool):
    ab_dir, _ = _run(tmp_path, ab_pool)
    for f in os.listdir(os.path.join(ab_dir, "requests")):
        os.remove(os.path.join(ab_dir, "requests", f))
    d = decide(report.build(load.load(ab_dir), AbConfig()), AbConfig())
    assert not d.promote and {c.name for c in d.checks if not c.ok} == {"latency", "errors"}
    assert "no request records" in d.reasons[0]


def test_bad_input_is_one_clear_error(tmp_path, ab_pool, capsys):
    with pytest.raises(ABError, match="does not exist"):
        load.load(str(tmp_path / "missing"))
    (tmp_path / "empty" / "events").mkdir(parents=True)
    with pytest.raises(ABError, match="no served events"):
        load.load(str(tmp_path / "empty"))
    # Every user in the champion arm: the log has no challenger impressions.
    ab_dir, _ = _run(tmp_path, ab_pool, name="no-challenger", share=1e-9)
    with pytest.raises(ABError, match="no challenger impressions"):
        report.build(load.load(ab_dir), AbConfig())
    config = TINY_CONFIG
    for where in (ab_dir, str(tmp_path / "missing")):
        rc = pipeline.main(["ab-report", "--config", config, "--ab-dir", where, "--no-mlflow"])
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert rc == 2 and len(errors) == 1, errors
    assert "does not exist" in errors[0]
    (tmp_path / "broken" / "events").mkdir(parents=True)
    (tmp_path / "broken" / "events" / "part-0.parquet").write_text("not parquet")
    with pytest.raises(ABError, match="not a readable parquet file"):
        load.load(str(tmp_path / "broken"))


def test_the_ab_config_section_is_validated(tmp_path):
    from feedrank.config import ConfigError
    from feedrank.config import load as load_config

    path = tmp_path / "c.yaml"
    for body, message in (("ab: {share: 1.5}", "ab.share must be a number in (0, 1)"),
                          ("ab: {srm_alpha: 0}", "ab.srm_alpha"),
                          ("ab: {max_p99: 3}", "unknown key(s) ['max_p99']"),
                          ("ab: {min_lift: high}", "ab.min_lift must be a number")):
        path.write_text(body)
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                           .replace("[", r"\[").replace("]", r"\]")):
            load_config(str(path))
    path.write_text("ab: {share: 0.2, min_lift: 0.01}")
    assert load_config(str(path)).ab.share == 0.2
