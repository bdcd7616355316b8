"""Session training samples: the ageing weights by hand, exact sample counts on hand-built
sessions, the time split, the Beam graph on a hand-built log, and `SessionSampleGen`
under LocalDagRunner with a real MLMD store on a tiny simulated shop log."""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import pandas as pd
import pytest

from feedrank.events.simulator import ecommerce_io as EIO
from feedrank.sessions import beam_samples as B
from feedrank.sessions import features as F
from feedrank.sessions import samples as S
from feedrank.sessions.sessionize import Page, Purchase, Session

DAY = 86400
T0 = 1_709_251_200          # 2024-03-01 00:00 UTC


def _session(user: str, sid: str, start: int, n_pages: int, carts=(), dwell=None) -> Session:
    pages = tuple(Page(f"i{j}" if j else "x0", "item" if j else "index", start + 10 * j,
                       float(dwell[j] if dwell else 5 + j)) for j in range(n_pages))
    purchases = tuple(Purchase(item, start + 10 * max(n - 1, 0) + 5, n) for item, n in carts)
    end = max([p.ts for p in pages] + [c.ts for c in purchases] + [start])
    return Session(user, sid, start, end, pages, purchases)


def test_ageing_weights_by_hand():
    assert np.allclose(S.ageing_weights([10.0, 20.0, 30.0]), [10 / 60, 20 / 50, 30 / 30])
    assert np.allclose(S.ageing_weights([4.0]), [1.0])
    assert S.ageing_weights([]).shape == (0,)
    log1p = S.ageing_weights([np.e - 1, np.e ** 2 - 1], theta=np.log1p)   # theta = 1, 2
    assert np.allclose(log1p, [1 / 3, 1.0])
    zero = S.ageing_weights([0.0, 5.0])        # a zero dwell is floored, no division by zero
    assert np.all(np.isfinite(zero)) and zero[1] == 1.0
    with pytest.raises(ValueError, match="positive, finite"):
        S.ageing_weights([1.0, 2.0], theta=lambda d: d - 1.5)


# Hand-built sessions and their exact counts.
A = _session("u1", "a", T0, 6, carts=[("i1", 4), ("i2", 6), ("i3", 6)])  # points (4: i1), (6: i2, i3)
B_ = _session("u1", "b", T0 + 3600, 3)                                   # no add-to-cart
C = _session("u1", "c", T0 + 7200, 1, carts=[("i9", 1)])                 # cart after the index page
D = _session("u2", "d", T0 + 600, 4, carts=[("i5", 0), ("i6", 2)])       # a cart before any page is left out


def test_purchase_points_and_counts():
    assert S.purchase_points(A) == [(4, ["i1"], A.purchases[0].ts), (6, ["i2", "i3"], A.purchases[1].ts)]
    # (samples with label items, samples with only a next page): every prefix with a target
    assert [S.count_samples(s) for s in (A, B_, C, D)] == [(6, 0), (0, 2), (1, 0), (2, 1)]
    assert [S.count_samples(s, shortened=False) for s in (A, B_, C, D)] == [(2, 4), (0, 2), (1, 0), (1, 2)]
    assert [S.count_samples(s, next_pages=False) for s in (A, B_, C, D)] == [(6, 0), (0, 0), (1, 0), (2, 0)]


