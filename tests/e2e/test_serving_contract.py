"""The serving contract of the pushed model.

`serving_default` takes the user's side once and N candidates; its scores
must equal `serving_tf_example` on tf.Examples that pair the same user side
with each candidate, where the example generator's Python cross features are
used.  That checks the broadcast, the in-graph crosses and the attached
tf.Transform graph against the training path in one go.
"""
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from feedrank import features as F
from feedrank.evaluate.mlmd_reader import latest_run
from feedrank.examples.build import crosses

pytestmark = pytest.mark.e2e


def _eval_examples(cfg, n):
    run = latest_run(cfg.metadata_path)
    uri = run.artifact("BehaviorExampleGen", "examples").uri
    files = sorted(glob.glob(os.path.join(uri, "Split-eval", "*")))
    records = list(tf.data.TFRecordDataset(files, compression_type="GZIP").take(n))
    return [tf.train.Example.FromString(r.numpy()) for r in records]


def _values(ex, name):
    f = ex.features.feature[name]
    kind = f.WhichOneof("kind")
    vals = list(getattr(f, kind).value) if kind else []
    return [v.decode() if isinstance(v, bytes) else v for v in vals]


def _pair(user_ex, cand_ex, spec: F.FeatureSpec):
    """A tf.Example with user_ex's user side (of ``spec``) and cand_ex's candidate side."""
    ex = tf.train.Example()
    ex.CopyFrom(cand_ex)
    feats = ex.features.feature
    for name in spec.features_of_side("user"):
        feats[name].CopyFrom(user_ex.features.feature[name])
    region_match, share = crosses(_values(user_ex, F.USER_REGION_ID.name)[0],
                                  _values(cand_ex, F.REGION_ID.name)[0],
                                  _values(user_ex, F.CLICK_CATEGORIES.name),
                                  _values(cand_ex, F.CATEGORY_ID.name)[0])
    feats[F.REGION_MATCH.name].float_list.value[:] = [region_match]
    feats[F.INTEREST_CATEGORY_SHARE.name].float_list.value[:] = [share]
    return ex


def _request(user_ex, candidates, spec: F.FeatureSpec):
    """``serving_default``'s request of ``spec``'s built-in features: one user, the candidates."""
    req = {}
    for s in F.BUILTIN.seq_features:
        req[s.name] = tf.constant([_values(user_ex, s.name) or [""]], tf.string)  # [1, L]
    req[F.USER_REGION_ID.name] = tf.constant(_values(user_ex, F.USER_REGION_ID.name))
    for d in spec.request_dense("user"):
        req[d.name] = tf.constant(_values(user_ex, d.name), tf.float32)
    for f in spec.id_features:
        if f.side == "candidate":
            req[f.name] = tf.constant([_values(c, f.name)[0] for c in candidates])
    for d in spec.request_dense("candidate"):
        req[d.name] = tf.constant([_values(c, d.name)[0] for c in candidates], tf.float32)
    return req


def test_serving_default_shares_the_user_side_and_matches_tf_examples(first_run):
    cfg, summary = first_run
    model = tf.saved_model.load(summary["push"]["path"])
    spec = F.FeatureSpec.read(summary["push"]["path"])   # the contract the model was exported with
    examples = _eval_examples(cfg, 40)
    candidates = examples[:12]
    for user_ex in examples[::8]:
        got = model.signatures["serving_default"](**_request(user_ex, candidates, spec))["probabilities"].numpy()
        paired = tf.constant([_pair(user_ex, c, spec).SerializeToString() for c in candidates])
        want = model.signatures["serving_tf_example"](examples=paired)["probabilities"].numpy()
        assert got.shape == (len(candidates),)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_example_generator_crosses_equal_the_in_graph_crosses(first_run):
    from feedrank.transform.crosses import cross_features

    cfg, _ = first_run
    examples = _eval_examples(cfg, 300)
    cats = [_values(e, F.CLICK_CATEGORIES.name) for e in examples]
    width = max(1, max(len(c) for c in cats))
    got = cross_features(
        tf.constant([_values(e, F.USER_REGION_ID.name)[0] for e in examples]),
        tf.constant([_values(e, F.REGION_ID.name)[0] for e in examples]),
        tf.constant([c + [""] * (width - len(c)) for c in cats]),
        tf.constant([_values(e, F.CATEGORY_ID.name)[0] for e in examples]))
    for name in (F.REGION_MATCH.name, F.INTEREST_CATEGORY_SHARE.name):
        written = np.array([_values(e, name)[0] for e in examples], np.float32)
        np.testing.assert_allclose(got[name].numpy(), written, rtol=1e-6)
    assert any(v > 0 for v in got[F.INTEREST_CATEGORY_SHARE.name].numpy())
