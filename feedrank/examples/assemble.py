"""Assembles serialized examples from the per-impression arrays of `build`.

Column-wise: for every raw feature one list of encoded map entries (one per
impression) is built, mostly vectorised — entries shared by many impressions
(candidate attributes, user attributes, sequence windows, timestamps) are
encoded once per distinct value and fanned out with ``np.unique`` inverse
indices.  Each example is then the key-sorted concatenation of its row, which
is exactly protobuf's deterministic serialization (checked by a test).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Sequence

import numpy as np
import pandas as pd

from feedrank import features as F
from feedrank.examples import encode as E


def feature_names(spec: F.FeatureSpec) -> List[str]:
    """Names of the raw features written for ``spec`` (labels and metadata included)."""
    return spec.raw_names()


@dataclasses.dataclass
class Channel:
    """A behaviour channel: per-impression window ``[lo, hi)`` into flat
    per-feature arrays of bytes (one array per `SeqFeature` of the channel)."""

    lo: np.ndarray
    hi: np.ndarray
    values: Dict[str, np.ndarray]


@dataclasses.dataclass
class Impressions:
    """Per-impression values (all arrays of one length)."""

    impression_id: np.ndarray   # str
    user_id: np.ndarray         # str
    user_region: np.ndarray     # str, "" when unknown
    item_id: np.ndarray         # str
    item_pos: np.ndarray        # snapshot row in the item table at the impression time
    ts: np.ndarray              # int64
    ints: Dict[str, np.ndarray]     # label name -> 0/1
    floats: Dict[str, np.ndarray]   # per-impression dense feature -> values
    # encoded entries per impression of features built elsewhere (the declared columns)
    encoded: Dict[str, List[bytes]] = dataclasses.field(default_factory=dict)


def _fan_out(keys: np.ndarray, make: Callable[[int], bytes]) -> List[bytes]:
    """Entries for ``keys`` built once per distinct key (``make(first_index)``)."""
    if len(keys) == 0:
        return []
    codes, uniques = pd.factorize(np.asarray(keys))
    _, first = np.unique(codes, return_index=True)      # codes follow first appearance
    entries = np.empty(len(uniques), dtype=object)
    entries[:] = [make(int(i)) for i in first]
    return entries[codes].tolist()


def _float_column(name: str, values: np.ndarray) -> List[bytes]:
    block = E.FloatBlock([name])
    blob, w = block.encode([values]), block.width
    return [blob[i:i + w] for i in range(0, len(values) * w, w)]


fan_out = _fan_out  # public: `declared.entries` encodes with it


def _channel_columns(ch: Channel) -> Dict[str, List[bytes]]:
    """One column per sequence feature of a channel, encoded per distinct window."""
    width = max((len(v) for v in ch.values.values()), default=0) + 1
    keys = ch.lo.astype(np.int64) * width + ch.hi.astype(np.int64)
    cols = {}
    for name, values in ch.values.items():
        enc = E.BytesEntry(name)
        blob, offsets = E.fields_blob(values)
        lo, hi = ch.lo, ch.hi
        cols[name] = _fan_out(keys, lambda i: enc.payload(blob[offsets[lo[i]]:offsets[hi[i]]]))
    return cols


def assemble(spec: F.FeatureSpec, imp: Impressions, channels: Sequence[Channel], item_category: np.ndarray,
             item_region: np.ndarray, item_price: np.ndarray) -> List[bytes]:
    """Serialized examples, one per impression, with exactly the raw features of ``spec``."""
    n = len(imp.ts)
    if n == 0:
        return []
    one = {name: E.BytesEntry(name).single for name in
           (F.ITEM_ID.name, F.CATEGORY_ID.name, F.REGION_ID.name, F.USER_REGION_ID.name,
            F.USER_ID, F.IMPRESSION_ID)}
    pos = imp.item_pos
    cols: Dict[str, List[bytes]] = {
        # by id: posts without a valid row share row -1 (`snapshots.ItemTable`), not their id
        F.ITEM_ID.name: _fan_out(imp.item_id, lambda i: one[F.ITEM_ID.name](imp.item_id[i].encode())),
        F.CATEGORY_ID.name: _fan_out(pos, lambda i: one[F.CATEGORY_ID.name](item_category[pos[i]])),
        F.REGION_ID.name: _fan_out(pos, lambda i: one[F.REGION_ID.name](item_region[pos[i]])),
        F.PRICE.name: _fan_out(pos, lambda i: E.float_entry(F.PRICE.name, float(item_price[pos[i]]))),
        F.TS: _fan_out(imp.ts, lambda i: E.int64_entry(F.TS, int(imp.ts[i]))),
        F.IMPRESSION_ID: [one[F.IMPRESSION_ID](s.encode()) for s in imp.impression_id],
    }
    users = imp.user_id
    cols[F.USER_ID] = _fan_out(users, lambda i: one[F.USER_ID](imp.user_id[i].encode()))
    cols[F.USER_REGION_ID.name] = _fan_out(   # by region: a user's region may change over time
        imp.user_region, lambda i: one[F.USER_REGION_ID.name](imp.user_region[i].encode()))
    for name, values in imp.ints.items():
        variants = np.array([E.int64_entry(name, 0), E.int64_entry(name, 1)], dtype=object)
        cols[name] = variants[np.asarray(values, dtype=np.int64)].tolist()
    for name, values in imp.floats.items():
        cols[name] = _float_column(name, values)
    for ch in channels:
        cols.update(_channel_columns(ch))
    cols.update(imp.encoded)
    order = sorted(feature_names(spec))
    if sorted(cols) != order:
        raise AssertionError(
            f"example columns {sorted(cols)} != raw features {order}: update "
            "feedrank/examples/build.py for the changed feature contract")
    return [E.example(b"".join(row)) for row in zip(*[cols[name] for name in order])]


def region_match(user_region: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Vectorised `build.crosses` region match (1.0 iff equal and non-empty)."""
    return ((user_region == region) & (user_region != "")).astype(np.float64)

