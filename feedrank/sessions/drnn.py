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
  the purchased items, optionally a hashed user id), fused with the RNN in
  the output head (`layers.CatalogueHead`);
* two softmax outputs over the catalogue, tied to the page embeddings: the
  next add-to-cart (``cart``, the served one) and the next page (``next``),
  trained together (multi-task, ``next_weight``), each with a repeat path
  that can re-pick a page of the session (RepeatNet, Ren et al. AAAI 2019);
  for a large catalogue the training loss estimates the explore softmax on
  sampled ids (``softmax: auto|sampled``), evaluation and serving use it whole.

The model's inputs are `INPUTS` (`input_spec`); pages and items share one id
space, the catalogue (`feedrank.sessions.catalogue`): 0 is padding and the
last id is out of vocabulary.  `from_samples` builds the inputs and both
targets from the session samples' feature contract (`feedrank.sessions.features`)
with a vocabulary (`vocabulary`).
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
from feedrank.sessions.settings import CART_ROWS
from feedrank.train import layers as TL
from feedrank.train.distribute import global_mean
from feedrank.typed import Checked, ConfigError, setting

log = logging.getLogger(__name__)

PAGES, DWELL, PURCHASES, USER_ID = "pages", "dwell", "purchases", "user_id"
INPUTS = (PAGES, DWELL, PURCHASES, USER_ID)
CART, NEXT = SL.CART, SL.NEXT


def input_spec() -> Dict[str, tf.TensorSpec]:
    """The model inputs: pages and purchases are 0-padded id matrices, dwell the
    pages' dwell times in seconds (same shape as pages), user_id a string per row."""
    return {PAGES: tf.TensorSpec([None, None], tf.int64, PAGES),
            DWELL: tf.TensorSpec([None, None], tf.float32, DWELL),
            PURCHASES: tf.TensorSpec([None, None], tf.int64, PURCHASES),
            USER_ID: tf.TensorSpec([None], tf.string, USER_ID)}


SOFTMAX_MODES = ("full", "sampled", "auto")


@dataclasses.dataclass
class _Checked(Checked):
    """The settings every session family has (checked on construction, `feedrank.typed.Checked`):
    one id space, and the softmax rules the families share."""
    num_pages: int = setting(1000, min=3)      # catalogue ids: 0 padding, the last out of vocabulary
    num_items: int = setting(1000, min=3)      # the same id space (== num_pages)
    softmax: str = setting("auto", choices=SOFTMAX_MODES)   # training; evaluation and serving: full
    num_sampled: int = setting(1024, min=1)
    sampled_above: int = setting(20000, min=1)  # auto: sampled when the catalogue has more ids
    learning_rate: float = setting(1e-3, above=0.0)

    def check(self, where: str) -> None:
        if self.num_items != self.num_pages:
            raise ConfigError(f"{where}: pages and items share the catalogue's ids, so num_items must equal "
                              f"num_pages, got {self.num_items} and {self.num_pages}")
        if self.softmax == "sampled" and not 0 < self.num_sampled < self.num_pages:
            raise ConfigError(f"{where}.num_sampled must be in [1, num_pages) for the sampled softmax, got "
                              f"{self.num_sampled} with num_pages={self.num_pages}")

    @property
    def sampled(self) -> int:
        """The ids drawn per training step for the sampled softmax (0: the full softmax)."""
        use = self.softmax == "sampled" or (self.softmax == "auto" and self.num_pages > self.sampled_above
                                             and self.num_sampled < self.num_pages)
        return int(self.num_sampled) if use else 0


@dataclasses.dataclass
class DrnnSettings(_Checked):
    """The DRNN's architecture and training settings (docs/drnn.md)."""
    SECTION = "drnn"
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
    repeat: bool = True                        # the repeat (copy) path over the session's pages

    def check(self, where: str) -> None:
        super().check(where)
        if self.height >= self.length:
            raise ConfigError(f"{where}.height must be < {where}.length (shortcuts come from the "
                              f"{self.length - 1} layer(s) below the top), got height={self.height}, "
                              f"length={self.length}")
        if not self.fnn_units:
            raise ConfigError(f"{where}.fnn_units must list at least one layer width, got []")


