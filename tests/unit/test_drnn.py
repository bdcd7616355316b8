"""The DRNN and the GRU4Rec baseline: layers against hand computations, shared
weights, height shortcuts, the tied catalogue head with its repeat path, ablations,
a tiny multi-task fit on simulated shop sessions, and the export round trip in a
fresh process."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from feedrank.events.simulator import ecommerce as E
from feedrank.sessions import drnn, export, gru4rec, samples
from feedrank.sessions import layers as SL
from feedrank.typed import ConfigError

NUM_IDS = 48          # 0 padding, 1 index, 2..6 category lists, 7..46 item pages, 47 out of vocabulary
ITEM_MASK = [False] * 7 + [True] * 40 + [False]
TINY = {"num_pages": NUM_IDS, "num_items": NUM_IDS, "width": 3, "length": 2, "units": 8, "page_dim": 6,
        "fnn_dim": 4, "fnn_units": [8], "learning_rate": 0.02}
MAX_PAGES, MAX_PURCHASES = 24, 8


def shop_sessions(seed=0, users=80, rounds=6):
    """Sessions of the simulator's e-commerce world as model inputs: the pages up to
    each session's first add-to-cart -> that item (``cart``) and the page after them
    (``next``, 0 when the session ends there).  One id space: 1 index, 2+c category
    list c, 7+i item i's page and item i (5 categories); 0 is padding."""
    rng = np.random.Generator(np.random.PCG64(seed))
    shop = E.make_shop(rng, users, 40, 5, 0.5)
    bought = [[] for _ in range(users)]
    pages, dwell, purchases, users_, labels, nexts = [], [], [], [], [], []

    def pid(t, g):
        return 1 if t == E.INDEX else 2 + g if t == E.CATEGORY else 7 + g

    for _ in range(rounds):
        for u in range(users):
            s = E.simulate_session(rng, shop, u, 0, np.asarray(bought[u], np.int64))
            if s["carts"]:
                item, n_before = s["carts"][0]["item"], s["carts"][0]["pages_before"]
                seen = s["pages"][:n_before][-MAX_PAGES:]
                ids = [pid(t, g) for t, g, _, _ in seen]
                pad = MAX_PAGES - len(ids)
                pages.append([0] * pad + ids)
                dwell.append([0.0] * pad + [d for *_, d in seen])
                hist = [b + 7 for b in bought[u]][-MAX_PURCHASES:]
                purchases.append(hist + [0] * (MAX_PURCHASES - len(hist)))
                users_.append(f"u{u}".encode())
                labels.append(item + 7)
                nexts.append(pid(*s["pages"][n_before][:2]) if n_before < len(s["pages"]) else 0)
            bought[u].extend(c["item"] for c in s["carts"])
    x = {drnn.PAGES: np.asarray(pages, np.int64), drnn.DWELL: np.asarray(dwell, np.float32),
         drnn.PURCHASES: np.asarray(purchases, np.int64), drnn.USER_ID: np.asarray(users_)}
    y = {drnn.CART: np.asarray(labels, np.int64), drnn.NEXT: np.asarray(nexts, np.int64)}
    w = {drnn.CART: np.ones(len(labels), np.float32), drnn.NEXT: (y[drnn.NEXT] > 0).astype(np.float32)}
    return x, y, w


@pytest.fixture(scope="module")
def sessions():
    return shop_sessions()


def test_settings_are_checked_with_clear_errors():
    with pytest.raises(ConfigError, match=r"drnn\.width must be an integer >= 1, got 0"):
        drnn.DrnnSettings(width=0)
    with pytest.raises(ConfigError, match=r"drnn\.height must be < drnn\.length"):
        drnn.DrnnSettings(length=2, height=2)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['widht'\]"):
        drnn.DrnnSettings.from_mapping({"widht": 3})
    with pytest.raises(ConfigError, match=r"drnn\.cell must be one of"):
        drnn.DrnnSettings.from_mapping({"cell": "transformer"})
    with pytest.raises(ConfigError, match=r"num_items must equal num_pages, got 50 and 60"):
        drnn.DrnnSettings(num_items=50, num_pages=60)
    with pytest.raises(ConfigError, match=r"num_sampled must be in \[1, num_pages\)"):
        drnn.DrnnSettings(num_items=50, num_pages=50, softmax="sampled", num_sampled=50)
    assert drnn.DrnnSettings(num_items=30001, num_pages=30001).sampled == 1024       # auto: a large catalogue
    assert drnn.DrnnSettings(num_items=500, num_pages=500).sampled == 0


