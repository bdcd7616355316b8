"""The log's bounds and splits: implausible future timestamps, the eval cutoff
from impression times, the validation split (last days or a user hash), warm-up
days, and the fail-fast errors for a log that cannot train or judge a model."""
from __future__ import annotations

import logging
import types

import numpy as np
import pandas as pd
import pytest

from feedrank.evaluate.summary import pipeline_failure
from feedrank.events import contract
from feedrank.examples import beam_pipeline, splits
from feedrank.examples.settings import ExampleSettings
from tests.helpers import examplegen as H

DAY_S = 86_400
YEAR_2100 = 4_102_444_800


@pytest.fixture(scope="module")
def baseline(base_run):
    res = base_run   # tests/conftest.py: the shared run of the shared base_log
    return dict(res, by_split={s: H.by_impression(res["output_dir"], (s,)) for s in beam_pipeline.SPLITS})


@pytest.fixture
def log(base_log, tmp_path):
    return H.copy_log(base_log, str(tmp_path / "log"))


def _extra(ev: pd.DataFrame, kind: str, ts: int, name: str) -> pd.DataFrame:
    """A copy of the log's first event of ``kind`` with a new id and ``ts``."""
    row = ev[ev.event == kind].iloc[[0]].copy()
    return row.assign(event_id=name, ts=ts)


# --------------------------------------------------------------------------
# Bounds (pure)
# --------------------------------------------------------------------------
def _bounds(ts, **cfg):
    return splits.bounds_of(splits.histogram(np.asarray(ts, dtype=np.int64), 0),
                            ExampleSettings(**cfg))


def test_bounds_ignore_a_few_bogus_impressions():
    rng = np.random.default_rng(0)
    start = 1_700_000_000
    real = start + rng.integers(0, 10 * DAY_S, 5000)
    clean = _bounds(real)
    bogus = np.concatenate([real, [YEAR_2100, YEAR_2100 + 5, start + 40 * DAY_S, 1_000_000_000]])
    assert _bounds(bogus) == clean
    assert clean["log_end_ts"] == real.max() and clean["first_impression_ts"] == real.min()
    assert clean["future_cut_ts"] == real.max() + DAY_S
    assert clean["eval_start_ts"] == real.max() // DAY_S * DAY_S
    assert clean["valid_start_ts"] == clean["eval_start_ts"] - DAY_S
    assert clean["train_start_ts"] == real.min() // DAY_S * DAY_S
    warm = _bounds(real, warmup_days=2, eval_days=2, valid_split="user_hash")
    assert warm["train_start_ts"] == clean["train_start_ts"] + 2 * DAY_S
    assert warm["eval_start_ts"] == clean["eval_start_ts"] - DAY_S and "valid_start_ts" not in warm


def test_bounds_of_a_long_log_reach_its_end():
    """The bulk extends past the 99% quantile hour by hour: a 3-year log keeps its last days,
    and a quiet night (a gap shorter than the skew) does not cut it."""
    hours = np.arange(3 * 365 * 24, dtype=np.int64)
    ts = 1_600_000_000 + hours[(hours % 24) < 18] * 3600     # 6 quiet hours every night
    b = _bounds(ts)
    assert b["log_end_ts"] == ts.max() and b["first_impression_ts"] == ts.min()
    assert _bounds(ts, max_future_skew_s=3600)["log_end_ts"] < ts.max()   # a skew shorter than the night


def test_no_impression_gives_no_bounds():
    assert splits.bounds_of(splits.merge([{}, {}]), ExampleSettings()) == {}
    assert splits.histogram(np.array([-5, 10], dtype=np.int64), min_ts=100) == {}


