"""tf.Transform for the session samples: page and item vocabularies, padded id matrices.

`preprocessing_fn` (the Transform component's) reads the samples' feature contract
(`feedrank.sessions.features`) and writes the model's inputs (`feedrank.sessions.drnn.INPUTS`)
plus the label items:

* ``pages`` int64 [B, max_pages]: history then recent pages (oldest first), the last
  ``max_pages`` kept, LEFT-padded with 0; ids from the ``pages`` vocabulary + 1, so 0 is the
  padding and an unknown page (OOV) is padding too;
* ``dwell`` float32 [B, max_pages]: their dwell times, aligned;
* ``purchases`` int64 [B, max_purchases]: the purchase history's last items (``items`` vocabulary);
* ``user_id`` string [B];
* ``label_items`` int64 [B, max_labels]: the sample's label items, 0-padded (0: none or unknown).

Both vocabularies are numbered by descending frequency (tf.Transform's order), as
`feedrank.sessions.drnn.vocabulary` numbers them; items are counted over the labels and the
purchase histories, pages over the history and recent pages.  The served graph applies the
same transform to a raw request (`request_features` turns it into the contract's features).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional

import tensorflow as tf

from feedrank.sessions import drnn
from feedrank.sessions import features as SF

log = logging.getLogger(__name__)

PAGE_VOCAB, ITEM_VOCAB = "pages", "items"
LABEL_ITEMS = "label_items"
DEFAULTS = {"max_pages": 50, "max_purchases": 50, "max_labels": 4}


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


def _lookup(values: tf.RaggedTensor, vocab: str) -> tf.RaggedTensor:
    import tensorflow_transform as tft

    ids = tft.apply_vocabulary(values.flat_values, deferred_vocab_filename_tensor=vocab, default_value=-1)
    return values.with_flat_values(tf.cast(ids, tf.int64) + 1)   # 0: padding and unknown ids


def preprocessing_fn(inputs: Mapping[str, Any], custom_config: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Raw session samples -> the model's inputs and the label items (module docstring)."""
    import tensorflow_transform as tft

    cfg = {**DEFAULTS, **{k: v for k, v in (custom_config or {}).items() if k in DEFAULTS}}
    pages = tf.concat([_ragged(inputs[SF.HISTORY_PAGES]), _ragged(inputs[SF.RECENT_PAGES])], axis=1)
    dwell = tf.concat([_ragged(inputs[SF.HISTORY_DWELL]), _ragged(inputs[SF.RECENT_DWELL])], axis=1)
    bought = _ragged(inputs[SF.PURCHASE_HISTORY])
    labels = _ragged(inputs[SF.LABEL_ITEMS])
    page_vocab = tft.vocabulary(pages.flat_values, vocab_filename=PAGE_VOCAB)
    item_vocab = tft.vocabulary(tf.concat([labels.flat_values, bought.flat_values], 0), vocab_filename=ITEM_VOCAB)
    page_ids = _lookup(pages, page_vocab)
    return {
        drnn.PAGES: left_pad(page_ids, int(cfg["max_pages"]), tf.constant(0, tf.int64)),
        drnn.DWELL: left_pad(tf.cast(dwell, tf.float32), int(cfg["max_pages"]), 0.0),
        drnn.PURCHASES: left_pad(_lookup(bought, item_vocab), int(cfg["max_purchases"]), tf.constant(0, tf.int64)),
        drnn.USER_ID: tf.reshape(inputs[SF.USER_ID], [-1]),
        LABEL_ITEMS: _lookup(labels, item_vocab).to_tensor(0, shape=[None, int(cfg["max_labels"])]),
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
            SF.LABEL_ITEMS: empty(tf.string), SF.USER_ID: user_id}