def test_recent_pages_right_aligns_the_last_k_real_pages():
    mask = tf.constant([[True, False, True, True, True], [False, True, False, False, False]])
    vals = tf.constant([[10.0, 99.0, 11.0, 12.0, 13.0], [99.0, 20.0, 99.0, 99.0, 99.0]])
    recent_mask, older, recent = SL.RecentPages(3)([mask, vals])
    np.testing.assert_array_equal(recent_mask.numpy(), [[True, True, True], [False, False, True]])
    np.testing.assert_array_equal(recent.numpy(), [[11.0, 12.0, 13.0], [0.0, 0.0, 20.0]])
    np.testing.assert_array_equal(older.numpy(), [[True, False, False, False, False], [False] * 5])


def test_history_state_ageing_weights_match_hand_computation():
    # real pages at 0, 1, 3, 4 (2 is padding with garbage dwell); k = 2: pages 0 and 1 are older
    dwell = tf.constant([[2.0, 3.0, 50.0, 5.0, 4.0]])
    mask = tf.constant([[True, True, False, True, True]])
    older = tf.constant([[True, True, False, False, False]])
    x = tf.constant([[[1.0, 0.0], [0.0, 1.0], [70.0, 70.0], [5.0, 5.0], [6.0, 6.0]]])
    session = SL.HistoryState("session")
    eps = [2 / (2 + 3 + 5 + 4), 3 / (3 + 5 + 4)]               # theta_i / sum_{j >= i} theta_j
    np.testing.assert_allclose(session.ageing_weights(dwell, mask, older).numpy(), [eps + [0, 0, 0]], rtol=1e-6)
    np.testing.assert_allclose(session(x, dwell, mask, older).numpy(), [eps], rtol=1e-6)
    history = SL.HistoryState("history")                       # j over the older pages only
    np.testing.assert_allclose(history(x, dwell, mask, older).numpy(), [[2 / 5, 1.0]], rtol=1e-6)
    none = tf.zeros_like(older)
    np.testing.assert_allclose(session(x, dwell, mask, none).numpy(), [[0.0, 0.0]])


def test_history_ageing_agrees_with_the_session_samples():
    d = np.random.default_rng(1).uniform(1, 60, size=7).astype(np.float32)
    older = tf.constant([[True] * 5 + [False] * 2])
    got = SL.HistoryState("history").ageing_weights(tf.constant([d]), tf.ones_like(older), older).numpy()[0]
    np.testing.assert_allclose(got[:5], samples.ageing_weights(d[:5]), rtol=1e-5)


def test_deep_recurrence_matches_numpy_with_height_shortcut():
    layer = SL.DeepRecurrence(units=3, length=2, cell="simple", height=1)
    x = np.random.default_rng(0).normal(size=(1, 4, 2)).astype(np.float32)
    mask = np.array([[False, True, True, True]])
    out = layer(tf.constant(x), tf.constant(mask)).numpy()
    assert out.shape == (1, 6)
    (k1, u1, b1), (k2, u2, b2) = [r.cell.get_weights() for r in layer.rnns]
    h1, h2 = np.zeros(3), np.zeros(3)
    for t in range(1, 4):                                        # step 0 is masked
        h1 = np.tanh(x[0, t] @ k1 + h1 @ u1 + b1)
        h2 = np.tanh(h1 @ k2 + h2 @ u2 + b2)
    np.testing.assert_allclose(out[0], np.concatenate([h2, h1]), rtol=1e-5, atol=1e-6)