# --------------------------------------------------------------------------
# Timestamps and the eval cutoff (pipeline)
# --------------------------------------------------------------------------
def test_future_timestamps_are_quarantined_and_the_eval_split_survives(log, baseline, tmp_path):
    ev = H.load(log)
    end = baseline["log_end_ts"]
    bogus = [_extra(ev, "impression", YEAR_2100, "bogus_imp"), _extra(ev, "click", YEAR_2100 + 60, "bogus_click"),
             _extra(ev, "view", end + DAY_S + 1, "late_view")]
    H.save(pd.concat([ev] + bogus, ignore_index=True), log)
    res = H.run(log, str(tmp_path / "out"))
    assert res["quarantined_by_reason"][contract.TS_IN_FUTURE] == 3 == res["quarantined"]
    assert sorted(H.quarantine(res).event_id) == ["bogus_click", "bogus_imp", "late_view"]
    for key in ("log_end_ts", "eval_start_ts", "valid_start_ts", "train_start_ts", "examples", "positives"):
        assert res[key] == baseline[key], key
    assert H.by_impression(res["output_dir"], ("eval",)) == baseline["by_split"]["eval"]


def test_eval_cutoff_follows_impressions_not_other_events(log, baseline, tmp_path):
    """Events after the last impression (within the skew) are used, and move no bound."""
    ev = H.load(log)
    end = baseline["log_end_ts"]
    late = [_extra(ev, "view", end + 20 * 3600, "late_view"), _extra(ev, "search", end + 23 * 3600, "late_search")]
    assert (end + 20 * 3600) // DAY_S > end // DAY_S          # on the next day: max_ts would move eval there
    H.save(pd.concat([ev] + late, ignore_index=True), log)
    res = H.run(log, str(tmp_path / "out"))
    assert res["quarantined"] == 0 and res["max_ts"] == end + 23 * 3600
    assert res["eval_start_ts"] == baseline["eval_start_ts"] and res["log_end_ts"] == end
    assert res["examples"] == baseline["examples"] and res["examples"]["eval"] > 0


def test_censored_eval_impressions_are_counted_and_logged(base_log, baseline, tmp_path, caplog):
    ev = H.load(base_log)
    imp_ts = ev.ts[ev.event == contract.IMPRESSION]
    n = int((imp_ts > baseline["log_end_ts"] - 1800).sum())
    assert baseline["censored_eval"] == n > 0
    with caplog.at_level(logging.INFO, logger="feedrank.examples.accounting"):
        res = H.run(base_log, str(tmp_path / "out"), label_window_s=3600)
    n_hour = int((imp_ts > baseline["log_end_ts"] - 3600).sum())
    assert res["censored_eval"] == n_hour > n
    assert res["examples"]["eval"] == len(baseline["by_split"]["eval"]) - (n_hour - n)
    assert f"{n_hour} eval impressions censored" in caplog.text


# --------------------------------------------------------------------------
# The validation split and warm-up days
# --------------------------------------------------------------------------
def test_user_hash_validation_split(base_log, baseline, tmp_path):
    res = H.run(base_log, str(tmp_path / "out"), valid_split="user_hash", valid_user_share=0.3)
    assert "valid_start_ts" not in res and res["eval_start_ts"] == baseline["eval_start_ts"]
    got = {s: {k: H.to_dict(v) for k, v in H.by_impression(res["output_dir"], (s,)).items()}
           for s in ("train", "valid")}
    users = {s: {e["user_id"][0] for e in got[s].values()} for s in got}
    assert users["train"] and users["valid"] and not users["train"] & users["valid"]
    valid_users = splits.user_uniform(np.array(sorted(users["train"] | users["valid"]), dtype=object)) < 0.3
    assert users["valid"] == set(np.array(sorted(users["train"] | users["valid"]))[valid_users])
    assert all(e["ts"][0] < res["eval_start_ts"] for s in got for e in got[s].values())
    assert set(got["train"]) | set(got["valid"]) == set(baseline["by_split"]["train"]) | set(
        baseline["by_split"]["valid"])
    assert H.by_impression(res["output_dir"], ("eval",)) == baseline["by_split"]["eval"]
    assert res["positives"]["valid"] > 0


