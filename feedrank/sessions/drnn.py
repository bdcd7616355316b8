"""The DRNN session recommender (tf_keras).

Wu, S., Ren, W., Yu, C., Chen, G., Zhang, D. and Zhu, J. "Personal
recommendation using deep recurrent neural networks in NetEase." ICDE 2016.
https://doi.org/10.1109/ICDE.2016.7498326

A session is a sequence of page views (page ids, dwell times in seconds; the
most recent last).  The model predicts the item the shopper will buy:

* k = ``width`` page states, the k most recent pages, run through ``length``
  stacked recurrent layers; each layer has one set of weights for every state;
* a history state before them: the older pages collapsed into one input,
  weighted by the dwell-time ageing factor (`layers.HistoryState`);
* ``height`` shortcuts: the final states of the ``height`` layers below the
  top also reach the output;
* an FNN over the user's purchase history (an embedding bag or a bitmap of
  the purchased items, optionally a hashed user id), fused with the RNN at
  the output by learned weights (`layers.FusedSoftmax`): the paper combines
  the two networks' softmax outputs, here the fusion is a learned weighted
  sum of their item logits, which keeps the sampled softmax exact;
* a softmax over the items: full, or sampled in training
  (`tf.nn.sampled_softmax_loss`) when the catalogue is large.

The model's inputs are `INPUTS` (`input_spec`); item 0 and page 0 are padding.
`from_samples` builds them from the session samples' feature contract
(`feedrank.sessions.features`) with page and item vocabularies (`vocabulary`).
"""
from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from feedrank.sessions import features as SF
from feedrank.sessions import layers as SL
from feedrank.train import layers as TL
from feedrank.train.distribute import global_mean
from feedrank.typed import Checked, ConfigError, setting

log = logging.getLogger(__name__)

PAGES, DWELL, PURCHASES, USER_ID = "pages", "dwell", "purchases", "user_id"
INPUTS = (PAGES, DWELL, PURCHASES, USER_ID)
SOFTMAX_MODES = ("full", "sampled", "auto")


def input_spec() -> Dict[str, tf.TensorSpec]:
    """The model inputs: pages and purchases are 0-padded id matrices, dwell the
    pages' dwell times in seconds (same shape as pages), user_id a string per row."""
    return {PAGES: tf.TensorSpec([None, None], tf.int64, PAGES),
            DWELL: tf.TensorSpec([None, None], tf.float32, DWELL),
            PURCHASES: tf.TensorSpec([None, None], tf.int64, PURCHASES),
            USER_ID: tf.TensorSpec([None], tf.string, USER_ID)}


class _Checked(Checked):
    """A session model family's settings (checked on construction, `feedrank.typed.Checked`):
    the softmax rules the families share."""

    def check(self, where: str) -> None:
        if self.softmax == "sampled" and not 0 < self.num_sampled < self.num_items:
            raise ConfigError(f"{where}.num_sampled must be in [1, num_items) for the sampled "
                              f"softmax, got {self.num_sampled} with num_items={self.num_items}")

    @property
    def sampled(self) -> bool:
        """True when training uses the sampled softmax."""
        if self.softmax == "auto":
            return self.num_items > self.sampled_above and self.num_sampled < self.num_items
        return self.softmax == "sampled"


@dataclasses.dataclass
class DrnnSettings(_Checked):
    """The DRNN's architecture and training settings (docs/drnn.md)."""
    SECTION = "drnn"
    num_pages: int = setting(1000, min=2)      # page vocabulary, 0 = padding
    num_items: int = setting(1000, min=2)      # item vocabulary, 0 = padding (never predicted)
    width: int = setting(5, min=1)             # k: page states
    length: int = setting(2, min=1)            # L: stacked recurrent layers
    height: int = setting(0, min=0)            # shortcuts from the layers below the top (< length)
    units: int = setting(64, min=1)            # neurons per recurrent layer
    cell: str = setting("simple", choices=SL.CELLS)
    page_dim: int = setting(32, min=1)
    dwell_input: bool = True                   # log(1 + dwell) joins each state's input
    use_history: bool = True                   # False: the DRNN without the history state
    history_ageing: str = setting("history", choices=SL.AGEING_SCOPES)
    use_fnn: bool = True                       # False: the DRNN without the FNN
    fnn_input: str = setting("embedding", choices=("embedding", "bitmap"))
    fnn_dim: int = setting(32, min=1)          # purchased-item embedding width (fnn_input=embedding)
    fnn_units: List[int] = setting([64], min=1)
    user_buckets: int = setting(0, min=0)      # > 0: a hashed user-id embedding joins the FNN
    dropout: float = setting(0.0, min=0.0, below=1.0)
    softmax: str = setting("auto", choices=SOFTMAX_MODES)
    num_sampled: int = setting(256, min=1)
    sampled_above: int = setting(10000, min=1)  # auto: sampled when num_items > this
    learning_rate: float = setting(1e-3, above=0.0)

    def check(self, where: str) -> None:
        super().check(where)
        if self.height >= self.length:
            raise ConfigError(f"{where}.height must be < {where}.length (shortcuts come from the "
                              f"{self.length - 1} layer(s) below the top), got height={self.height}, "
                              f"length={self.length}")
        if not self.fnn_units:
            raise ConfigError(f"{where}.fnn_units must list at least one layer width, got []")