def test_weights_are_shared_across_states_and_height_widens_the_output():
    shapes = {}
    for k in (2, 7):
        m = drnn.build({**TINY, "width": k})
        shapes[k] = sorted((v.name, tuple(v.shape)) for v in m.trainable_variables)
        rec = m.encoder.get_layer("drnn")
        assert len(rec.trainable_variables) == 3 * TINY["length"]  # one SimpleRNN cell per layer
    assert shapes[2] == shapes[7]
    for h in (0, 1, 2):
        m = drnn.build({**TINY, "length": 3, "height": h}, ITEM_MASK)
        width = TINY["units"] * (1 + h) + TINY["fnn_units"][-1]             # the RNN's output and the FNN's
        assert tuple(m.head.query[drnn.CART].shape) == (width, TINY["page_dim"])


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_catalogue_head_matches_hand_computation():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(6, 2)).astype(np.float32)                  # ids 0..5: 0 pad, 5 out of vocabulary
    mask = [False, True, False, True, True, False]                      # ids 1, 3, 4 are items
    x = tf.constant([[0.5, -1.0, 2.0]])
    pages = tf.constant([[0, 2, 3, 3, 5]])                             # a category page, item 3 twice, OOV
    plain = SL.CatalogueHead(6, 2, mask, repeat=False)
    out = plain([x], tf.constant(emb), pages)
    q = {t: plain.query[t].numpy() for t in SL.TASKS}
    c = {t: plain.bias[t].numpy() for t in SL.TASKS}
    logits = {t: (x.numpy()[0] @ q[t]) @ emb.T + c[t] for t in SL.TASKS}
    cart = out[drnn.CART].numpy()[0]
    np.testing.assert_allclose(cart[[1, 3, 4]], logits[drnn.CART][[1, 3, 4]], rtol=1e-5)
    assert (cart[[0, 2, 5]] < -1e8).all()                              # pad, the category page, OOV
    nxt = out[drnn.NEXT].numpy()[0]
    np.testing.assert_allclose(nxt[1:5], logits[drnn.NEXT][1:5], rtol=1e-5)
    assert nxt[0] < -1e8 and nxt[5] < -1e8

    head = SL.CatalogueHead(6, 2, mask, repeat=True)
    head([x], tf.constant(emb), pages)
    head.gate_bias[drnn.CART].assign([0.7])
    head.gate[drnn.CART].assign(rng.normal(size=(3, 1)).astype(np.float32))
    got = np.exp(head([x], tf.constant(emb), pages)[drnn.CART].numpy()[0])
    v = x.numpy()[0]
    e = (v @ head.query[drnn.CART].numpy()) @ emb.T + head.bias[drnn.CART].numpy()
    explore = np.zeros(6)
    explore[[1, 3, 4]] = _softmax(e[[1, 3, 4]])
    g = 1 / (1 + np.exp(-(v @ head.gate[drnn.CART].numpy()[:, 0] + 0.7)))
    r = v @ head.repeat_query[drnn.CART].numpy()
    att = _softmax(np.array([r @ emb[3], r @ emb[3]]))                 # only item 3 can be re-picked
    repeat = np.zeros(6)
    repeat[3] = att.sum()
    want = g * repeat + (1 - g) * explore
    np.testing.assert_allclose(got[[1, 3, 4]], want[[1, 3, 4]], rtol=1e-4)
    assert got.sum() == pytest.approx(1.0, abs=1e-5)
    no_item = head([x], tf.constant(emb), tf.constant([[0, 2, 5, 0, 0]]))[drnn.CART].numpy()[0]
    np.testing.assert_allclose(np.exp(no_item[[1, 3, 4]]), explore[[1, 3, 4]], rtol=1e-4)   # no page to re-pick: g = 0


def test_ablations_ignore_what_they_drop(sessions):
    x, _, _ = sessions
    x = {k: v[-16:] for k, v in x.items()}                     # late sessions: returning buyers
    assert (x[drnn.PURCHASES] > 0).any()
    changed = {**x, drnn.PAGES: x[drnn.PAGES].copy(), drnn.PURCHASES: np.zeros_like(x[drnn.PURCHASES])}
    changed[drnn.PAGES][:, :MAX_PAGES - TINY["width"]] = np.where(
        x[drnn.PAGES][:, :MAX_PAGES - TINY["width"]] > 0, 1, 0)   # rewrite every older page to the index page
    long = (x[drnn.PAGES] > 0).sum(1) > TINY["width"] + 1
    for use_history, use_fnn in ((False, False), (True, False), (False, True)):
        m = drnn.build({**TINY, "use_history": use_history, "use_fnn": use_fnn, "repeat": False}, ITEM_MASK)
        names = m.input_names_used
        assert (drnn.PURCHASES in names) == use_fnn

        def cart(inputs):
            return m(inputs)[drnn.CART].numpy()[:, 7:47]
        same_pages = {**changed, drnn.PAGES: x[drnn.PAGES]}
        diff_fnn = np.abs(cart(x) - cart(same_pages)).max()
        assert (diff_fnn > 1e-6) == use_fnn                   # purchases matter only with the FNN
        no_purchase_change = {**x, drnn.PAGES: changed[drnn.PAGES]}
        diff_hist = np.abs(cart(x)[long] - cart(no_purchase_change)[long]).max()
        assert (diff_hist > 1e-6) == use_history              # older pages matter only with the history


