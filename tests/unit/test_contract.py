"""The event-log contract: schema errors, one test per quarantine reason,
the timestamp floor, the bad-fraction threshold, CSV / multi-part input and
sparse logs."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from feedrank import features as F
from feedrank.events import contract, io, validate
from feedrank.examples import beam_pipeline
from tests.helpers import examplegen as H


@pytest.fixture(scope="module")
def baseline(base_run):
    res = base_run   # tests/conftest.py: the shared run of the shared base_log
    return dict(res, examples=H.by_impression(res["output_dir"]))


@pytest.fixture
def log(base_log, tmp_path):
    return H.copy_log(base_log, str(tmp_path / "log"))


def _accounting_ok(res, n_read):
    assert res["events_read"] == n_read
    assert res["events_read"] == res["events_used"] + res["quarantined"]
    assert res["quarantined"] == sum(res["quarantined_by_reason"].values())
    with open(os.path.join(res["quarantine_dir"], "summary.json")) as f:
        assert json.load(f)["events_read"] == n_read


# --------------------------------------------------------------------------
# Schema errors
# --------------------------------------------------------------------------
def test_missing_table(log):
    os.remove(os.path.join(log, "users.parquet"))
    with pytest.raises(io.ContractError, match="table 'users' is missing"):
        beam_pipeline.run(log, log + "/o", log + "/q", spec=F.BUILTIN)


def test_missing_required_column(log):
    H.save(H.load(log).drop(columns=["ts"]), log)
    with pytest.raises(io.ContractError, match="table 'events'.*missing required column 'ts'"):
        io.check_log(log)
    items = H.load(log, "items").drop(columns=["category_id"])
    H.save(items, log, "items")
    with pytest.raises(io.ContractError, match="'items'.*'category_id'"):
        io.check_table(log, "items")


def test_wrong_column_type(log):
    items = H.load(log, "items")
    items["region_id"] = np.arange(len(items))
    H.save(items, log, "items")
    with pytest.raises(io.ContractError, match="'items'.*column 'region_id' has wrong type"):
        io.check_log(log)


# --------------------------------------------------------------------------
# One bad row per reason
# --------------------------------------------------------------------------
def _first(ev, kind):
    return int(np.flatnonzero(ev.event.to_numpy() == kind)[3])


def _unknown_event(ev):
    i = _first(ev, "click")
    ev.loc[i, "event"] = "teleport"
    return ev, ev.event_id[i]


def _missing_user(ev):
    i = _first(ev, "impression")
    ev.loc[i, "user_id"] = None
    return ev, ev.event_id[i]


def _missing_event_id(ev):
    i = _first(ev, "view")
    ev.loc[i, "event_id"] = ""
    return ev, ""


def _missing_item(ev):
    i = _first(ev, "click")
    ev.loc[i, "item_id"] = ""
    return ev, ev.event_id[i]


def _bad_ts_text(ev):
    i = _first(ev, "search")
    ev["ts"] = ev["ts"].astype(str)
    ev.loc[i, "ts"] = "yesterday"
    return ev, ev.event_id[i]


def _bad_ts_nan(ev):
    i = _first(ev, "impression")
    ev["ts"] = ev["ts"].astype(float)
    ev.loc[i, "ts"] = np.nan
    return ev, ev.event_id[i]


def _duplicate(ev):
    row = ev.iloc[[_first(ev, "impression")]].copy()
    row["ts"] += 5          # a later copy: the original (earlier ts) is kept
    return pd.concat([row, ev], ignore_index=True), row.event_id.iloc[0]


def _negative_ts(ev):
    i = _first(ev, "impression")
    ev.loc[i, "ts"] = -5
    return ev, ev.event_id[i]


def _ts_before_floor(ev):
    i = _first(ev, "click")
    ev.loc[i, "ts"] = -1   # one second before the default floor, 0
    return ev, ev.event_id[i]


def _unknown_item(ev):
    i = _first(ev, "conversion")
    ev.loc[i, "item_id"] = "i_not_a_post"
    return ev, ev.event_id[i]


CASES = {
    "unknown_event": (_unknown_event, contract.UNKNOWN_EVENT),
    "missing_user_id": (_missing_user, contract.MISSING_ID),
    "missing_event_id": (_missing_event_id, contract.MISSING_ID),
    "missing_item_id": (_missing_item, contract.MISSING_ID),
    "unparsable_ts_text": (_bad_ts_text, contract.BAD_TS),
    "unparsable_ts_nan": (_bad_ts_nan, contract.BAD_TS),
    "duplicate_event_id": (_duplicate, contract.DUPLICATE_ID),
    "item_not_in_items": (_unknown_item, contract.UNKNOWN_ITEM),
    "negative_ts": (_negative_ts, contract.TS_BEFORE_FLOOR),
    "ts_before_floor": (_ts_before_floor, contract.TS_BEFORE_FLOOR),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_quarantine_reason(case, log, tmp_path):
    mutate, reason = CASES[case]
    ev, bad_id = mutate(H.load(log))
    H.save(ev, log)
    res = H.run(log, str(tmp_path / "out"))
    _accounting_ok(res, len(ev))
    assert res["quarantined_by_reason"] == {r: int(r == reason) for r in contract.REASONS}
    q = H.quarantine(res)
    assert list(q.reason) == [reason] and q.event_id.iloc[0] == bad_id
    if case == "duplicate_event_id":
        kept = H.to_dict(H.by_impression(res["output_dir"])[bad_id])
        assert int(q.ts.iloc[0]) == kept["ts"][0] + 5


def test_duplicate_with_equal_ts_keeps_first_in_file_order(log, tmp_path):
    ev = H.load(log)
    i = _first(ev, "impression")
    row = ev.iloc[[i]].copy()
    row["item_id"] = ev.item_id[_first(ev, "click")]
    H.save(pd.concat([ev, row], ignore_index=True), log)
    res = H.run(log, str(tmp_path / "out"))
    q = H.quarantine(res)
    assert list(q.reason) == [contract.DUPLICATE_ID] and q.item_id.iloc[0] == row.item_id.iloc[0]
    assert H.to_dict(H.by_impression(res["output_dir"])[ev.event_id[i]])["item_id"] == [ev.item_id[i]]


def test_timestamp_floor_is_the_configured_min_ts_and_the_splits_survive(log, baseline, tmp_path):
    """Impressions at a negative ts, in 1999 and before a configured ``min_ts`` are
    quarantined with that ``min_ts``; the log's bounds and every example stay as without them."""
    ev = H.load(log)
    first_day = int(ev.ts.min()) // 86_400 * 86_400
    bogus = ev.iloc[[_first(ev, "impression")] * 3].copy()
    bogus["event_id"] = ["bogus_negative", "bogus_1999", "bogus_before_min_ts"]
    bogus["ts"] = [-1, 946_684_799, first_day - 10 * 86_400]
    ev = pd.concat([ev, bogus], ignore_index=True)
    H.save(ev, log)
    res = H.run(log, str(tmp_path / "out"), min_ts=first_day)
    _accounting_ok(res, len(ev))
    assert res["quarantined_by_reason"] == {r: 3 * (r == contract.TS_BEFORE_FLOOR) for r in contract.REASONS}
    assert sorted(H.quarantine(res).event_id) == sorted(bogus.event_id)
    for key in ("train_start_ts", "valid_start_ts", "eval_start_ts", "log_end_ts"):
        assert res[key] == baseline[key], key
    assert H.by_impression(res["output_dir"]) == baseline["examples"]
    # The default floor 0 (what the Word2Vec corpus reader gets): only the negative time; a
    # log from 1999 (MovieLens is from the 1990s) is not refused by default.
    frame = io.read_events(log)
    items = io.read_table(log, contract.ITEMS)["item_id"]
    good, bad = validate.split_batch(frame[frame.event_id.isin(bogus.event_id)], items)
    assert list(bad.event_id) == ["bogus_negative"]
    assert set(bad.reason) == {contract.TS_BEFORE_FLOOR}
    assert sorted(good.event_id) == ["bogus_1999", "bogus_before_min_ts"]