class SessionModel(keras.Model):
    """An encoder (inputs -> branch vectors) and a `layers.CatalogueHead`: ``{"cart", "next"}``
    log-probabilities [B, num_pages], tied to the encoder's ``page_embedding``.  Input keys
    the encoder does not use are ignored."""

    def __init__(self, encoder: keras.Model, head: SL.CatalogueHead, num_sampled: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.head, self.num_sampled = encoder, head, int(num_sampled)
        self.next_weight = 1.0
        self.input_names_used = [i.name for i in encoder.inputs]
        if PAGES not in self.input_names_used:
            raise ValueError(f"{encoder.name} must read {PAGES!r} (the head's repeat path and tied embeddings)")
        self.page_embedding = encoder.get_layer("page_embedding")
        if not head.built:
            head.build([o.shape for o in encoder.outputs])

    def _select(self, inputs: Mapping[str, Any]) -> Dict[str, Any]:
        missing = [k for k in self.input_names_used if k not in inputs]
        if missing:
            raise ValueError(f"{self.name} needs inputs {self.input_names_used}; missing {missing}")
        return {k: inputs[k] for k in self.input_names_used}

    def call(self, inputs, training=None):
        x = self._select(inputs)
        return self.head(self.encoder(x, training=training), self.page_embedding.embeddings, x[PAGES],
                         dwell=_dwell(inputs))

    def train_step(self, data):
        """With ``num_sampled`` > 0: both tasks' sampled-softmax loss (`layers.CatalogueHead.
        sampled_log_prob`), each the weighted mean over the global batch's rows; else Keras's."""
        if not self.num_sampled:
            return super().train_step(data)
        x, y, w = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            sel = self._select(x)
            branches = self.encoder(sel, training=True)
            loss = tf.constant(0.0)
            for task, weight in ((CART, 1.0), (NEXT, self.next_weight)):
                if weight == 0:
                    continue
                lp = self.head.sampled_log_prob(branches, self.page_embedding.embeddings, sel[PAGES], task, y[task],
                                                self.num_sampled, _dwell(x))
                rows = tf.ones_like(lp) if w is None else tf.cast(w[task], lp.dtype)
                loss += weight * global_mean(-rows * lp)
            if self.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.losses))
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            loss = ctx.all_reduce(tf.distribute.ReduceOp.SUM, loss)   # logged: the global mean
        return {"loss": loss}

    def cart(self, inputs) -> tf.Tensor:
        """The served output alone: the next add-to-cart's log-probabilities [B, num_pages]."""
        x = self._select(inputs)
        return self.head(self.encoder(x, training=False), self.page_embedding.embeddings, x[PAGES],
                         tasks=(CART,), dwell=_dwell(inputs))[CART]


def _dwell(inputs: Mapping[str, Any]) -> Any:
    """The pages' dwell when the request has it (the head's repeat path reads it), else None."""
    return inputs.get(DWELL) if hasattr(inputs, "get") else None


def compile_model(model: SessionModel, learning_rate: float, next_weight: float = 1.0) -> SessionModel:
    """Adam; softmax cross-entropy on both outputs (the next page's weighted by ``next_weight``;
    rows without a target carry sample weight 0); top-1/top-10 accuracy of the add-to-cart."""
    model.next_weight = float(next_weight)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss={CART: ce, NEXT: ce},
                  loss_weights={CART: 1.0, NEXT: float(next_weight)},
                  weighted_metrics={CART: [keras.metrics.SparseTopKCategoricalAccuracy(1, name="top1"),
                                           keras.metrics.SparseTopKCategoricalAccuracy(10, name="top10")]})
    return model


def default_item_mask(num_pages: int) -> List[bool]:
    """Every catalogue id an item (0 padding and the last id, out of vocabulary, are not)."""
    return [False] + [True] * (num_pages - 2) + [False]


def _log1p(x: tf.Tensor) -> tf.Tensor:
    return tf.math.log1p(tf.maximum(x, 0.0))


def _fnn(s: DrnnSettings, purchases: tf.Tensor, user_id) -> tf.Tensor:
    if s.fnn_input == "bitmap":
        x = SL.MultiHot(s.num_items, name="purchase_bitmap")(purchases)
    else:
        emb = keras.layers.Embedding(s.num_pages, s.fnn_dim, name="purchase_embedding")(purchases)
        x = TL.MaskedPooling("mean", name="purchase_mean")(emb, TL.padding_mask(purchases))
    if user_id is not None:
        bucket = SL.HashBucket(s.user_buckets, name="user_bucket")(user_id)
        x = tf.concat([x, keras.layers.Embedding(s.user_buckets, s.fnn_dim, name="user_embedding")(bucket)], -1)
    return TL.mlp(s.fnn_units, "relu", s.dropout, name="fnn")(x)


def build(settings: DrnnSettings | Mapping[str, Any], item_mask: Sequence[bool] | None = None,
          next_weight: float = 1.0) -> SessionModel:
    """The DRNN for ``settings`` (a `DrnnSettings` or its mapping), compiled; ``item_mask``
    marks the catalogue ids that are items (`feedrank.sessions.catalogue.is_item`)."""
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
    head = SL.CatalogueHead(s.num_pages, s.page_dim, item_mask or default_item_mask(s.num_pages), s.repeat,
                            name="catalogue")
    model = SessionModel(encoder, head, s.sampled, name="drnn")
    log.info("DRNN: k=%d L=%d height=%d units=%d cell=%s history=%s fnn=%s repeat=%s over %d catalogue ids (%s)",
             s.width, s.length, s.height, s.units, s.cell, s.use_history, s.use_fnn, s.repeat, s.num_pages,
             f"sampled softmax, {s.sampled} ids" if s.sampled else "full softmax")
    return compile_model(model, s.learning_rate, next_weight)


