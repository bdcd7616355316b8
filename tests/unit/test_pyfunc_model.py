"""`feedrank.tracking.pyfunc_model`: which SavedModels become an MLflow pyfunc ranker, and how a
frame with one row per candidate becomes the signature's tensors (hand-made values)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from feedrank.tracking import pyfunc_model as P


class _Ranker(tf.Module):
    @tf.function(input_signature=[{"item_id": tf.TensorSpec([None], tf.string, "item_id"),
                                   "price": tf.TensorSpec([None], tf.float32, "price"),
                                   "click_item_ids": tf.TensorSpec([None, None], tf.string, "click_item_ids")}])
    def serve(self, x):
        clicks = tf.reduce_sum(tf.cast(tf.not_equal(x["click_item_ids"], ""), tf.float32), axis=1)
        return {"probabilities": tf.sigmoid(x["price"] + clicks)}


class _TopK(tf.Module):
    @tf.function(input_signature=[{"pages": tf.TensorSpec([None, None], tf.string, "pages"),
                                   "dwell": tf.TensorSpec([None, None], tf.float32, "dwell")}])
    def serve(self, x):
        return {"top_items": x["pages"][:, :1], "top_scores": x["dwell"][:, :1]}


def _save(module, path):
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve.get_concrete_function()})
    return str(path)


def test_a_ranker_is_accepted_and_a_top_k_recommender_is_not(tmp_path):
    fn = P.ranking_signature(_save(_Ranker(), tmp_path / "ranker"))
    frame = pd.DataFrame({"item_id": ["a", "b"], "price": [0.0, 1.0], "click_item_ids": [["x", "y"], []]})
    tensors = P.tensors_of(frame, P._inputs(fn))
    assert tensors["click_item_ids"].tolist() == [["x", "y"], ["", ""]]      # padded with ""
    got = fn(**{k: tf.constant(v) for k, v in tensors.items()})["probabilities"].numpy()
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-np.array([2.0, 1.0]))), rtol=1e-6)
    with pytest.raises(ValueError, match=r"answers \['top_items', 'top_scores'\].*not a ranker"):
        P.ranking_signature(_save(_TopK(), tmp_path / "topk"))
    with pytest.raises(ValueError, match="not a readable SavedModel"):
        P.ranking_signature(str(tmp_path / "nowhere"))


def test_a_frame_missing_a_column_or_holding_text_for_a_number_is_named(tmp_path):
    fn = P.ranking_signature(_save(_Ranker(), tmp_path / "ranker"))
    with pytest.raises(ValueError, match=r"missing input column\(s\) \['price'\]"):
        P.tensors_of(pd.DataFrame({"item_id": ["a"], "click_item_ids": [[]]}), P._inputs(fn))
    with pytest.raises(ValueError, match="column 'price' holds numbers"):
        P.tensors_of(pd.DataFrame({"item_id": ["a"], "price": ["cheap"], "click_item_ids": [[]]}), P._inputs(fn))
    with pytest.raises(ValueError, match="column 'click_item_ids' holds lists of strings"):
        P.tensors_of(pd.DataFrame({"item_id": ["a"], "price": [1.0], "click_item_ids": ["x"]}), P._inputs(fn))