def test_samples_of_a_session_exactly():
    got = list(S.session_samples(A, [("i7", T0 - DAY)], k=2))
    assert [(x[F.PREFIX_LEN], x[F.NEXT_PAGE], x[F.LABEL_ITEMS], x[F.FULL_PATH], x[F.N_PAGES_BEFORE_PURCHASE],
             x[F.PATH_START]) for x in got] == [
        (1, "i1", ["i1"], 0, 4, 0), (2, "i2", ["i1"], 0, 4, 0), (3, "i3", ["i1"], 0, 4, 0), (4, "i4", ["i1"], 1, 4, 0),
        (5, "i5", ["i2", "i3"], 0, 6, 4), (6, "", ["i2", "i3"], 1, 6, 4)]
    full = got[3]          # (h, p[n-k..n-1]) -> I with n = 4, k = 2; pages 10 s apart
    assert full[F.RECENT_PAGES] == ["i2", "i3"] and full[F.RECENT_DWELL] == [10.0, 0.0]   # current page: 0
    assert full[F.HISTORY_PAGES] == ["x0", "i1"] and full[F.HISTORY_DWELL] == [10.0, 10.0]
    assert full[F.HISTORY_PAGE_TYPES] == ["index", "item"] and full[F.RECENT_PAGE_TYPES] == ["item", "item"]
    assert full[F.TS] == A.pages[3].ts and full[F.SESSION_START_TS] == T0
    assert got[0][F.RECENT_PAGES] == ["x0"] and got[0][F.HISTORY_PAGES] == []
    assert all(x[F.PURCHASE_HISTORY] == ["i7"] and x[F.PURCHASE_HISTORY_TS] == [T0 - DAY] for x in got)
    no_short = list(S.session_samples(A, [], shortened=False))
    assert [(x[F.PREFIX_LEN], x[F.LABEL_ITEMS]) for x in no_short] == [
        (1, []), (2, []), (3, []), (4, ["i1"]), (5, []), (6, ["i2", "i3"])]
    assert [x[F.PREFIX_LEN] for x in S.session_samples(A, [], shortened=False, next_pages=False)] == [4, 6]
    typed = next(S.session_samples(A, [], page_types={"x0": "category"}))
    assert typed[F.RECENT_PAGE_TYPES] == ["category"]              # the catalogue's type wins


def test_purchase_history_across_sessions_and_the_time_split():
    bound = S.eval_start(T0 + 7200 + 50, eval_days=1)
    assert bound == T0
    bound = T0 + 3600                      # b and c are eval, a is train
    out = list(S.user_samples([C, A, B_], bound, k=3, max_purchase_history=2))
    assert [(split, s.session_id, len(x)) for split, s, x in out] == [("train", "a", 6), ("eval", "b", 2),
                                                                     ("eval", "c", 1)]
    assert out[2][2][0][F.PURCHASE_HISTORY] == ["i2", "i3"]      # the last 2 of a's carts
    assert S.split_of(B_, T0 + 3600) == "eval" and S.split_of(B_, T0 + 3601) == "train"
    assert S.split_of(B_, T0 + 3601, val_start_ts=T0 + 3600) == "val"
    assert S.split_of(B_, T0 + 3601, val_start_ts=T0 + 3601) == "train"
    assert S.eval_start(T0 + 2 * DAY + 5, eval_days=2) == T0 + DAY


def test_example_round_trip_and_the_contract():
    import tensorflow as tf

    x = next(S.session_samples(A, [("i7", 5)], k=2))
    back = F.from_example(F.to_example(x))
    assert back[F.RECENT_PAGES] == x[F.RECENT_PAGES] and back[F.LABEL_ITEMS] == ["i1"]
    assert back[F.PREFIX_LEN] == 1 and back[F.PURCHASE_HISTORY_TS] == [5]
    parsed = tf.io.parse_example([F.to_example(x)], F.feature_spec())
    assert set(parsed) == set(F.SPEC)
    with pytest.raises(ValueError, match="missing \\['ts'\\]"):
        F.to_example({k: v for k, v in x.items() if k != F.TS})


def _event_rows(sessions, start_id=0):
    rows, i = [], start_id
    for s in sessions:
        for p in s.pages:
            rows.append(dict(event_id=f"e{i:05d}", user_id=s.user_id, item_id=p.page_id, event="view", ts=p.ts,
                             request_id="", query="", dwell_s=p.dwell_s, session_id=s.session_id))
            i += 1
        for c in s.purchases:
            rows.append(dict(event_id=f"e{i:05d}", user_id=s.user_id, item_id=c.item_id, event="purchase",
                             ts=c.ts, request_id="", query="", dwell_s=np.nan, session_id=s.session_id))
            i += 1
    return rows


