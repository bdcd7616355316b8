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
from typing import Callable, Dict, List, Optional, Sequence, Tuple

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
    per-feature arrays of bytes (one array per `SeqFeature` of the channel).
    With ``ages`` (the channel's age feature name), ``ts`` holds each flat
    entry's event time and the age column is labelled per impression."""

    lo: np.ndarray
    hi: np.ndarray
    values: Dict[str, np.ndarray]
    ts: Optional[np.ndarray] = None
    ages: Optional[str] = None


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


def _channel_columns(ch: Channel, imp_ts: np.ndarray) -> Dict[str, List[bytes]]:
    """One column per sequence feature of a channel, encoded per distinct window,
    and its age column (`age_column`) when the channel has one."""
    width = max((len(v) for v in ch.values.values()), default=0) + 1
    keys = ch.lo.astype(np.int64) * width + ch.hi.astype(np.int64)
    cols = {}
    for name, values in ch.values.items():
        enc = E.BytesEntry(name)
        blob, offsets = E.fields_blob(values)
        lo, hi = ch.lo, ch.hi
        cols[name] = _fan_out(keys, lambda i: enc.payload(blob[offsets[lo[i]]:offsets[hi[i]]]))
    if ch.ages:
        cols[ch.ages] = age_column(ch.ages, ch.lo, ch.hi, ch.ts, imp_ts)
    return cols


def age_codes(lo: np.ndarray, hi: np.ndarray, event_ts: np.ndarray, imp_ts: np.ndarray
              ) -> Tuple[np.ndarray, np.ndarray]:
    """The age buckets (indices into `features.AGE_LABELS`) of every window entry,
    flat, and each impression's offsets into them: impression ``i``'s are
    ``codes[offsets[i]:offsets[i + 1]]``, ages ``imp_ts[i] - event_ts[lo[i]:hi[i]]``."""
    lengths = np.maximum(hi - lo, 0).astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    within = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    entry = np.repeat(lo.astype(np.int64), lengths) + within
    ages = np.repeat(imp_ts.astype(np.int64), lengths) - event_ts.astype(np.int64)[entry]
    return np.searchsorted(np.asarray(F.AGE_BOUNDS_S), ages, "right").astype(np.uint8), offsets


def age_column(name: str, lo: np.ndarray, hi: np.ndarray, event_ts: np.ndarray,
               imp_ts: np.ndarray) -> List[bytes]:
    """The entries of age feature ``name``: per impression the labels of `age_codes`,
    encoded once per distinct label sequence."""
    codes, offsets = age_codes(lo, hi, event_ts, imp_ts)
    enc = E.BytesEntry(name)
    fields = np.array([E.ld(b"\x0a", label.encode()) for label in F.AGE_LABELS], dtype=object)
    cache: Dict[bytes, bytes] = {}
    out = []
    for i in range(len(lo)):
        key = codes[offsets[i]:offsets[i + 1]].tobytes()
        entry = cache.get(key)
        if entry is None:
            entry = cache[key] = enc.payload(b"".join(fields[codes[offsets[i]:offsets[i + 1]]]))
        out.append(entry)
    return out


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
        cols.update(_channel_columns(ch, imp.ts))
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