def test_warmup_days_give_history_but_no_examples(base_log, baseline, tmp_path):
    res = H.run(base_log, str(tmp_path / "out"), warmup_days=1)
    assert res["train_start_ts"] == baseline["train_start_ts"] + DAY_S
    ev = H.load(base_log)
    imps = ev[ev.event == contract.IMPRESSION]
    assert res["impressions_warmup"] == int((imps.ts < res["train_start_ts"]).sum()) > 0
    train = H.by_impression(res["output_dir"], ("train",))
    assert train and set(train) < set(baseline["by_split"]["train"])
    # history from the warm-up day is still there: the remaining examples are unchanged
    assert all(train[k] == baseline["by_split"]["train"][k] for k in train)
    assert min(H.to_dict(v)["ts"][0] for v in train.values()) >= res["train_start_ts"]


# --------------------------------------------------------------------------
# Fail fast
# --------------------------------------------------------------------------
def _failure(log_dir: str, tmp_path, error: type) -> dict:
    with pytest.raises(error) as err:
        H.run(log_dir, str(tmp_path / "out"))
    failure = pipeline_failure(err.value)
    assert failure["error"] == error.__name__ and "\n" not in failure["message"]
    return failure


def test_empty_events_table_fails_fast(log, tmp_path):
    H.save(H.load(log).iloc[:0], log)
    failure = _failure(log, tmp_path, beam_pipeline.NoImpressionsError)
    assert failure["message"] == "event log has no events: the events table is empty"


def test_log_without_impressions_fails_fast(log, tmp_path):
    ev = H.load(log)
    H.save(ev[ev.event != contract.IMPRESSION], log)
    failure = _failure(log, tmp_path, beam_pipeline.NoImpressionsError)
    assert failure["message"].startswith("event log has no impressions:") and "click " in failure["message"]


def test_log_without_clicks_fails_fast_naming_the_splits(log, tmp_path):
    ev = H.load(log)
    H.save(ev[ev.event != contract.CLICK], log)
    failure = _failure(log, tmp_path, beam_pipeline.NoPositiveLabelsError)
    assert failure["message"].startswith("no positive label in the train, valid, eval splits (")
    assert "0 clicks in the log" in failure["message"]


def test_a_one_day_log_says_it_is_too_short_for_the_splits(log, tmp_path):
    ev = H.load(log)
    first_day = int(ev.ts.min()) // 86_400
    H.save(ev[ev.ts // 86_400 == first_day + 1], log)
    failure = _failure(log, tmp_path, beam_pipeline.LogTooShortError)
    day = pd.Timestamp((first_day + 1) * 86_400, unit="s").strftime("%Y-%m-%d")
    assert failure["message"].startswith(f"the log's impressions cover 1 day(s) ({day} to {day} UTC), but the "
                                         f"splits need 3: warmup_days 0 + at least 1 train day + valid_days 1 "
                                         f"+ eval_days 1;")


def test_split_without_clicks_is_named(log, baseline, tmp_path):
    ev = H.load(log)
    in_valid = (ev.ts >= baseline["valid_start_ts"]) & (ev.ts < baseline["eval_start_ts"])
    H.save(ev[~(in_valid & (ev.event == contract.CLICK))], log)
    failure = _failure(log, tmp_path, beam_pipeline.NoPositiveLabelsError)
    assert failure["message"].startswith("no positive label in the valid split (valid: ")


def test_the_error_surfaces_as_one_line_in_a_wrapped_chain():
    """As the local runner reports it: the project's error, not its wrapper."""
    try:
        try:
            raise beam_pipeline.NoPositiveLabelsError("no positive label in the eval split (...)")
        except beam_pipeline.NoPositiveLabelsError as inner:
            raise RuntimeError("component BehaviorExampleGen failed") from inner
    except RuntimeError as outer:
        failure = pipeline_failure(outer)
    assert failure == {"error": "NoPositiveLabelsError", "message": "no positive label in the eval split (...)"}


def test_settings_namespace_is_accepted():
    """`ExampleGenConfig.of` takes any object with the settings' attributes."""
    cfg = beam_pipeline.ExampleGenConfig.of(types.SimpleNamespace(valid_split="user_hash", warmup_days=3))
    assert cfg.valid_split == "user_hash" and cfg.warmup_days == 3 and cfg.valid_days == 1
