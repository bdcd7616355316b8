"""The DRNN and the GRU4Rec baseline: layers against hand computations, shared
weights, height shortcuts, learned fusion, ablations, a tiny fit on simulated
shop sessions, and the export round trip in a fresh process."""
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

TINY = {"num_pages": 60, "num_items": 41, "width": 3, "length": 2, "units": 8, "page_dim": 6,
        "fnn_dim": 4, "fnn_units": [8], "learning_rate": 0.02}
MAX_PAGES, MAX_PURCHASES = 24, 8


def shop_sessions(seed=0, users=80, rounds=6):
    """Sessions of the simulator's e-commerce world as model inputs: the pages up to
    each session's first add-to-cart -> that item.  Page ids: 1 index, 2+c category
    list c, 7+i item i (5 categories); item ids: i+1 (0 is padding)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    shop = E.make_shop(rng, users, 40, 5, 0.5)
    bought = [[] for _ in range(users)]
    pages, dwell, purchases, users_, labels = [], [], [], [], []
    for _ in range(rounds):
        for u in range(users):
            s = E.simulate_session(rng, shop, u, 0, np.asarray(bought[u], np.int64))
            if s["carts"]:
                item, n_before = s["carts"][0]["item"], s["carts"][0]["pages_before"]
                seen = s["pages"][:n_before][-MAX_PAGES:]
                ids = [1 if t == E.INDEX else 2 + g if t == E.CATEGORY else 7 + g for t, g, _, _ in seen]
                pad = MAX_PAGES - len(ids)
                pages.append([0] * pad + ids)
                dwell.append([0.0] * pad + [d for *_, d in seen])
                hist = [b + 1 for b in bought[u]][-MAX_PURCHASES:]
                purchases.append(hist + [0] * (MAX_PURCHASES - len(hist)))
                users_.append(f"u{u}".encode())
                labels.append(item + 1)
            bought[u].extend(c["item"] for c in s["carts"])
    x = {drnn.PAGES: np.asarray(pages, np.int64), drnn.DWELL: np.asarray(dwell, np.float32),
         drnn.PURCHASES: np.asarray(purchases, np.int64), drnn.USER_ID: np.asarray(users_)}
    return x, np.asarray(labels, np.int64)


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
    with pytest.raises(ConfigError, match=r"num_sampled must be in \[1, num_items\)"):
        drnn.DrnnSettings(num_items=50, softmax="sampled", num_sampled=50)
    assert drnn.DrnnSettings(num_items=20001, num_sampled=100).sampled       # auto: large catalogue
    assert not drnn.DrnnSettings(num_items=500).sampled


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
        m = drnn.build({**TINY, "length": 3, "height": h})
        assert tuple(m.head.kernels[0].shape) == (TINY["num_items"], TINY["units"] * (1 + h))


def test_fused_softmax_matches_hand_computation():
    head = SL.FusedSoftmax(4)
    a, b = tf.constant([[1.0, 2.0]]), tf.constant([[3.0]])
    head([a, b])
    w0, w1 = np.arange(8.0).reshape(4, 2) / 10, np.arange(4.0).reshape(4, 1) / 10
    head.set_weights([w0, w1, np.ones(4), np.full(4, 2.0), np.array([0.5, 2.0])])
    expected = 0.5 * (np.array([1.0, 2.0]) @ w0.T + 1) + 2.0 * (3.0 * w1[:, 0] + 2)
    got = head([a, b]).numpy()[0]
    np.testing.assert_allclose(got[1:], expected[1:], rtol=1e-6)
    assert got[0] < -1e8                                          # the padding item
    assert head.fusion.trainable
    single = SL.FusedSoftmax(4)
    single(a)
    assert not single.fusion.trainable


def test_ablations_ignore_what_they_drop(sessions):
    x, _ = sessions
    x = {k: v[-16:] for k, v in x.items()}                     # late sessions: returning buyers
    assert (x[drnn.PURCHASES] > 0).any()
    changed = {**x, drnn.PAGES: x[drnn.PAGES].copy(), drnn.PURCHASES: np.zeros_like(x[drnn.PURCHASES])}
    changed[drnn.PAGES][:, :MAX_PAGES - TINY["width"]] = np.where(
        x[drnn.PAGES][:, :MAX_PAGES - TINY["width"]] > 0, 1, 0)   # rewrite every older page
    long = (x[drnn.PAGES] > 0).sum(1) > TINY["width"] + 1
    for use_history, use_fnn in ((False, False), (True, False), (False, True)):
        m = drnn.build({**TINY, "use_history": use_history, "use_fnn": use_fnn})
        names = m.input_names_used
        assert (drnn.PURCHASES in names) == use_fnn and len(m.head.kernels) == 1 + use_fnn
        same_pages = {**changed, drnn.PAGES: x[drnn.PAGES]}
        diff_fnn = np.abs(m(x).numpy()[:, 1:] - m(same_pages).numpy()[:, 1:]).max()
        assert (diff_fnn > 1e-6) == use_fnn                   # purchases matter only with the FNN
        no_purchase_change = {**x, drnn.PAGES: changed[drnn.PAGES]}
        diff_hist = np.abs(m(x).numpy()[long, 1:] - m(no_purchase_change).numpy()[long, 1:]).max()
        assert (diff_hist > 1e-6) == use_history              # older pages matter only with the history


def test_padding_side_does_not_matter(sessions):
    x, _ = sessions
    x = {k: v[:8] for k, v in x.items()}
    m = drnn.build(TINY)
    right = dict(x)
    for key in (drnn.PAGES, drnn.DWELL):                          # move the padding to the right
        right[key] = np.stack([np.concatenate([r[p > 0], r[p == 0]]) for r, p in zip(x[key], x[drnn.PAGES])])
    np.testing.assert_allclose(m(x).numpy()[:, 1:], m(right).numpy()[:, 1:], rtol=1e-5, atol=1e-5)


def test_tiny_fit_reduces_loss_and_learns_the_fusion_weights(sessions):
    x, y = sessions
    tf.keras.utils.set_random_seed(0)
    m = drnn.build(TINY)
    before = m.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    m.fit(x, y, epochs=8, batch_size=32, verbose=0)
    after = m.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert after < before - 0.3, (before, after)
    assert m.head.fusion.trainable
    assert np.abs(m.head.fusion.numpy() - 1.0).max() > 1e-3      # moved from their initial value
    sampled = drnn.build({**TINY, "softmax": "sampled", "num_sampled": 10})
    assert sampled.num_sampled == 10
    before = sampled.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    sampled.fit(x, y, epochs=8, batch_size=32, verbose=0)
    assert sampled.evaluate(x, y, verbose=0, return_dict=True)["loss"] < before - 0.3
    g = gru4rec.build({"num_pages": 60, "num_items": 41, "units": 8, "page_dim": 6, "learning_rate": 0.02})
    before = g.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    g.fit(x, y, epochs=8, batch_size=32, verbose=0)
    assert g.evaluate(x, y, verbose=0, return_dict=True)["loss"] < before - 0.3
    assert g.input_names_used == [drnn.PAGES] and len(g.head.kernels) == 1


FRESH = """
import json, sys
import numpy as np, tensorflow as tf
x = dict(np.load(sys.argv[2]))
fn = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = fn(**{k: tf.constant(v) for k, v in x.items()})
np.savez(sys.argv[3], items=out["items"].numpy(), scores=out["scores"].numpy())
"""


def test_export_round_trip_in_a_fresh_process(sessions, tmp_path):
    x, _ = sessions
    x = {k: v[:12] for k, v in x.items()}
    m = drnn.build({**TINY, "user_buckets": 7})
    path = export.export(m, str(tmp_path / "model"), k=5)
    info = json.load(open(os.path.join(path, export.INFO_FILE)))
    assert info["k"] == 5 and info["num_items"] == TINY["num_items"]
    np.savez(tmp_path / "x.npz", **x)
    subprocess.run([sys.executable, "-c", FRESH, path, str(tmp_path / "x.npz"), str(tmp_path / "out.npz")],
                   check=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    got = np.load(tmp_path / "out.npz")
    want = export.top_k(m, {k: tf.constant(v) for k, v in x.items()}, 5)
    np.testing.assert_array_equal(got["items"], want["items"].numpy())
    np.testing.assert_allclose(got["scores"], want["scores"].numpy(), rtol=1e-5, atol=1e-7)
    assert got["items"].shape == (12, 5) and (got["items"] > 0).all()
    assert (np.diff(got["scores"], axis=1) <= 0).all()
    with pytest.raises(ValueError, match=r"top-k must be in \[1, 40\]"):
        export.export(m, str(tmp_path / "bad"), k=41)


def test_from_samples_follows_the_session_feature_contract():
    base = {"user_id": "u1", "session_id": "s1", "session_start_ts": 0, "ts": 9, "recent_page_types": [],
            "history_page_types": [], "purchase_history_ts": [], "prefix_len": 0,
            "n_pages_before_purchase": 0, "full_path": 1}
    samples = [
        {**base, "history_pages": ["x0", "c1"], "history_dwell_s": [1.0, 2.0], "recent_pages": ["i7", "zz"],
         "recent_dwell_s": [3.0, 4.0], "purchase_history": ["i5", "i9"], "label_items": ["i7", "i5"]},
        {**base, "user_id": "u2", "history_pages": [], "history_dwell_s": [], "recent_pages": ["i7"],
         "recent_dwell_s": [5.0], "purchase_history": [], "label_items": ["i404"]},
    ]
    pages = drnn.vocabulary(["x0", "c1", "i7"])
    items = drnn.vocabulary(["i5", "i7", "i9"])
    assert pages == {"c1": 1, "i7": 2, "x0": 3} and items == {"i5": 1, "i7": 2, "i9": 3}
    assert drnn.vocabulary(["b", "a", "b", "c", "c", "c"]) == {"c": 1, "b": 2, "a": 3}   # most frequent first
    x, y, rows = drnn.from_samples(samples, pages, items, max_pages=3, max_purchases=1)
    np.testing.assert_array_equal(rows, [0, 0])                  # two label items; sample 2's is unknown
    np.testing.assert_array_equal(y, [2, 1])
    np.testing.assert_array_equal(x["pages"], [[3, 1, 2]] * 2)    # "zz" is not in the vocabulary
    np.testing.assert_array_equal(x["dwell"], [[1.0, 2.0, 3.0]] * 2)
    np.testing.assert_array_equal(x["purchases"], [[3]] * 2)      # the last purchase kept
    assert list(x["user_id"]) == [b"u1", b"u1"]


def test_session_layers_round_trip_their_config():
    for layer in (SL.RecentPages(4), SL.HistoryState("session"), SL.DeepRecurrence(6, 3, "lstm", 2, 0.1),
                  SL.FusedSoftmax(9), SL.MultiHot(9), SL.HashBucket(5)):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="0 <= height < length"):
        SL.DeepRecurrence(4, length=2, height=2)
    bitmap = SL.MultiHot(5)(tf.constant([[3, 3, 0, 1]])).numpy()
    np.testing.assert_array_equal(bitmap, [[0, 1, 0, 1, 0]])     # padding 0 is not a purchase


def test_cells_and_fnn_inputs_build_and_score(sessions):
    x, _ = sessions
    x = {k: v[-4:] for k, v in x.items()}
    for extra in ({"cell": "lstm", "fnn_input": "bitmap"}, {"cell": "gru", "user_buckets": 11, "height": 1}):
        m = drnn.build({**TINY, **extra})
        out = m(x).numpy()
        assert out.shape == (4, TINY["num_items"]) and np.isfinite(out).all() and (out[:, 0] < -1e8).all()
    assert drnn.USER_ID in m.input_names_used