def test_padding_side_does_not_matter(sessions):
    x, _, _ = sessions
    x = {k: v[:8] for k, v in x.items()}
    m = drnn.build(TINY, ITEM_MASK)
    right = dict(x)
    for key in (drnn.PAGES, drnn.DWELL):                          # move the padding to the right
        right[key] = np.stack([np.concatenate([r[p > 0], r[p == 0]]) for r, p in zip(x[key], x[drnn.PAGES])])
    for task in SL.TASKS:
        np.testing.assert_allclose(m(x)[task].numpy()[:, 1:47], m(right)[task].numpy()[:, 1:47], rtol=1e-5, atol=1e-5)


def test_tiny_fit_reduces_both_losses(sessions):
    x, y, w = sessions
    tf.keras.utils.set_random_seed(0)
    for m in (drnn.build(TINY, ITEM_MASK, next_weight=0.5),
              gru4rec.build({"num_pages": NUM_IDS, "num_items": NUM_IDS, "units": 8, "page_dim": 6,
                             "learning_rate": 0.02}, ITEM_MASK)):
        before = m.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)
        m.fit(x, y, sample_weight=w, epochs=8, batch_size=32, verbose=0)
        after = m.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)
        assert after["cart_loss"] < before["cart_loss"] - 0.3, (before, after)
        assert after["next_loss"] < 0.85 * before["next_loss"], (before, after)   # weighted: a smaller scale
        assert after["cart_top10"] > before["cart_top10"]
    assert m.input_names_used == [drnn.PAGES] and not m.head.repeat        # GRU4Rec: pages only, no repeat path


FRESH = """
import json, sys
import numpy as np, tensorflow as tf
x = dict(np.load(sys.argv[2]))
fn = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = fn(**{k: tf.constant(v) for k, v in x.items()})
np.savez(sys.argv[3], items=out["items"].numpy(), scores=out["scores"].numpy())
"""


