"""The session feature contract: every feature of a session training sample, in one place.

A sample is one page prefix of a session (the moment its last page opens), labelled
with the page viewed next and with the items of the session's next add-to-cart, either
of which may be absent (docs/sessions.md).  Written as `tf.train.Example`:

=========================  ======  =====  ==============================================
name                       dtype   shape  meaning
=========================  ======  =====  ==============================================
user_id                    bytes   1      the shopper
session_id                 bytes   1      the session (the log's id, else user:start_ts)
session_start_ts           int64   1      first event of the session (unix s); splits by it
ts                         int64   1      the prefix's last page view (unix s)
recent_pages               bytes   <=k    the last k pages of the prefix, oldest first
recent_page_types          bytes   <=k    their types: index, category, item
recent_dwell_s             float   <=k    their dwell at request time (s): `sessionize.page_dwell`
history_pages              bytes   any    the older pages (the history state h), oldest first
history_page_types         bytes   any    their types
history_dwell_s            float   any    their dwell times: theta of the ageing weights
purchase_history           bytes   <=M    items the user carted in earlier sessions, oldest first
purchase_history_ts        int64   <=M    when
label_items                bytes   any    the items of the next add-to-cart (the set I); none: no cart follows
next_page                  bytes   1      the page viewed next in the session ("" at the session's last page)
prefix_len                 int64   1      pages in the prefix (recent + history)
n_pages_before_purchase    int64   1      pages before that add-to-cart (0 without one)
path_start                 int64   1      pages before the session's previous add-to-cart point (0: none)
full_path                  int64   1      1 for the sample (h, p[n-k..n-1]) -> I, 0 otherwise
=========================  ======  =====  ==============================================

A page's type comes from the catalogue (``items.parquet``'s ``page_type``,
`feedrank.sessions.catalogue`); without that column, from the simulator's id prefix
(`page_type`: ``x`` index, ``c`` category list, ``i`` item), else ``item``.  TensorFlow is imported only
by `feature_spec` and `to_example`.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Tuple

from feedrank.events.simulator.ecommerce_io import page_type  # the page-id scheme

log = logging.getLogger(__name__)

USER_ID = "user_id"
SESSION_ID = "session_id"
SESSION_START_TS = "session_start_ts"
TS = "ts"
RECENT_PAGES = "recent_pages"
RECENT_PAGE_TYPES = "recent_page_types"
RECENT_DWELL = "recent_dwell_s"
HISTORY_PAGES = "history_pages"
HISTORY_PAGE_TYPES = "history_page_types"
HISTORY_DWELL = "history_dwell_s"
PURCHASE_HISTORY = "purchase_history"
PURCHASE_HISTORY_TS = "purchase_history_ts"
LABEL_ITEMS = "label_items"
NEXT_PAGE = "next_page"
PATH_START = "path_start"
PREFIX_LEN = "prefix_len"
N_PAGES_BEFORE_PURCHASE = "n_pages_before_purchase"
FULL_PATH = "full_path"

PAGE_TYPES: Tuple[str, ...] = ("index", "category", "item")
DEFAULT_K = 5                    # recent page states (the DRNN's width)
DEFAULT_MAX_PURCHASE_HISTORY = 50

BYTES, INT, FLOAT = "bytes", "int64", "float"
# name -> (dtype, scalar?)
SPEC: Dict[str, Tuple[str, bool]] = {
    USER_ID: (BYTES, True), SESSION_ID: (BYTES, True), SESSION_START_TS: (INT, True), TS: (INT, True),
    RECENT_PAGES: (BYTES, False), RECENT_PAGE_TYPES: (BYTES, False), RECENT_DWELL: (FLOAT, False),
    HISTORY_PAGES: (BYTES, False), HISTORY_PAGE_TYPES: (BYTES, False), HISTORY_DWELL: (FLOAT, False),
    PURCHASE_HISTORY: (BYTES, False), PURCHASE_HISTORY_TS: (INT, False), LABEL_ITEMS: (BYTES, False),
    NEXT_PAGE: (BYTES, True), PREFIX_LEN: (INT, True), N_PAGES_BEFORE_PURCHASE: (INT, True),
    PATH_START: (INT, True), FULL_PATH: (INT, True),
}

__all__ = ["SPEC", "feature_spec", "to_example", "from_example", "page_type"]


def feature_spec() -> Dict[str, Any]:
    """`tf.io.parse_example` spec: scalars fixed-length, lists `tf.io.VarLenFeature`."""
    import tensorflow as tf

    dt = {BYTES: tf.string, INT: tf.int64, FLOAT: tf.float32}
    return {name: tf.io.FixedLenFeature([], dt[kind]) if scalar else tf.io.VarLenFeature(dt[kind])
            for name, (kind, scalar) in SPEC.items()}


def to_example(sample: Mapping[str, Any]) -> bytes:
    """Serialises a sample dict holding exactly the features of `SPEC`."""
    from tensorflow.core.example import example_pb2

    missing = set(SPEC) - set(sample)
    extra = set(sample) - set(SPEC)
    if missing or extra:
        raise ValueError(f"session sample does not match the feature contract: missing {sorted(missing)}, "
                         f"unknown {sorted(extra)}")
    ex = example_pb2.Example()
    for name, (kind, scalar) in SPEC.items():
        values = [sample[name]] if scalar else list(sample[name])
        feat = ex.features.feature[name]
        if kind == BYTES:
            feat.bytes_list.value.extend(v.encode() if isinstance(v, str) else bytes(v) for v in values)
        elif kind == INT:
            feat.int64_list.value.extend(int(v) for v in values)
        else:
            feat.float_list.value.extend(float(v) for v in values)
    return ex.SerializeToString()


def from_example(serialized: bytes) -> Dict[str, Any]:
    """A serialised sample back as a dict (scalars as values, lists as lists, text decoded)."""
    from tensorflow.core.example import example_pb2

    ex = example_pb2.Example.FromString(serialized)
    out: Dict[str, Any] = {}
    for name, (kind, scalar) in SPEC.items():
        feat = ex.features.feature[name]
        values = list(feat.bytes_list.value if kind == BYTES else
                      feat.int64_list.value if kind == INT else feat.float_list.value)
        if kind == BYTES:
            values = [v.decode() for v in values]
        out[name] = values[0] if scalar else values
    return out
