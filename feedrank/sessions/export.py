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

`export_raw` writes the pipeline's served form (docs/session_pipeline.md): the same
``serving_default`` over RAW ids, with the tf.Transform layer attached
(`feedrank.sessions.transform`), as the rankers' exports have it:

* ``pages`` string [B, T]: the session's page ids so far, oldest first, "" padding;
* ``dwell`` float32 [B, T]: their dwell times;
* ``purchases`` string [B, P]: the user's earlier add-to-cart item ids, "" padding;
* ``user_id`` string [B];

returning ``items`` string [B, k] (the item ids, best first) and ``scores`` float32 [B, k]:
the next add-to-cart's probabilities (the model's ``cart`` output).  A page or item id outside
the catalogue is the out-of-vocabulary id.  A second signature, ``catalogue_scores``, takes
the same request and returns every catalogue id's probability, ``scores`` float32 [B, V]
(0 for non-item pages, the padding and the out-of-vocabulary id), with ``ids`` string [V],
the raw id of each column, so a caller need not guess a top k.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Mapping, Optional

import tensorflow as tf
import tf_keras as keras

from feedrank.sessions import drnn

log = logging.getLogger(__name__)

ITEMS, SCORES = "items", "scores"
INFO_FILE = "session_model.json"


def serving_spec() -> Dict[str, tf.TensorSpec]:
    """The request tensors of ``serving_default`` (`drnn.input_spec`)."""
    return drnn.input_spec()


def cart_probabilities(model: keras.Model, inputs: Dict[str, tf.Tensor]) -> tf.Tensor:
    """[B, V] the next add-to-cart's probability of every catalogue id."""
    out = model.cart(inputs) if isinstance(model, drnn.SessionModel) else model(inputs, training=False)
    return tf.nn.softmax(out[drnn.CART] if isinstance(out, dict) else out, axis=-1)


def top_k(model: keras.Model, inputs: Dict[str, tf.Tensor], k: int) -> Dict[str, tf.Tensor]:
    """The top-``k`` items and their probabilities for a batch of sessions (also the served graph)."""
    scores, items = tf.math.top_k(cart_probabilities(model, inputs), k=k)
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
    num_items = int(model.head.num_pages)
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


def raw_serving_spec() -> Dict[str, tf.TensorSpec]:
    """The request tensors of the raw ``serving_default`` (`export_raw`)."""
    return {drnn.PAGES: tf.TensorSpec([None, None], tf.string, drnn.PAGES),
            drnn.DWELL: tf.TensorSpec([None, None], tf.float32, drnn.DWELL),
            drnn.PURCHASES: tf.TensorSpec([None, None], tf.string, drnn.PURCHASES),
            drnn.USER_ID: tf.TensorSpec([None], tf.string, drnn.USER_ID)}


class _RawServing(tf.Module):
    def __init__(self, model: keras.Model, tft_layer: Any, pages: List[str], k: int):
        super().__init__()
        self.model, self.tft_layer, self.k = model, tft_layer, k
        self.item_ids = tf.constant([""] + list(pages) + [""], tf.string)   # model id -> raw id ("": pad, OOV)

    def _features(self, pages, dwell, purchases, user_id) -> Dict[str, tf.Tensor]:
        from feedrank.sessions import transform

        tf.debugging.assert_equal(tf.shape(pages), tf.shape(dwell),
                                  message="dwell must have the shape of pages (one dwell time per page)")
        features = self.tft_layer(transform.request_features(pages, dwell, purchases, user_id))
        return {name: features[name] for name in drnn.INPUTS}

    @tf.function(input_signature=[raw_serving_spec()[name] for name in drnn.INPUTS])
    def serve(self, pages, dwell, purchases, user_id):
        out = top_k(self.model, self._features(pages, dwell, purchases, user_id), self.k)
        return {ITEMS: tf.gather(self.item_ids, out[ITEMS]), SCORES: out[SCORES]}

    @tf.function(input_signature=[raw_serving_spec()[name] for name in drnn.INPUTS])
    def catalogue_scores(self, pages, dwell, purchases, user_id):
        return {SCORES: cart_probabilities(self.model, self._features(pages, dwell, purchases, user_id)),
                "ids": self.item_ids}


def export_raw(model: keras.Model, tf_transform_output: Any, path: str, k: int = 20,
               info: Optional[Mapping[str, Any]] = None) -> str:
    """Saves ``model`` with the raw-id top-``k`` ``serving_default`` (module docstring) and the
    Transform layer to ``path``; writes ``session_model.json`` (model, k, num_items, inputs,
    outputs and ``info``, e.g. gap_s and k_pages).  Returns ``path``."""
    from feedrank.sessions.transform import PAGE_VOCAB, vocabulary_list

    pages = vocabulary_list(tf_transform_output, PAGE_VOCAB)
    num_items = int(model.head.num_pages)
    if num_items != len(pages) + 2:
        raise ValueError(f"the model scores {num_items - 2} catalogue ids but the catalogue has {len(pages)}")
    items = sum(model.head.item_mask)
    if not 1 <= k <= items:
        raise ValueError(f"top-k must be in [1, {items}] (the catalogue has {items} items), got {k}")
    module = _RawServing(model, tf_transform_output.transform_features_layer(), pages, int(k))
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve.get_concrete_function(),
                                                  "catalogue_scores": module.catalogue_scores.get_concrete_function()})
    with open(os.path.join(path, INFO_FILE), "w") as f:
        json.dump({"model": model.name, "k": int(k), "num_items": num_items, "raw": True,
                   "inputs": sorted(raw_serving_spec()), "outputs": [ITEMS, SCORES],
                   "signatures": ["serving_default", "catalogue_scores"], **dict(info or {})},
                  f, indent=2, sort_keys=True)
    log.info("exported %s (raw ids, top-%d of %d items) to %s", model.name, k, num_items - 1, path)
    return path
