"""Padding of the raw sequences that `serving_default` accepts.

A request may pad a user's histories on the left ("most recent last" invites
it), on the right, or not at all (every row full).  Empty strings must be
dropped wherever they sit, so all three give the same ragged rows and, on
the pushed model, the same scores.
"""
import numpy as np
import pytest
import tensorflow as tf

from feedrank import features as F
from feedrank.train.export import strip_padding


def _rows(r: tf.RaggedTensor):
    return [[v.decode() for v in row] for row in r.to_list()]


def test_strip_padding_drops_empty_strings_wherever_they_sit():
    x = tf.constant([["", "", "a", "b"], ["a", "b", "", ""], ["", "a", "", "b"], ["a", "b", "c", "d"]])
    got = _rows(strip_padding(x, max_len=3))
    assert got == [["a", "b"], ["a", "b"], ["a", "b"], ["b", "c", "d"]]


def test_strip_padding_keeps_the_most_recent_max_len_values():
    x = tf.constant([["", "1", "2", "3", "4", "5"]])
    assert _rows(strip_padding(x, max_len=2)) == [["4", "5"]]
    assert _rows(strip_padding(tf.constant([["", ""]]), max_len=2)) == [[]]


def _user_request(histories, width, left):
    req = {}
    for s in F.BUILTIN.seq_features:
        h = histories[s.name]
        pad = [""] * (width - len(h))
        req[s.name] = tf.constant([pad + h if left else h + pad])
    return req


@pytest.mark.e2e
def test_left_right_and_no_padding_give_identical_scores(first_run):
    from tests.e2e.test_serving_contract import _eval_examples, _request, _values

    cfg, summary = first_run
    model = tf.saved_model.load(summary["push"]["path"])
    fn = model.signatures["serving_default"]
    spec = F.FeatureSpec.read(summary["push"]["path"])   # the contract the model was exported with
    examples = _eval_examples(cfg, 40)
    candidates = examples[:10]
    users = [e for e in examples if len(_values(e, F.CLICK_ITEMS.name)) >= 2][:3]
    assert users, "no eval example with a click history"
    for user_ex in users:
        base = _request(user_ex, candidates, spec)
        hist = {s.name: _values(user_ex, s.name) for s in F.BUILTIN.seq_features}
        width = max(len(h) for h in hist.values()) + 7
        scores = {"none": fn(**base)["probabilities"].numpy()}  # each sequence at its own length
        for name, left in (("left", True), ("right", False)):
            scores[name] = fn(**dict(base, **_user_request(hist, width, left)))["probabilities"].numpy()
        for name, got in scores.items():
            np.testing.assert_allclose(got, scores["none"], rtol=1e-6, atol=1e-7, err_msg=name)