class SessionModel(keras.Model):
    """An encoder (inputs -> branch vectors) and a `FusedSoftmax` head: logits [B, num_items].

    With ``num_sampled > 0`` a training step minimises the sampled-softmax
    loss, the mean over the global batch's rows under a distribution strategy;
    evaluation and prediction always use the full softmax.  Input keys
    the encoder does not use are ignored.
    """

    def __init__(self, encoder: keras.Model, head: SL.FusedSoftmax, num_sampled: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.head, self.num_sampled = encoder, head, int(num_sampled)
        self.input_names_used = [i.name for i in encoder.inputs]
        if not head.built:  # built on the encoder's symbolic outputs, so its weights exist before a step
            outs = encoder.outputs
            head(outs if len(outs) > 1 else outs[0])

    def _select(self, inputs: Mapping[str, Any]) -> Dict[str, Any]:
        missing = [k for k in self.input_names_used if k not in inputs]
        if missing:
            raise ValueError(f"{self.name} needs inputs {self.input_names_used}; missing {missing}")
        return {k: inputs[k] for k in self.input_names_used}

    def call(self, inputs, training=None):
        return self.head(self.encoder(self._select(inputs), training=training))

    def train_step(self, data):
        if not self.num_sampled:
            return super().train_step(data)
        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            branches = self.encoder(self._select(x), training=True)
            # this replica's share of the mean over every replica's rows: the optimizer sums
            # the replicas' gradients (rows per replica vary: a sample gives a row per label item)
            loss = global_mean(self.head.sampled_loss(branches, y, self.num_sampled))
            if self.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.losses))
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            loss = ctx.all_reduce(tf.distribute.ReduceOp.SUM, loss)   # logged: the global mean
        return {"loss": loss}


def compile_model(model: SessionModel, learning_rate: float) -> SessionModel:
    """Adam, softmax cross-entropy on the logits, top-1/top-10 accuracy metrics."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseTopKCategoricalAccuracy(1, name="top1"),
                           keras.metrics.SparseTopKCategoricalAccuracy(10, name="top10")])
    return model


def _log1p(x: tf.Tensor) -> tf.Tensor:
    return tf.math.log1p(tf.maximum(x, 0.0))


def _fnn(s: DrnnSettings, purchases: tf.Tensor, user_id) -> tf.Tensor:
    if s.fnn_input == "bitmap":
        x = SL.MultiHot(s.num_items, name="purchase_bitmap")(purchases)
    else:
        emb = keras.layers.Embedding(s.num_items, s.fnn_dim, name="purchase_embedding")(purchases)
        x = TL.MaskedPooling("mean", name="purchase_mean")(emb, TL.padding_mask(purchases))
    if user_id is not None:
        bucket = SL.HashBucket(s.user_buckets, name="user_bucket")(user_id)
        x = tf.concat([x, keras.layers.Embedding(s.user_buckets, s.fnn_dim, name="user_embedding")(bucket)], -1)
    return TL.mlp(s.fnn_units, "relu", s.dropout, name="fnn")(x)


def build(settings: DrnnSettings | Mapping[str, Any]) -> SessionModel:
    """The DRNN for ``settings`` (a `DrnnSettings` or its mapping), compiled."""
    s = settings if isinstance(settings, DrnnSettings) else DrnnSettings.from_mapping(settings)
    pages = keras.Input([None], dtype=tf.int64, name=PAGES)
    dwell = keras.Input([None], dtype=tf.float32, name=DWELL)
    inputs = [pages, dwell]
    real = TL.padding_mask(pages)
    emb = keras.layers.Embedding(s.num_pages, s.page_dim, name="page_embedding")(pages)
    recent_mask, older, recent_emb, recent_dwell = SL.RecentPages(s.width, name="recent_pages")(
        [real, emb, dwell])
    states = tf.concat([recent_emb, _log1p(recent_dwell)[..., None]], -1) if s.dwell_input else recent_emb
    mask = recent_mask
    if s.use_history:
        h = SL.HistoryState(s.history_ageing, name="history_state")(emb, dwell, real, older)
        if s.dwell_input:
            older_dwell = tf.reduce_sum(tf.where(older, dwell, tf.zeros_like(dwell)), axis=1, keepdims=True)
            h = tf.concat([h, _log1p(older_dwell)], -1)
        states = tf.concat([h[:, None, :], states], axis=1)
        mask = tf.concat([tf.reduce_any(older, axis=1, keepdims=True), recent_mask], axis=1)
    rnn = SL.DeepRecurrence(s.units, s.length, s.cell, s.height, s.dropout, name="drnn")(states, mask)
    branches = [rnn]
    if s.use_fnn:
        purchases = keras.Input([None], dtype=tf.int64, name=PURCHASES)
        inputs.append(purchases)
        user_id = None
        if s.user_buckets:
            user_id = keras.Input([], dtype=tf.string, name=USER_ID)
            inputs.append(user_id)
        branches.append(_fnn(s, purchases, user_id))
    encoder = keras.Model(inputs=inputs, outputs=branches, name="drnn_encoder")
    head = SL.FusedSoftmax(s.num_items, name="items")
    model = SessionModel(encoder, head, s.num_sampled if s.sampled else 0, name="drnn")
    log.info("DRNN: k=%d L=%d height=%d units=%d cell=%s history=%s fnn=%s softmax=%s over %d items",
             s.width, s.length, s.height, s.units, s.cell, s.use_history, s.use_fnn,
             "sampled" if s.sampled else "full", s.num_items)
    return compile_model(model, s.learning_rate)


def vocabulary(ids: Iterable[str]) -> Dict[str, int]:
    """Distinct ids -> 1..n, the most frequent first (ties by id); 0 stays the padding id.

    Frequency order makes the sampled softmax's log-uniform sampler a fair proposal."""
    counts = collections.Counter(ids)
    return {v: i + 1 for i, v in enumerate(sorted(counts, key=lambda v: (-counts[v], v)))}