def test_export_round_trip_in_a_fresh_process(sessions, tmp_path):
    x, _, _ = sessions
    x = {k: v[:12] for k, v in x.items()}
    m = drnn.build({**TINY, "user_buckets": 7}, ITEM_MASK)
    path = export.export(m, str(tmp_path / "model"), k=5)
    info = json.load(open(os.path.join(path, export.INFO_FILE)))
    assert info["k"] == 5 and info["num_items"] == NUM_IDS
    np.savez(tmp_path / "x.npz", **x)
    subprocess.run([sys.executable, "-c", FRESH, path, str(tmp_path / "x.npz"), str(tmp_path / "out.npz")],
                   check=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    got = np.load(tmp_path / "out.npz")
    want = export.top_k(m, {k: tf.constant(v) for k, v in x.items()}, 5)
    np.testing.assert_array_equal(got["items"], want["items"].numpy())
    np.testing.assert_allclose(got["scores"], want["scores"].numpy(), rtol=1e-5, atol=1e-7)
    assert got["items"].shape == (12, 5) and ((got["items"] >= 7) & (got["items"] <= 46)).all()   # items only
    assert (np.diff(got["scores"], axis=1) <= 0).all()
    with pytest.raises(ValueError, match=r"top-k must be in \[1, 47\]"):
        export.export(m, str(tmp_path / "bad"), k=48)


def test_from_samples_follows_the_session_feature_contract():
    base = {"user_id": "u1", "session_id": "s1", "session_start_ts": 0, "ts": 9, "recent_page_types": [],
            "history_page_types": [], "purchase_history_ts": [], "prefix_len": 0,
            "n_pages_before_purchase": 0, "path_start": 0, "full_path": 1}
    samples = [
        {**base, "history_pages": ["x0", "c1"], "history_dwell_s": [1.0, 2.0], "recent_pages": ["i7", "zz"],
         "recent_dwell_s": [3.0, 0.0], "purchase_history": ["i5", "i9"], "label_items": ["i7", "i5"],
         "next_page": "c1"},
        {**base, "user_id": "u2", "history_pages": [], "history_dwell_s": [], "recent_pages": ["i7"],
         "recent_dwell_s": [0.0], "purchase_history": [], "label_items": ["i404"], "next_page": ""},
        {**base, "user_id": "u3", "history_pages": [], "history_dwell_s": [], "recent_pages": ["x0"],
         "recent_dwell_s": [0.0], "purchase_history": [], "label_items": [], "next_page": "i9", "full_path": 0},
    ]
    vocab = drnn.vocabulary(["x0", "c1", "i7", "i5", "i9"])
    assert vocab == {"c1": 1, "i5": 2, "i7": 3, "i9": 4, "x0": 5}                 # ties by id; 6 is OOV
    assert drnn.vocabulary(["b", "a", "b", "c", "c", "c"]) == {"c": 1, "b": 2, "a": 3}   # most frequent first
    mask = [False, False, True, True, True, False, False]
    x, y, w, rows = drnn.from_samples(samples, vocab, max_pages=3, max_purchases=1, item_mask=mask)
    np.testing.assert_array_equal(rows, [0, 0, 1, 2])            # two label items; one row without a label
    np.testing.assert_array_equal(y[drnn.CART], [3, 2, 6, 0])       # "i404" is out of vocabulary
    np.testing.assert_array_equal(w[drnn.CART], [1, 1, 0, 0])       # OOV and none: no cart loss
    np.testing.assert_array_equal(y[drnn.NEXT], [1, 1, 0, 4])
    np.testing.assert_allclose(w[drnn.NEXT], [0.5, 0.5, 0, 1])      # the next page shared by the label rows
    np.testing.assert_array_equal(x["pages"][0], [1, 3, 6])         # the last 3 pages; "zz" out of vocabulary
    np.testing.assert_array_equal(x["dwell"][0], [2.0, 3.0, 0.0])
    np.testing.assert_array_equal(x["purchases"][:2], [[4]] * 2)    # the last purchase kept
    assert list(x["user_id"]) == [b"u1", b"u1", b"u2", b"u3"]
    # a shorter prefix of the same path (full_path 0) trains the next page only by default
    short = {**samples[0], "full_path": 0, "recent_pages": ["i7"], "recent_dwell_s": [3.0]}
    x, y, w, rows = drnn.from_samples([short], vocab, max_pages=3, max_purchases=1, item_mask=mask)
    np.testing.assert_array_equal(rows, [0])
    np.testing.assert_array_equal(y[drnn.CART], [0])
    np.testing.assert_array_equal(w[drnn.CART], [0])
    np.testing.assert_allclose(w[drnn.NEXT], [1])
    x, y, w, rows = drnn.from_samples([short], vocab, max_pages=3, max_purchases=1, item_mask=mask, cart_rows="all")
    np.testing.assert_array_equal(y[drnn.CART], [3, 2])
    np.testing.assert_array_equal(w[drnn.CART], [1, 1])
    np.testing.assert_allclose(w[drnn.NEXT], [0.5, 0.5])
    with pytest.raises(ValueError, match="cart_rows must be one of"):
        drnn.from_samples([short], vocab, cart_rows="some")


def test_session_layers_round_trip_their_config():
    for layer in (SL.RecentPages(4), SL.HistoryState("session"), SL.DeepRecurrence(6, 3, "lstm", 2, 0.1),
                  SL.CatalogueHead(5, 3, [False, True, False, True, False]), SL.MultiHot(9), SL.HashBucket(5)):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="0 <= height < length"):
        SL.DeepRecurrence(4, length=2, height=2)
    bitmap = SL.MultiHot(5)(tf.constant([[3, 3, 0, 1]])).numpy()
    np.testing.assert_array_equal(bitmap, [[0, 1, 0, 1, 0]])     # padding 0 is not a purchase


def test_cells_and_fnn_inputs_build_and_score(sessions):
    x, _, _ = sessions
    x = {k: v[-4:] for k, v in x.items()}
    for extra in ({"cell": "lstm", "fnn_input": "bitmap"}, {"cell": "gru", "user_buckets": 11, "height": 1}):
        m = drnn.build({**TINY, **extra}, ITEM_MASK)
        out = m(x)[drnn.CART].numpy()
        assert out.shape == (4, NUM_IDS) and np.isfinite(out).all() and (out[:, 0] < -1e8).all()
    assert drnn.USER_ID in m.input_names_used