def test_too_many_bad_rows_fails_with_counts_and_examples(log, tmp_path):
    ev = H.load(log)
    n_bad = int(0.03 * len(ev))
    ev.loc[: n_bad - 1, "event"] = "bogus"
    ev.loc[n_bad, "item_id"] = "i_nowhere"
    H.save(ev, log)
    with pytest.raises(beam_pipeline.TooManyBadRowsError) as err:
        H.run(log, str(tmp_path / "out"))
    msg = str(err.value)
    assert f"{n_bad + 1} of {len(ev)} events quarantined" in msg
    assert "max_bad_fraction 0.01" in msg
    assert "'unknown_event_type': " + str(n_bad) in msg and "'item_not_in_items': 1" in msg
    assert "'bogus'" in msg and "'i_nowhere'" in msg and ev.event_id[0] in msg
    res = H.run(log, str(tmp_path / "lenient"), max_bad_fraction=0.05)   # a higher bar passes
    _accounting_ok(res, len(ev))


def test_csv_and_parts_give_identical_examples(base_log, baseline, tmp_path):
    d = str(tmp_path / "csvlog")
    os.makedirs(os.path.join(d, "events"))
    ev = H.load(base_log)
    extra = ev.iloc[[0]].assign(event_id="extra_bad_ts", ts="12:30")   # CSV text ts
    ev = pd.concat([ev, extra], ignore_index=True)
    half = len(ev) // 2
    ev.iloc[:half].to_csv(os.path.join(d, "events", "part-000.csv"), index=False)
    ev.iloc[half:].to_csv(os.path.join(d, "events", "part-001.csv"), index=False)
    H.load(base_log, "items").to_csv(os.path.join(d, "items.csv"), index=False)
    H.load(base_log, "users").to_parquet(os.path.join(d, "users.parquet"), index=False)
    res = H.run(d, str(tmp_path / "out"))
    _accounting_ok(res, len(ev))
    assert res["quarantined_by_reason"][contract.BAD_TS] == 1 and res["quarantined"] == 1
    assert H.by_impression(res["output_dir"]) == baseline["examples"]


def test_only_impressions_and_clicks(log, tmp_path):
    ev = H.load(log)
    H.save(ev[ev.event.isin([contract.IMPRESSION, contract.CLICK])], log)
    H.save(H.load(log, "items").drop(columns=["price", "title"]), log, "items")
    users = H.load(log, "users")
    dropped = set(users.user_id[::2])
    H.save(users[~users.user_id.isin(dropped)], log, "users")
    res = H.run(log, str(tmp_path / "out"))
    _accounting_ok(res, int(ev.event.isin([contract.IMPRESSION, contract.CLICK]).sum()))
    exs = [H.to_dict(b) for b in H.by_impression(res["output_dir"]).values()]
    assert len(exs) + res["censored_eval"] == res["impressions"] == (ev.event == contract.IMPRESSION).sum()
    assert all(e["conv_item_ids"] == [] and e["search_tokens"] == [] and e["view_item_ids"] == []
               for e in exs)
    assert any(e["click_item_ids"] for e in exs)
    assert all(e["price"] == [0.0] for e in exs)
    unknown = [e for e in exs if e["user_id"][0] in dropped]
    assert unknown and all(e["user_region_id"] == [""] and e["region_match"] == [0.0] for e in unknown)
