"""Export of a session model (`drnn`, `gru4rec`): a SavedModel whose
``serving_default`` returns the top-k items of the current session.

Request (`serving_spec`), one row per shopper:

* ``pages`` int64 [B, T]: the session's page ids so far, in time order (the
  most recent last), 0-padded on either side;
* ``dwell`` float32 [B, T]: each page's dwell time in seconds (the current
  page's dwell so far, or 0);
* ``user_id`` string [B];
* ``purchases`` int64 [B, P]: the user's earlier purchased item ids, 0-padded.

Response: ``items`` int64 [B, k], the k most likely next purchases (never
the padding item 0), and ``scores`` float32 [B, k], their softmax
probabilities, best first (`tf.math.top_k` in the graph).  Ids are the
model's integer ids; the vocabulary lookup of raw page/item ids is not part
of this graph.  Every model takes the whole request and uses the inputs it
needs (the DRNN without the FNN ignores ``purchases``; ``user_id`` is used
only with ``user_buckets > 0``).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Dict

import tensorflow as tf
import tf_keras as keras

from feedrank.sessions import drnn

log = logging.getLogger(__name__)

ITEMS, SCORES = "items", "scores"
INFO_FILE = "session_model.json"


def serving_spec() -> Dict[str, tf.TensorSpec]:
    """The request tensors of ``serving_default`` (`drnn.input_spec`)."""
    return drnn.input_spec()


def top_k(model: keras.Model, inputs: Dict[str, tf.Tensor], k: int) -> Dict[str, tf.Tensor]:
    """The top-``k`` items and their probabilities for a batch of sessions (also the served graph)."""
    logits = model(inputs, training=False)
    scores, items = tf.math.top_k(tf.nn.softmax(logits, axis=-1), k=k)
    return {ITEMS: tf.cast(items, tf.int64), SCORES: scores}


class _Serving(tf.Module):
    def __init__(self, model: keras.Model, k: int):
        super().__init__()
        self.model, self.k = model, k

    @tf.function(input_signature=[serving_spec()[name] for name in drnn.INPUTS])
    def serve(self, pages, dwell, purchases, user_id):
        tf.debugging.assert_equal(tf.shape(pages), tf.shape(dwell),
                                  message="dwell must have the shape of pages (one dwell time per page)")
        request = {drnn.PAGES: pages, drnn.DWELL: dwell, drnn.PURCHASES: purchases, drnn.USER_ID: user_id}
        return top_k(self.model, request, self.k)


def export(model: keras.Model, path: str, k: int = 10) -> str:
    """Saves ``model`` with the top-``k`` ``serving_default`` to ``path``; returns ``path``.

    Writes ``session_model.json`` beside it (the model's name, k, item count).
    """
    num_items = int(model.head.num_items)
    if not 1 <= k < num_items:
        raise ValueError(f"top-k must be in [1, {num_items - 1}] (the model has {num_items - 1} items), got {k}")
    module = _Serving(model, int(k))
    fn = module.serve.get_concrete_function()
    tf.saved_model.save(module, path, signatures={"serving_default": fn})
    with open(os.path.join(path, INFO_FILE), "w") as f:
        json.dump({"model": model.name, "k": int(k), "num_items": num_items,
                   "inputs": sorted(serving_spec()), "outputs": [ITEMS, SCORES]}, f, indent=2)
    log.info("exported %s (top-%d of %d items) to %s", model.name, k, num_items - 1, path)
    return path