def _read(output_dir: str, split: str):
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(output_dir, f"Split-{split}", "*.gz")))
    return [F.from_example(r.numpy()) for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def test_beam_graph_on_a_hand_built_log(tmp_path):
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    rows = _event_rows([A, B_, C, _session("u2", "d", T0 + 600, 4, carts=[("i6", 2)])])
    rows.append(dict(rows[0], event_id="imp1", event="impression"))                  # not a session event
    rows.append(dict(rows[1], event_id="bad1", ts="never"))                         # unparsable ts
    ev = pd.DataFrame(rows).sample(frac=1.0, random_state=1)                        # out of order
    ev.astype({"ts": str}).to_parquet(log_dir / "events.parquet", index=False)
    _catalogue(log_dir)
    pd.DataFrame({"user_id": ["u1", "u2"], "region_id": ["r0", "r0"]}).to_parquet(log_dir / "users.parquet")
    out = str(tmp_path / "out")
    summary = B.run(str(log_dir), out, B.SampleSettings(k=2, eval_start_ts=T0 + 3600))
    # train: a (6, all with label items) and d (3: two with i6, one next-page only); eval: b (2 next-page
    # only) and c (1); every view's logged dwell is there
    expect = dict(samples_train=9, samples_eval=3, full_samples_train=3, shortened_samples_train=5,
                  next_page_samples_train=1, full_samples_eval=1, shortened_samples_eval=0, next_page_samples_eval=2,
                  sessions=4, sessions_train=2, sessions_eval=2, sessions_val=0, samples_val=0,
                  sessions_with_purchase_train=2, sessions_with_purchase_eval=1, events_other_type=1,
                  events_bad=1, events_read=len(rows), events_used=len(rows) - 2, eval_start_ts=T0 + 3600,
                  views_without_dwell=0)
    assert {k: summary[k] for k in expect} == expect
    assert summary["mean_pages_before_purchase_train"] == pytest.approx((4 + 6 + 2) / 3)
    train, evl = _read(out, "train"), _read(out, "eval")
    assert len(train) == 9 and len(evl) == 3
    assert sorted((x[F.SESSION_ID], x[F.PREFIX_LEN]) for x in train) == [
        ("a", 1), ("a", 2), ("a", 3), ("a", 4), ("a", 5), ("a", 6), ("d", 1), ("d", 2), ("d", 3)]
    [c] = [x for x in evl if x[F.SESSION_ID] == "c"]
    assert c[F.PURCHASE_HISTORY] == ["i1", "i2", "i3"] and c[F.LABEL_ITEMS] == ["i9"]
    assert sorted(x[F.NEXT_PAGE] for x in evl if x[F.SESSION_ID] == "b") == ["i1", "i2"]
    # the days before the eval bound are the val split
    summary = B.run(str(log_dir), str(tmp_path / "out_val"), B.SampleSettings(k=2, eval_start_ts=T0 + DAY + 300,
                                                                               val_days=1))
    # val from T0 + 300: d (3), b (2) and c (1); a (6) stays train
    assert (summary["samples_val"], summary["samples_train"], summary["val_start_ts"]) == (6, 6, T0 + 300)


def _catalogue(log_dir, with_type=True):
    ids = ["x0"] + [f"i{j}" for j in range(10)]
    table = pd.DataFrame({"item_id": ids, "category_id": "", "region_id": "all"})
    if with_type:
        table["page_type"] = ["index"] + ["item"] * 10
    table.to_parquet(log_dir / "items.parquet")


@pytest.fixture(scope="module")
def shop_log(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("shop"))
    EIO.simulate_ecommerce(out, users=120, items=200, categories=8, days=3, seed=5)
    return out


def _expected_counts(log_dir: str, eval_days: int = 1):
    """Independent count from the simulator's log and truth: a session of n pages gives a sample
    per page with a next page (n - 1) and one more when an add-to-cart follows its last page;
    the split by the session's first event."""
    ev = pd.read_parquet(os.path.join(log_dir, "events.parquet"))
    tr = pd.read_parquet(os.path.join(log_dir, EIO.TRUTH_FILE))
    start = ev.groupby("session_id")["ts"].min()
    n = ev[ev["event"] == "view"].groupby("session_id").size().reindex(start.index, fill_value=0)
    bound = S.eval_start(int(ev["ts"].max()), eval_days)
    last = tr.groupby("session_id")["pages_before"].max().reindex(start.index, fill_value=-1)
    points = tr.groupby("session_id")["pages_before"].nunique().reindex(start.index, fill_value=0)
    samples = (n - 1).clip(lower=0) + (last == n).astype(int)
    is_eval = start >= bound
    return {"samples_train": int(samples[~is_eval].sum()), "samples_eval": int(samples[is_eval].sum()),
            "full_samples_train": int(points[~is_eval].sum()), "full_samples_eval": int(points[is_eval].sum()),
            "sessions": int(ev["session_id"].nunique()), "eval_start_ts": bound}


def test_component_under_local_dag_runner(shop_log, tmp_path):
    from ml_metadata.metadata_store import metadata_store
    from tfx import v1 as tfx

    from components.session_samples.component import SessionSampleGen

    gen = SessionSampleGen(input_base=shop_log, input_fingerprint="fp-shop")
    db = str(tmp_path / "mlmd.sqlite")
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="session_samples_test", pipeline_root=str(tmp_path / "root"), components=[gen],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(db),
        beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    tfx.orchestration.LocalDagRunner().run(pipeline)
    store = metadata_store.MetadataStore(tfx.orchestration.metadata.sqlite_metadata_connection_config(db))
    [examples] = store.get_artifacts_by_type("Examples")
    assert json.loads(examples.properties["split_names"].string_value) == ["train", "val", "eval"]
    props = examples.custom_properties
    expect = _expected_counts(shop_log)
    assert {k: props[k].int_value for k in expect} == expect
    assert expect["samples_train"] > 100 and expect["samples_eval"] > 10
    for split in S.SPLITS:
        recs = _read(examples.uri, split)
        assert len(recs) == props[f"samples_{split}"].int_value
        assert sum(r[F.FULL_PATH] for r in recs) == props[f"full_samples_{split}"].int_value
        assert all(len(r[F.RECENT_PAGES]) <= F.DEFAULT_K and (r[F.LABEL_ITEMS] or r[F.NEXT_PAGE]) for r in recs)
    assert props["input_fingerprint"].string_value == "fp-shop"
    assert props["payload_format"].string_value == "FORMAT_TF_EXAMPLE"
    assert json.loads(props["summary"].string_value)["samples_train"] == props["samples_train"].int_value


def test_component_rejects_bad_settings():
    from components.session_samples.component import SessionSampleGen

    with pytest.raises(ValueError, match="session gap"):
        SessionSampleGen(input_base="x", gap_s=0)
    with pytest.raises(ValueError, match="k and eval_days must be >= 1"):
        SessionSampleGen(input_base="x", k=0)


def test_no_samples_is_a_clear_error(tmp_path):
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    pd.DataFrame(_event_rows([B_])[:1]).to_parquet(log_dir / "events.parquet", index=False)   # one page view
    _catalogue(log_dir)
    with pytest.raises(B.NoSamplesError, match="no session sample in the train split"):
        B.run(str(log_dir), str(tmp_path / "out"))
    (log_dir / "items.parquet").unlink()
    with pytest.raises(ValueError, match="needs the log's items table"):
        B.run(str(log_dir), str(tmp_path / "out2"))


def test_page_types_come_from_the_catalogue(tmp_path):
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    pd.DataFrame(_event_rows([A])).to_parquet(log_dir / "events.parquet", index=False)
    table = pd.DataFrame({"item_id": ["x0", "i1", "i2", "i3", "i4", "i5"], "category_id": "", "region_id": "",
                          "page_type": ["index", "item", "category", "item", "item", "item"]})
    table.to_parquet(log_dir / "items.parquet")
    B.run(str(log_dir), str(tmp_path / "out"), B.SampleSettings(k=6, eval_start_ts=T0 + DAY))
    last = max(_read(str(tmp_path / "out"), "train"), key=lambda x: x[F.PREFIX_LEN])
    assert last[F.RECENT_PAGE_TYPES] == ["index", "item", "category", "item", "item", "item"]
    table["page_type"] = ["index", "item", "shelf", "item", "item", "item"]
    table.to_parquet(log_dir / "items.parquet")
    with pytest.raises(ValueError, match=r"page_type must be one of \['index', 'category', 'item'\], got \['shelf'\]"):
        B.run(str(log_dir), str(tmp_path / "out2"))


def test_command_line(shop_log, tmp_path, capsys):
    assert B.main(["--log", shop_log, "--out", str(tmp_path / "out"), "--no-shortened"]) == 0
    summary = json.loads(capsys.readouterr().out)
    expect = _expected_counts(shop_log)
    assert summary["full_samples_train"] == expect["full_samples_train"]
    assert summary["samples_train"] == expect["samples_train"]      # the same prefixes, fewer label items
    assert summary["shortened_samples_train"] == 0 and summary["settings"]["shortened"] is False
    for argv, msg in ((["--log", str(tmp_path / "none")], "table 'events' is missing"),
                      (["--log", shop_log, "--k", "0"], "k and eval_days must be >= 1")):
        with pytest.raises(SystemExit):
            B.main(argv + ["--out", str(tmp_path / "o2")])
        assert msg in capsys.readouterr().err
