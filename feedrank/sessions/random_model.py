"""A DRNN with random weights, exported in the served raw-id form, for load and endpoint checks.

`export_random_raw` writes what the session endpoint (``serving.sessions``)
serves, a SavedModel whose ``serving_default`` takes raw page and item ids
(looked up in the graph in one catalogue id space: "" is the padding id 0, an
unknown id the out-of-vocabulary id) and returns the top-k item ids and scores,
as `feedrank.sessions.export.export_raw` does for a trained model, but with the
catalogue given as lists instead of a tf.Transform output.  The endpoint's latency does not depend on what the
weights learnt, so the latency benchmark and the endpoint tests use it.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Dict, List, Mapping, Sequence, Tuple

import tensorflow as tf
import tf_keras as keras

from feedrank.sessions import drnn, export
from feedrank.sessions.catalogue import item_flags
from feedrank.sessions.sessionize import DEFAULT_GAP_S

log = logging.getLogger(__name__)


def _table(vocab: Mapping[str, int]) -> tf.lookup.StaticHashTable:
    init = tf.lookup.KeyValueTensorInitializer(tf.constant(list(vocab)), tf.constant(list(vocab.values()), tf.int64))
    return tf.lookup.StaticHashTable(init, default_value=len(vocab) + 1)       # out of vocabulary


def export_random_raw(path: str, pages: Sequence[str], items: Sequence[str], settings: Mapping,
                      k: int = 20, seed: int = 7, gap_s: int = DEFAULT_GAP_S,
                      ) -> Tuple[keras.Model, Dict[str, int], List[bool]]:
    """Builds a DRNN (``settings`` as `drnn.DrnnSettings`, random weights from ``seed``) over the
    catalogue ``pages`` (``items``: the ones that are items; one missing from ``pages`` joins it)
    and saves it with the raw top-``k`` signature and the endpoint's ``session_model.json`` to
    ``path``.

    Returns ``(keras model, vocabulary, item mask)``: the vocabulary maps a raw id to the model's
    id (1-based; 0 is padding, len + 1 out of vocabulary), the mask flags the item ids."""
    if not pages or not items:
        raise ValueError(f"export_random_raw needs non-empty vocabularies (pages: {len(pages)}, "
                         f"items: {len(items)})")
    keras.utils.set_random_seed(seed)
    catalogue = list(dict.fromkeys(list(pages) + list(items)))
    vocab = {p: i + 1 for i, p in enumerate(catalogue)}
    mask = item_flags(catalogue, set(items))
    model = drnn.build({**dict(settings), "num_pages": len(mask), "num_items": len(mask)}, mask)

    class Raw(tf.Module):
        """The raw-id ``serving_default`` around ``model``."""

        def __init__(self):
            super().__init__()
            self.model, self.ids = model, _table(vocab)
            self.names = tf.constant([""] + catalogue + [""])

        def lookup(self, raw):
            return tf.where(tf.equal(raw, ""), tf.zeros_like(raw, tf.int64), self.ids.lookup(raw))

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, "pages"),
                                      tf.TensorSpec([None, None], tf.float32, "dwell"),
                                      tf.TensorSpec([None, None], tf.string, "purchases"),
                                      tf.TensorSpec([None], tf.string, "user_id")])
        def serve(self, pages, dwell, purchases, user_id):
            out = export.top_k(self.model, {drnn.PAGES: self.lookup(pages), drnn.DWELL: dwell,
                                            drnn.PURCHASES: self.lookup(purchases), drnn.USER_ID: user_id}, k)
            return {"items": tf.gather(self.names, out["items"]), "scores": out["scores"]}

    raw = Raw()
    tf.saved_model.save(raw, path, signatures={"serving_default": raw.serve.get_concrete_function()})
    with open(os.path.join(path, export.INFO_FILE), "w") as f:
        json.dump({"model": "drnn", "k": k, "num_items": len(mask), "gap_s": gap_s,
                   "k_pages": settings.get("width", 5), "max_pages": 50,
                   "inputs": ["dwell", "pages", "purchases", "user_id"],
                   "outputs": ["items", "scores"]}, f)
    log.info("exported a random-weight DRNN (top-%d of %d items) to %s", k, len(items), path)
    return model, vocab, mask
