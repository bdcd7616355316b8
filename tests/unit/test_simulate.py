"""Tests of the event-log simulator (tiny worlds, a few seconds in all)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from feedrank import config as config_lib
from feedrank.events import contract
from feedrank.events.simulator import auc, main, mechanisms, simulate
from feedrank.typed import ConfigError

PANDAS_DTYPE = {"string": "object", "int64": "int64", "float64": "float64"}
# Content fingerprints (rows, sha256 prefix) of the `tiny` log (users=300, items=800, days=3,
# seed=7) as the simulator wrote it before the order-carrying mechanisms existed: with every
# mechanism off it must write exactly this.  Floats are rounded to 1e-6 before hashing.
TODAYS_WORLD = {"events.parquet": (4201, "a31b6b0298b22638"), "items.parquet": (800, "70fc64264d6a3429"),
                "users.parquet": (300, "7432816e3390acb8"), contract.TRUTH_FILE: (2368, "e7803ef8e8f43455")}


# Columns added later are left out of the fingerprints (the world did not change); the
# title is cut to its first four tokens (the observable attributes append region and filler).
FINGERPRINT_COLUMNS = {contract.TRUTH_FILE: ["event_id", "p_click"],
                       "items.parquet": ["item_id", "category_id", "region_id", "price", "title"],
                       "users.parquet": ["user_id", "region_id"]}


def fingerprint(path: str):
    """(rows, sha256 prefix) of a parquet table's content, independent of the file's metadata."""
    t = pq.read_table(path, columns=FINGERPRINT_COLUMNS.get(os.path.basename(path)))
    if "title" in t.column_names:
        four = [" ".join(x.split(" ")[:4]) for x in t.column("title").to_pylist()]
        t = t.set_column(t.column_names.index("title"), "title", pa.array(four, pa.string()))
    h = hashlib.sha256()
    for name in t.column_names:
        col = t.column(name).combine_chunks()
        h.update(name.encode() + b"\x00")
        if pa.types.is_string(col.type):
            h.update("\x00".join(col.fill_null("\x01").to_pylist()).encode())
        elif pa.types.is_floating(col.type):
            x = col.to_numpy(zero_copy_only=False).astype(np.float64)
            h.update(np.round(x, 6).astype("<f8").tobytes())
        else:
            h.update(col.to_numpy(zero_copy_only=False).astype("<i8").tobytes())
    return t.num_rows, h.hexdigest()[:16]


def _read(d: str, name: str) -> pd.DataFrame:
    return pd.read_parquet(os.path.join(d, name))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tiny"))
    summary = simulate(out, users=300, items=800, days=3, seed=7, verbose=False)
    return out, summary


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("medium"))
    summary = simulate(out, users=3000, items=6000, days=8, seed=3, verbose=False)
    return out, summary


def test_contract_columns_and_dtypes(tiny):
    out, _ = tiny
    for table, cols in contract.COLUMNS.items():
        df = _read(out, f"{table}.parquet")
        assert len(df) > 0, table
        for col, (logical, required) in cols.items():
            if required:
                assert col in df.columns, (table, col)
            if col in df.columns:
                assert str(df[col].dtype) == PANDAS_DTYPE[logical], (table, col, df[col].dtype)
        for col, (logical, required) in cols.items():
            if required and logical == "string":
                assert df[col].notna().all(), (table, col)
    truth = _read(out, contract.TRUTH_FILE)
    assert list(truth.columns) == ["event_id", "p_click", "p_click_aggregate"]
    # no order-carrying mechanism: the aggregates-only oracle is the oracle
    assert (truth["p_click_aggregate"] == truth["p_click"]).all()
    assert os.path.exists(os.path.join(out, "world.json"))


def test_event_semantics(tiny):
    out, summary = tiny
    ev = _read(out, "events.parquet")
    items = _read(out, "items.parquet")
    users = _read(out, "users.parquet")
    assert set(ev.event) <= set(contract.EVENT_TYPES)
    assert set(ev.event) >= {contract.IMPRESSION, contract.CLICK, contract.SEARCH, contract.VIEW}
    assert ev.event_id.is_unique and items.item_id.is_unique and users.user_id.is_unique
    search = ev.event == contract.SEARCH
    assert (ev.item_id[search] == "").all()
    assert (ev["query"][search].str.len() > 0).all()
    assert (ev["query"][~search] == "").all()
    assert ev.item_id[~search].isin(set(items.item_id)).all()
    assert ev.user_id.isin(set(users.user_id)).all()
    imp = ev.event == contract.IMPRESSION
    assert (ev.request_id[imp].str.len() > 0).all()
    view = ev.event == contract.VIEW
    assert (ev.dwell_s[view] > 0).all() and ev.dwell_s[~view].isna().all()
    # one impression of a post per request
    assert not ev[imp].duplicated(["request_id", "item_id"]).any()
    # ts: sorted, inside the simulated period
    params = json.load(open(os.path.join(out, "world.json")))["params"]
    assert ev.ts.is_monotonic_increasing
    assert ev.ts.min() >= params["start_ts"] and ev.ts.max() < params["end_ts"]
    assert summary["events"] == len(ev)
    assert summary["counts"][contract.IMPRESSION] == int(imp.sum())


def test_clicks_follow_impressions(tiny):
    out, _ = tiny
    ev = _read(out, "events.parquet")
    imp = ev[ev.event == contract.IMPRESSION][["request_id", "user_id", "item_id", "ts"]]
    clk = ev[ev.event == contract.CLICK][["request_id", "user_id", "item_id", "ts"]]
    m = clk.merge(imp, on=["request_id", "user_id", "item_id"], suffixes=("", "_imp"), how="left")
    assert m.ts_imp.notna().all()
    delay = m.ts - m.ts_imp
    assert (delay > 0).all() and (delay <= 1800).all()


def test_truth_covers_exactly_impressions(tiny):
    out, _ = tiny
    ev = _read(out, "events.parquet")
    truth = _read(out, contract.TRUTH_FILE)
    imp_ids = ev.event_id[ev.event == contract.IMPRESSION]
    assert truth.event_id.is_unique
    assert set(truth.event_id) == set(imp_ids) and len(truth) == len(imp_ids)
    assert truth.p_click.between(0.0, 1.0).all()


def test_deterministic_for_equal_seed(tmp_path, tiny):
    out, _ = tiny
    again = str(tmp_path / "again")
    other = str(tmp_path / "other")
    simulate(again, users=300, items=800, days=3, seed=7, verbose=False)
    simulate(other, users=300, items=800, days=3, seed=8, verbose=False)
    for name in ("events.parquet", "items.parquet", "users.parquet", contract.TRUTH_FILE):
        pd.testing.assert_frame_equal(_read(out, name), _read(again, name))
    a, b = _read(out, "events.parquet"), _read(other, "events.parquet")
    assert len(a) != len(b) or not a.equals(b)


def test_all_mechanisms_off_is_todays_world(tiny, tmp_path):
    """The default world, and mechanisms="off" spelled out, write exactly the log of the
    simulator without mechanisms (fingerprints taken from that code); no position column."""
    out, _ = tiny
    again = str(tmp_path / "off")
    simulate(again, users=300, items=800, days=3, seed=7, verbose=False, mechanisms="off")
    for d in (out, again):
        assert {name: fingerprint(os.path.join(d, name)) for name in TODAYS_WORLD} == TODAYS_WORLD
        assert "position" not in pq.read_schema(os.path.join(d, "events.parquet")).names
    params = json.load(open(os.path.join(out, "world.json")))["params"]
    assert params["mechanisms"] == json.loads(json.dumps(dataclasses.asdict(mechanisms.OFF)))


def test_oracle_auc_and_ctr_in_band(medium):
    out, summary = medium
    ev = _read(out, "events.parquet")
    truth = _read(out, contract.TRUTH_FILE)
    imp = ev[ev.event == contract.IMPRESSION][["event_id", "request_id", "item_id"]]
    clicked = ev[ev.event == contract.CLICK][["request_id", "item_id"]].drop_duplicates().assign(y=1)
    imp = imp.merge(clicked, on=["request_id", "item_id"], how="left").merge(truth, on="event_id")
    y = imp.y.fillna(0).to_numpy()
    oracle = roc_auc_score(y, imp.p_click)
    assert 0.65 < oracle < 0.9
    assert abs(oracle - summary["oracle_auc"]) < 0.01
    assert 0.03 < y.mean() < 0.10
    # the conversions/purchases funnel narrows
    c = summary["counts"]
    assert c[contract.CLICK] > c[contract.PURCHASE] and c[contract.CONVERSION] > c[contract.PURCHASE] > 0


def test_interests_drift(medium):
    """A user's category mix on day 1 vs the last day differs more than
    between the two halves of day 1 (equal sample sizes, averaged over users)."""
    out, _ = medium
    ev = _read(out, "events.parquet")
    items = _read(out, "items.parquet")
    ev = ev[ev.event.isin([contract.CLICK, contract.VIEW])].merge(items[["item_id", "category_id"]], on="item_id")
    ev["day"] = (ev.ts - ev.ts.min()) // 86400
    last = ev.day.max()
    rng = np.random.default_rng(0)
    within, across = [], []

    def tv(a: pd.Series, b: pd.Series) -> float:
        pa_, pb = a.value_counts(normalize=True), b.value_counts(normalize=True)
        return 0.5 * pa_.sub(pb, fill_value=0).abs().sum()

    first_day = ev[ev.day == 0].groupby("user_id")
    last_day = dict(list(ev[ev.day == last].groupby("user_id").category_id))
    for user, g in first_day:
        if user not in last_day or len(g) < 8 or len(last_day[user]) < 4:
            continue
        cats = g.sort_values("ts").category_id
        h = len(cats) // 2
        a, b = cats.iloc[:h], cats.iloc[h:2 * h]
        later = last_day[user]
        later = later.iloc[rng.permutation(len(later))[:len(b)]]
        n = min(len(b), len(later))
        within.append(tv(a, b.iloc[:n]))
        across.append(tv(a, later.iloc[:n]))
    assert len(within) >= 30
    assert np.mean(across) > np.mean(within) + 0.07


def test_auc_helper_matches_sklearn():
    rng = np.random.default_rng(1)
    s = np.round(rng.random(500), 2)  # with ties
    y = rng.random(500) < s
    assert abs(auc(s, y) - roc_auc_score(y, s)) < 1e-12


@pytest.mark.parametrize("args, message", [
    (["--users", "-5"], "must be positive"),
    (["--days", "0"], "must be positive"),
    (["--activity", "2"], "--activity"),
    (["--start-date", "yesterday"], "--start-date"),
    (["--mechanisms", "mission,telepathy"], "unknown mechanism(s) ['telepathy']"),
])
def test_cli_rejects_bad_args(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(args + ["--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_rejects_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["--users", "10", "--items", "10", "--days", "1", "--out", str(blocker / "sub")])
    assert exc.value.code == 2
    assert "cannot write to output directory" in capsys.readouterr().err


def test_cli_runs(tmp_path, capsys):
    assert main(["--users", "50", "--items", "100", "--days", "2", "--seed", "1", "--quiet",
                 "--out", str(tmp_path / "cli")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["events"] > 0 and os.path.exists(tmp_path / "cli" / "events.parquet")


def test_config_mechanisms(tmp_path):
    """simulate.mechanisms defaults to off, takes a preset or a list, and names a bad value."""
    assert config_lib.SimulateConfig().mechanisms == "off"
    good = tmp_path / "good.yaml"
    good.write_text("simulate:\n  mechanisms: mission,position_bias\n")
    assert config_lib.load(str(good)).simulate.mechanisms == "mission,position_bias"
    bad = tmp_path / "bad.yaml"
    bad.write_text("simulate:\n  mechanisms: realistik\n")
    with pytest.raises(ConfigError, match="simulate.mechanisms: unknown mechanism"):
        config_lib.load(str(bad))


def test_event_types_write_only_those_events_of_the_same_world(tiny, tmp_path):
    out, _ = tiny
    d = str(tmp_path / "imp_click")
    simulate(d, users=300, items=800, days=3, seed=7, verbose=False, event_types=["impression", "click"])
    full, part = _read(out, "events.parquet"), _read(d, "events.parquet")
    assert set(part.event) == {contract.IMPRESSION, contract.CLICK}
    kept = full[full.event.isin([contract.IMPRESSION, contract.CLICK])]
    assert len(part) == len(kept)
    assert (part.ts.to_numpy() == kept.ts.to_numpy()).all()  # the same world, fewer event types
    for bad, message in ((["impression", "like"], "unknown event types"), (["click"], "must hold 'impression'")):
        with pytest.raises(ValueError, match=message):
            simulate(str(tmp_path / "bad"), users=10, items=10, days=1, verbose=False, event_types=bad)


def test_config_names_a_bad_event_type(tmp_path):
    from feedrank.config import ConfigError, load

    path = tmp_path / "c.yaml"
    path.write_text("simulate: {event_types: [impression, like]}\n")
    with pytest.raises(ConfigError, match="simulate.event_types: unknown event types"):
        load(str(path))


def test_settings_differ_names_what_the_log_on_disk_was_simulated_with(tiny, tmp_path):
    from feedrank.events.simulator.generate import settings_differ

    out, _ = tiny
    assert settings_differ(out, users=300, items=800, days=3, seed=7) == []
    assert settings_differ(out, users=300, items=800, days=3, seed=7, mechanisms="realistic") == [
        "mechanisms: off -> realistic"]
    assert settings_differ(out, users=300, items=800, days=4, seed=7, event_types=["impression"]) == [
        "days: 3 -> 4", "event_types: None -> ['impression']"]
    assert settings_differ(str(tmp_path), users=1, items=1, days=1, seed=0) == []  # not a simulated log
