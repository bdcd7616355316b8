"""tf.Transform for the session samples: the catalogue's ids, padded id matrices, both targets.

`preprocessing_fn` (the Transform component's) reads the samples' feature contract
(`feedrank.sessions.features`) and writes the model's inputs (`feedrank.sessions.drnn.INPUTS`)
plus the targets.  Pages, purchased items and targets share ONE id space, the catalogue
(`feedrank.sessions.catalogue`, read from ``custom_config["catalogue"]``, the log's folder):
the ``pages`` vocabulary holds every catalogue page, model id = its index + 1, so 0 is the
padding and N + 1 the id of a page or item missing from the catalogue (out of vocabulary);
the ``items`` vocabulary lists the catalogue's item pages (the ones an add-to-cart can name).

* ``pages`` int64 [B, max_pages]: history then recent pages (oldest first), the last
  ``max_pages`` kept, LEFT-padded with 0;
* ``dwell`` float32 [B, max_pages]: their dwell times, aligned;
* ``purchases`` int64 [B, max_purchases]: the purchase history's last items;
* ``user_id`` string [B];
* ``label_items`` int64 [B, max_labels]: the next add-to-cart's items, 0-padded (0: none);
* ``next_page`` int64 [B]: the page viewed next (0: none).

The served graph applies the same transform to a raw request (`request_features` turns it
into the contract's features).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional

import tensorflow as tf

from feedrank.sessions import drnn
from feedrank.sessions import features as SF

log = logging.getLogger(__name__)

PAGE_VOCAB, ITEM_VOCAB = "pages", "items"
LABEL_ITEMS, NEXT_PAGE = "label_items", "next_page"
FULL_PATH = "full_path"   # 1 on the prefix that ends on the page before the add-to-cart (the training weight's)
DEFAULTS = {"max_pages": 50, "max_purchases": 50, "max_labels": 4}
CATALOGUE = "catalogue"     # custom_config: the log's folder, whose items table is the catalogue


def _ragged(x: Any) -> tf.RaggedTensor:
    if isinstance(x, tf.SparseTensor):
        return tf.RaggedTensor.from_sparse(x)
    if isinstance(x, tf.RaggedTensor):
        return x
    return tf.RaggedTensor.from_tensor(x)


def left_pad(x: tf.RaggedTensor, width: int, default: Any) -> tf.Tensor:
    """The last ``width`` values of each row, LEFT-padded with ``default``: [B, width]."""
    lengths = tf.minimum(x.row_lengths(), width)
    tail = x[:, -width:]
    dense = tail.to_tensor(default_value=default, shape=[None, width])   # right-padded
    return tf.reverse(tf.reverse_sequence(dense, lengths, seq_axis=1, batch_axis=0), axis=[1])


def vocabulary_list(tf_transform_output: Any, name: str) -> List[str]:
    """A vocabulary the Transform wrote (``PAGE_VOCAB`` or ``ITEM_VOCAB``), as text, in id order."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in tf_transform_output.vocabulary_by_name(name)]


def _ids(values: tf.Tensor, vocab: Any) -> tf.Tensor:
    """Page ids -> model ids: 1..N the vocabulary, N + 1 out of vocabulary."""
    import tensorflow_transform as tft

    return tf.cast(tft.apply_vocabulary(values, deferred_vocab_filename_tensor=vocab, num_oov_buckets=1),
                   tf.int64) + 1


def _lookup(values: tf.RaggedTensor, vocab: Any) -> tf.RaggedTensor:
    return values.with_flat_values(_ids(values.flat_values, vocab))


def preprocessing_fn(inputs: Mapping[str, Any], custom_config: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Raw session samples -> the model's inputs and the label items (module docstring)."""
    import tensorflow_transform as tft

    from feedrank.sessions import catalogue

    config = dict(custom_config or {})
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if k in DEFAULTS}}
    if not config.get(CATALOGUE):
        raise ValueError(f"the session Transform needs custom_config[{CATALOGUE!r}]: the log's folder "
                         f"(its items table is the catalogue)")
    cat = catalogue.load(str(config[CATALOGUE]))
    pages = tf.concat([_ragged(inputs[SF.HISTORY_PAGES]), _ragged(inputs[SF.RECENT_PAGES])], axis=1)
    dwell = tf.concat([_ragged(inputs[SF.HISTORY_DWELL]), _ragged(inputs[SF.RECENT_DWELL])], axis=1)
    bought = _ragged(inputs[SF.PURCHASE_HISTORY])
    labels = _ragged(inputs[SF.LABEL_ITEMS])
    # the vocabularies are the catalogue itself (every entry counted alike), not the pages seen
    vocab = tft.vocabulary(tf.constant(list(cat.page_ids)), vocab_filename=PAGE_VOCAB)
    tft.vocabulary(tf.constant(cat.item_ids), vocab_filename=ITEM_VOCAB)
    nxt = tf.reshape(inputs[SF.NEXT_PAGE], [-1])
    return {
        drnn.PAGES: left_pad(_lookup(pages, vocab), int(cfg["max_pages"]), tf.constant(0, tf.int64)),
        drnn.DWELL: left_pad(tf.cast(dwell, tf.float32), int(cfg["max_pages"]), 0.0),
        drnn.PURCHASES: left_pad(_lookup(bought, vocab), int(cfg["max_purchases"]), tf.constant(0, tf.int64)),
        drnn.USER_ID: tf.reshape(inputs[SF.USER_ID], [-1]),
        LABEL_ITEMS: _lookup(labels, vocab).to_tensor(0, shape=[None, int(cfg["max_labels"])]),
        NEXT_PAGE: tf.where(tf.equal(nxt, ""), tf.zeros_like(nxt, tf.int64), _ids(nxt, vocab)),
        FULL_PATH: tf.reshape(tf.cast(inputs[SF.FULL_PATH], tf.int64), [-1]),
    }


def _compact(mask: tf.Tensor, values: tf.Tensor) -> tf.SparseTensor:
    """The entries of ``values`` where ``mask`` holds, each row's entries in columns 0, 1, ..."""
    where = tf.where(mask)
    cols = tf.gather_nd(tf.cumsum(tf.cast(mask, tf.int64), axis=1) - 1, where)
    indices = tf.stack([where[:, 0], cols], axis=1)
    return tf.SparseTensor(indices, tf.gather_nd(values, where), tf.shape(values, out_type=tf.int64))


def request_features(pages: tf.Tensor, dwell: tf.Tensor, purchases: tf.Tensor, user_id: tf.Tensor) -> Dict[str, Any]:
    """A raw request (string ids, "" padding anywhere) as the samples' raw features: the
    session's pages are all recent pages (the transform joins history and recent pages in
    order), its purchases the purchase history, and there are no label items."""
    real = tf.not_equal(pages, "")
    batch = tf.shape(pages, out_type=tf.int64)[0]

    def empty(dtype: tf.DType) -> tf.SparseTensor:
        return tf.SparseTensor(tf.zeros([0, 2], tf.int64), tf.zeros([0], dtype), tf.stack([batch, 0]))

    return {SF.RECENT_PAGES: _compact(real, pages), SF.RECENT_DWELL: _compact(real, dwell),
            SF.HISTORY_PAGES: empty(tf.string), SF.HISTORY_DWELL: empty(tf.float32),
            SF.PURCHASE_HISTORY: _compact(tf.not_equal(purchases, ""), purchases),
            SF.LABEL_ITEMS: empty(tf.string), SF.NEXT_PAGE: tf.fill(tf.shape(user_id), ""), SF.USER_ID: user_id,
            SF.FULL_PATH: tf.zeros(tf.shape(user_id), tf.int64)}