def test_sasrec_reads_recent_pages_by_position_whatever_the_padding():
    from feedrank.sessions import sasrec

    m = sasrec.build({"num_pages": 12, "num_items": 12, "page_dim": 8, "blocks": 2, "heads": 2, "dropout": 0.0,
                      "max_len": 3})
    left = m({drnn.PAGES: np.array([[0, 0, 3, 4, 5], [0, 0, 0, 0, 7]], np.int64)})[drnn.CART].numpy()
    short = m({drnn.PAGES: np.array([[3, 4, 5], [0, 0, 7]], np.int64)})[drnn.CART].numpy()
    right = m({drnn.PAGES: np.array([[3, 4, 5, 0, 0]], np.int64)})[drnn.CART].numpy()
    np.testing.assert_allclose(left, short, atol=1e-5)                    # positions count from the newest page
    np.testing.assert_allclose(left[:1], right, atol=1e-5)
    earlier = m({drnn.PAGES: np.array([[0, 0, 9, 4, 5]], np.int64)})[drnn.CART].numpy()
    assert np.abs(earlier - left[:1]).max() > 1e-4                         # an earlier page within max_len matters
    beyond = m({drnn.PAGES: np.array([[1, 2, 3, 4, 5]], np.int64)})[drnn.CART].numpy()
    np.testing.assert_allclose(beyond, left[:1], atol=1e-5)              # pages beyond max_len are not read
    pos, mask, last = sasrec.RecencyPositions(3)(tf.constant([[0, 6, 7, 8, 9]], tf.int64))
    np.testing.assert_array_equal(pos.numpy(), [[0, 0, 3, 2, 1]])
    np.testing.assert_array_equal(last.numpy(), [[False, False, False, False, True]])
    np.testing.assert_array_equal(mask.numpy()[0, 3], [False, False, True, True, False])   # itself and earlier


def test_sampled_log_prob_is_exact_when_every_id_is_drawn_and_trains():
    rng = np.random.default_rng(5)
    emb = tf.constant(rng.normal(size=(6, 2)).astype(np.float32))
    mask = [False, True, False, True, True, False]
    x, pages = tf.constant(rng.normal(size=(2, 3)).astype(np.float32)), tf.constant([[0, 2, 3, 3, 5], [1, 4, 0, 0, 2]])
    for repeat in (False, True):
        head = SL.CatalogueHead(6, 2, mask, repeat=repeat)
        full = head([x], emb, pages)
        for task, targets in ((drnn.CART, [3, 4]), (drnn.NEXT, [2, 1])):
            got = head.sampled_log_prob([x], emb, pages, task, tf.constant(targets), 6).numpy()
            want = full[task].numpy()[[0, 1], targets]
            if not repeat:                                   # logits: the log-softmax over the allowed ids
                want = want - np.log(np.exp(full[task].numpy()).sum(axis=1))
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_sampled_softmax_trains(sessions):
    x, y, w = sessions
    tf.keras.utils.set_random_seed(1)
    m = drnn.build({**TINY, "softmax": "sampled", "num_sampled": 12}, ITEM_MASK)
    assert m.num_sampled == 12
    before = m.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)     # evaluation: the full softmax
    m.fit(x, y, sample_weight=w, epochs=8, batch_size=32, verbose=0)
    after = m.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)
    assert after["cart_loss"] < before["cart_loss"] - 0.3, (before, after)


def test_the_repeat_path_weighs_recency_and_dwell():
    rng = np.random.default_rng(2)
    emb = tf.constant(rng.normal(size=(6, 2)).astype(np.float32))
    mask = [False, True, False, True, True, False]
    head = SL.CatalogueHead(6, 2, mask, repeat=True)
    x, pages = tf.constant([[0.3, -0.2]]), tf.constant([[0, 3, 4]])
    head([x], emb, pages)
    head.repeat_query[drnn.CART].assign(np.zeros((2, 2), np.float32))     # content-blind attention
    head.gate_bias[drnn.CART].assign([30.0])                              # g = 1: the repeat path alone
    head.age_bias[drnn.CART].assign(np.r_[np.log(3.0), np.zeros(SL.MAX_AGE)].astype(np.float32))
    p = np.exp(head([x], emb, pages)[drnn.CART].numpy()[0])
    np.testing.assert_allclose(p[[3, 4]], [0.25, 0.75], rtol=1e-4)         # the newest page 3x the one before
    head.age_bias[drnn.CART].assign(np.zeros(SL.MAX_AGE + 1, np.float32))
    head.dwell_weight[drnn.CART].assign(1.0)
    p = np.exp(head([x], emb, pages, dwell=tf.constant([[0.0, np.e - 1, 0.0]]))[drnn.CART].numpy()[0])
    np.testing.assert_allclose(p[[3, 4]], [np.e / (np.e + 1), 1 / (np.e + 1)], rtol=1e-4)   # weight 1 + dwell
