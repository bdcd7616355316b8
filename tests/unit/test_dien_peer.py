"""benchmarks/dien_peer.py's TFRecord -> .npz conversion keeps shapes, order and
right padding, and the peer's (item, category, region) -> RecBole item mapping
reproduces every id.  NumPy/TF only: torch and RecBole are never imported."""
import importlib.util
import os
import sys

import numpy as np
import pytest

from feedrank import features as F
from tests.helpers import model_harness
from tests.helpers.config import ROOT


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dien_peer = load("dien_peer", "benchmarks/dien_peer.py")
recbole_dien = load("recbole_dien", "benchmarks/peer/recbole_dien.py")


def test_npz_round_trip_keeps_shapes_order_and_padding(tmp_path):
    n = 37
    batch = model_harness.random_batch(n, seed=3)
    labels = np.arange(n) % 3 == 0
    split_dir = tmp_path / "Split-train"
    split_dir.mkdir()
    model_harness.write_transformed(str(split_dir / "part-0.gz"), batch, labels)

    arrays = dien_peer.read_split(str(split_dir), model_harness.transformed_spec(), F.BUILTIN, batch=8)
    summary = dien_peer.check_arrays(arrays, F.BUILTIN)
    assert summary["examples"] == n and summary["positives"] == labels.sum()
    for k, v in batch.items():
        np.testing.assert_array_equal(arrays[k], v, err_msg=k)
        assert arrays[k].shape == v.shape
    np.testing.assert_array_equal(arrays[F.LABEL], labels.astype(np.int32))

    path = str(tmp_path / "x" / "examples.npz")
    vocab = dict(model_harness.VOCAB_SIZES)
    dien_peer.write_npz(path, {"train": arrays, "eval": arrays}, vocab)
    splits, vocab_back = dien_peer.read_npz(path)
    assert vocab_back == vocab and set(splits) == {"train", "eval"}
    for k, v in arrays.items():
        np.testing.assert_array_equal(splits["train"][k], v)
    # the peer script reads the same file the same way
    splits_peer, vocab_peer = recbole_dien.load_npz(path)
    assert vocab_peer == vocab
    np.testing.assert_array_equal(splits_peer["eval"][F.idx(F.CLICK_ITEMS.name)],
                                  batch[F.idx(F.CLICK_ITEMS.name)])


def test_left_padding_is_rejected():
    ids = np.array([[3, 4, 0, 0], [0, 0, 5, 6], [0, 0, 0, 0]])
    with pytest.raises(ValueError, match="right-padded"):
        dien_peer.sequence_lengths(ids)
    np.testing.assert_array_equal(dien_peer.sequence_lengths(ids[[0, 2]]), [2, 0])


def test_recbole_items_reproduce_the_transformed_ids():
    vocab = dict(model_harness.VOCAB_SIZES)
    splits = {s: {k: v.astype(np.int32) for k, v in model_harness.random_batch(50, seed=i).items()}
              for i, s in enumerate(("train", "eval"))}
    for s in splits.values():
        s[F.LABEL] = (np.arange(50) % 2).astype(np.int32)
    table, cols = recbole_dien.recbole_arrays(splits, vocab)
    assert [int(table[f][0]) for f in recbole_dien.ITEM_FEATURES] == [0, 0, 0]  # padding item
    for s, a in splits.items():
        c = cols[s]
        hist = c["item_id_list"]
        for f, seq in zip(recbole_dien.ITEM_FEATURES, F.CLICK_SEQUENCE):
            np.testing.assert_array_equal(table[f][c["item_id"]], a[f])
            np.testing.assert_array_equal(table[f][hist], a[F.idx(seq.name)])
        assert ((hist == 0) == (a[F.idx(F.CLICK_ITEMS.name)] == 0)).all()
        lengths = (a[F.idx(F.CLICK_ITEMS.name)] != 0).sum(1)
        np.testing.assert_array_equal(c["true_length"], lengths)
        np.testing.assert_array_equal(c["item_length"], np.maximum(lengths, 1))
        np.testing.assert_array_equal(c["user_id"], a[F.idx(F.USER_REGION_ID.name)])
    assert "torch" not in sys.modules