def from_samples(samples: Sequence[Mapping[str, Any]], pages: Mapping[str, int], items: Mapping[str, int],
                 max_pages: int = 50, max_purchases: int = 50) -> Tuple[Dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Session samples in the contract of `feedrank.sessions.features` -> ``(inputs, labels, rows)``.

    A sample's pages are its history pages then its recent pages (oldest first);
    the last ``max_pages`` are kept, left-padded with 0, with their dwell
    times; the purchase history keeps its last ``max_purchases`` items.  A
    page or purchased item missing from the vocabulary is dropped.  A sample
    becomes one row per label item in ``items`` (``rows`` gives each row's
    sample index; a sample whose label items are all unknown has no row).
    """
    if max_pages < 1 or max_purchases < 1:
        raise ValueError(f"max_pages and max_purchases must be >= 1, got {max_pages}, {max_purchases}")
    n = len(samples)
    page_ids = np.zeros((n, max_pages), np.int64)
    dwell = np.zeros((n, max_pages), np.float32)
    bought = np.zeros((n, max_purchases), np.int64)
    users, labels, rows = [], [], []
    for i, s in enumerate(samples):
        seq = [(pages[p], d) for p, d in zip(list(s[SF.HISTORY_PAGES]) + list(s[SF.RECENT_PAGES]),
                                              list(s[SF.HISTORY_DWELL]) + list(s[SF.RECENT_DWELL])) if p in pages]
        seq = seq[-max_pages:]
        if seq:
            page_ids[i, max_pages - len(seq):] = [p for p, _ in seq]
            dwell[i, max_pages - len(seq):] = [d for _, d in seq]
        hist = [items[v] for v in s[SF.PURCHASE_HISTORY] if v in items][-max_purchases:]
        bought[i, :len(hist)] = hist
        user = s[SF.USER_ID]
        users.append(user.encode() if isinstance(user, str) else bytes(user))
        for item in s[SF.LABEL_ITEMS]:
            if item in items:
                labels.append(items[item])
                rows.append(i)
    dropped = n - len(set(rows))
    if dropped:
        log.warning("%d of %d samples have no label item in the item vocabulary and give no row", dropped, n)
    rows_a = np.asarray(rows, np.int64)
    inputs = {PAGES: page_ids[rows_a], DWELL: dwell[rows_a], PURCHASES: bought[rows_a],
              USER_ID: np.asarray(users, dtype=object)[rows_a].astype(bytes) if rows else np.zeros(0, "S1")}
    return inputs, np.asarray(labels, np.int64), rows_a