def vocabulary(ids: Iterable[str]) -> Dict[str, int]:
    """Distinct ids -> 1..n, the most frequent first (ties by id); 0 stays the padding id and
    n + 1 is the out-of-vocabulary id (`from_samples`)."""
    counts = collections.Counter(ids)
    return {v: i + 1 for i, v in enumerate(sorted(counts, key=lambda v: (-counts[v], v)))}


def from_samples(samples: Sequence[Mapping[str, Any]], vocab: Mapping[str, int], max_pages: int = 50,
                 max_purchases: int = 50, item_mask: Sequence[bool] | None = None, cart_rows: str = "last",
                 ) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray], Dict[str, np.ndarray], np.ndarray]:
    """Session samples in the contract of `feedrank.sessions.features` -> ``(inputs, targets,
    weights, rows)``, as the Trainer's Transform output gives them.

    One id space ``vocab`` (1..n; 0 padding, n + 1 out of vocabulary) for pages and items.  A
    sample's pages are its history pages then its recent pages (oldest first), the last
    ``max_pages`` kept, left-padded with 0, with their dwell times; the purchase history keeps
    its last ``max_purchases`` items.  A sample is one row per label item (one row without
    label items; ``rows`` gives each row's sample index); ``targets[CART]``/``targets[NEXT]``
    are the add-to-cart item and the next page (0: none), ``weights`` 1 where the target is a
    catalogue id the task can name (the next page's weight split over the sample's rows).

    ``cart_rows``: which samples train the add-to-cart output.  ``"last"`` (the default): only
    the full path, the prefix that ends on the page before the add-to-cart (``full_path``; a
    sample without the key counts as one); a shorter prefix keeps its next-page target only.
    ``"all"``: every prefix of the path, so a session's add-to-cart is the target of all of
    them, which the model memorises within a fraction of an epoch (docs/drnn.md).
    """
    if cart_rows not in CART_ROWS:
        raise ValueError(f"cart_rows must be one of {CART_ROWS}, got {cart_rows!r}")
    if max_pages < 1 or max_purchases < 1:
        raise ValueError(f"max_pages and max_purchases must be >= 1, got {max_pages}, {max_purchases}")
    n_ids = len(vocab) + 2
    oov = n_ids - 1
    mask = np.asarray(item_mask if item_mask is not None else default_item_mask(n_ids), bool)
    if mask.shape != (n_ids,):
        raise ValueError(f"item_mask needs {n_ids} flags (padding, the vocabulary, out of vocabulary), "
                         f"got {mask.shape}")
    n = len(samples)
    page_ids = np.zeros((n, max_pages), np.int64)
    dwell = np.zeros((n, max_pages), np.float32)
    bought = np.zeros((n, max_purchases), np.int64)
    users, rows, cart, nxt, next_w = [], [], [], [], []
    for i, s in enumerate(samples):
        seq = list(zip(list(s[SF.HISTORY_PAGES]) + list(s[SF.RECENT_PAGES]),
                       list(s[SF.HISTORY_DWELL]) + list(s[SF.RECENT_DWELL])))[-max_pages:]
        if seq:
            page_ids[i, max_pages - len(seq):] = [vocab.get(p, oov) for p, _ in seq]
            dwell[i, max_pages - len(seq):] = [d for _, d in seq]
        hist = [vocab.get(v, oov) for v in s[SF.PURCHASE_HISTORY]][-max_purchases:]
        bought[i, :len(hist)] = hist
        user = s[SF.USER_ID]
        users.append(user.encode() if isinstance(user, str) else bytes(user))
        trains_cart = cart_rows == "all" or bool(s.get(SF.FULL_PATH, 1))
        labels = [vocab.get(v, oov) for v in s[SF.LABEL_ITEMS]] if trains_cart else []
        labels = labels or [0]
        page = s.get(SF.NEXT_PAGE, "")
        for label in labels:
            rows.append(i)
            cart.append(label)
            nxt.append(vocab.get(page, oov) if page else 0)
            next_w.append(1.0 / len(labels))
    rows_a = np.asarray(rows, np.int64)
    cart_a, next_a = np.asarray(cart, np.int64), np.asarray(nxt, np.int64)
    targets = {CART: cart_a, NEXT: next_a}
    weights = {CART: mask[cart_a].astype(np.float32),
               NEXT: np.where((next_a > 0) & (next_a < oov), np.asarray(next_w, np.float32), 0.0).astype(np.float32)}
    inputs = {PAGES: page_ids[rows_a], DWELL: dwell[rows_a], PURCHASES: bought[rows_a],
              USER_ID: np.asarray(users, dtype=object)[rows_a].astype(bytes) if rows else np.zeros(0, "S1")}
    return inputs, targets, weights, rows_a
