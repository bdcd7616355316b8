"""Attribute snapshots of the ``items`` and ``users`` tables (pure, vectorised).

A table may hold several rows per id, each with an optional ``valid_from``
(int unix seconds): the attribute values from that time on.  At time ``t`` an
id uses its row with the greatest ``valid_from <= t``; a row without
``valid_from`` (or NaN) is valid from the beginning.  Before an id's first
``valid_from`` it has no row: its attributes are not known yet, exactly as for
an id missing from the table (OOV ids, default values).  Rows with the same id
and ``valid_from`` keep the first in file order.  A table without
``valid_from`` therefore has one row per id: the first in file order.  Serving
applies the same rule at the request's second (`versions`,
``serving/features/versions.py``).

Lookups are ``searchsorted`` on composite keys ``id * (C + 1) + rank``, where
``rank`` counts the change points (every finite ``valid_from``) at or before
the time: the "epoch" of ``t``.  Two times of the same epoch see the same
attributes for every id.
"""
from __future__ import annotations

import logging
from typing import List, Mapping, Optional, Tuple, Union

import numpy as np
import pandas as pd

from feedrank import features as F
from feedrank.events import contract, io
from feedrank.examples import declared

log = logging.getLogger(__name__)

VALID_FROM = "valid_from"


class Snapshots:
    """Rows of a table keyed by id, ordered by ``(id, valid_from)``.

    Attributes:
      index: the distinct ids (first-appearance order); ``index[i]`` is id code i.
      rows: the kept rows (a frame), ``rows.iloc[k]`` is snapshot row k.
      start: first snapshot row of each id code.
      changes: sorted distinct change points (empty: one row per id).
    """

    def __init__(self, df: pd.DataFrame, id_column: str):
        ids = df[id_column].to_numpy(dtype=object)
        self.index = pd.Index(pd.unique(ids))
        code = self.index.get_indexer(ids).astype(np.int64)
        vf = (pd.to_numeric(df[VALID_FROM], errors="coerce").to_numpy(dtype=float)
              if VALID_FROM in df.columns else np.full(len(df), np.nan))
        vf = np.where(np.isfinite(vf), vf, -np.inf)
        order = np.lexsort((np.arange(len(df)), vf, code))
        code, vf = code[order], vf[order]
        first_of_pair = np.ones(len(order), dtype=bool)
        first_of_pair[1:] = (code[1:] != code[:-1]) | (vf[1:] != vf[:-1])
        order, code, vf = order[first_of_pair], code[first_of_pair], vf[first_of_pair]
        self.rows = df.iloc[order].reset_index(drop=True)
        self.start = np.searchsorted(code, np.arange(len(self.index)), "left")
        dated = np.isfinite(vf)                       # rows without valid_from: valid from -inf
        self.changes = np.unique(vf[dated]).astype(np.int64)
        self._code = code
        self._valid_from = vf
        rank = np.zeros(len(code), dtype=np.int64)
        rank[dated] = np.searchsorted(self.changes, vf[dated].astype(np.int64), "left") + 1
        self._keys = code * (len(self.changes) + 1) + rank
        if len(self.changes):
            log.info("%s snapshots: %d rows for %d ids, %d change points",
                     id_column, len(code), len(self.index), len(self.changes))

    @property
    def multi(self) -> bool:
        """Whether some id has more than one row (attributes change over time)."""
        return len(self.changes) > 0

    def epoch(self, ts: np.ndarray) -> np.ndarray:
        """Epoch of each time: the number of change points ``<= ts``."""
        if not self.multi:
            return np.zeros(len(ts), dtype=np.int64)
        return np.searchsorted(self.changes, np.asarray(ts, dtype=np.int64), "right").astype(np.int64)

    def codes(self, ids: np.ndarray) -> np.ndarray:
        """Id code of each id (-1 when unknown)."""
        return self.index.get_indexer(np.asarray(ids, dtype=object)).astype(np.int64)

    def rows_at(self, codes: np.ndarray, epochs: np.ndarray) -> np.ndarray:
        """Snapshot row of each ``(id code, epoch)``; -1 for code -1 and for an id with no
        row valid yet in that epoch."""
        codes = np.asarray(codes, dtype=np.int64)
        known = codes >= 0
        if not self.multi:
            return np.where(known, self.start[np.maximum(codes, 0)], -1)
        safe = np.maximum(codes, 0)
        probe = safe * (len(self.changes) + 1) + np.asarray(epochs, dtype=np.int64)
        pos = np.searchsorted(self._keys, probe, "right") - 1
        return np.where(known & (pos >= self.start[safe]), pos, -1)

    def versions(self, code: int) -> List[Tuple[Optional[int], int]]:
        """``(valid_from, snapshot row)`` of each row of id ``code``, oldest first
        (valid_from None: valid from the beginning): what serving stores."""
        end = self.start[code + 1] if code + 1 < len(self.start) else len(self._code)
        return [(None if not np.isfinite(self._valid_from[k]) else int(self._valid_from[k]), int(k))
                for k in range(int(self.start[code]), int(end))]

    def rows_of(self, ids: np.ndarray, ts: Optional[np.ndarray] = None) -> np.ndarray:
        """Snapshot row of each id at ``ts`` (None: the latest row; -1 when unknown)."""
        codes = self.codes(ids)
        if ts is None:
            latest = np.append(self.start[1:], len(self._code)) - 1
            return np.where(codes >= 0, latest[np.maximum(codes, 0)], -1)
        return self.rows_at(codes, self.epoch(ts))


def _bytes(values: np.ndarray) -> np.ndarray:
    return np.array([s.encode() for s in values], dtype=object)


def _with_missing(values: np.ndarray, missing) -> np.ndarray:
    """``values`` with ``missing`` appended: row -1 (no row valid) reads it."""
    return np.append(values, np.array([missing], dtype=values.dtype))


class ItemTable:
    """Item attributes per snapshot row (``row_*`` arrays) and per id.

    ``index`` holds the distinct item ids; ``category``/``region``/``price``
    are the latest attributes of each id (in ``index`` order).  Examples use
    the snapshot at the impression time (`rows_of`).  Each ``row_*`` array ends
    with the values of a post without a valid row (empty ids, the default price,
    category code -1), so row -1 reads them.
    """

    def __init__(self, items: pd.DataFrame, spec: F.FeatureSpec):
        self.spec = spec
        self.snapshots = Snapshots(items, "item_id")
        self.index = self.snapshots.index
        rows = self.snapshots.rows
        self.row_category = _with_missing(_bytes(rows["category_id"].to_numpy(dtype=object)), b"")
        self.row_region = _with_missing(_bytes(rows["region_id"].to_numpy(dtype=object)), b"")
        self.row_region_str = _with_missing(rows["region_id"].to_numpy(dtype=object), "")
        self.row_category_code = _with_missing(
            pd.factorize(rows["category_id"].to_numpy(dtype=object))[0].astype(np.int64), -1)
        price = (rows["price"].to_numpy(dtype=float) if "price" in rows.columns
                 else np.full(len(rows), np.nan))
        self.row_price = _with_missing(
            np.where(np.isfinite(price), price, F.PRICE.default).astype(np.float32), F.PRICE.default)
        latest = self.snapshots.rows_of(self.index.to_numpy(dtype=object))
        self.category, self.region = self.row_category[latest], self.row_region[latest]
        self.price = self.row_price[latest]
        # the columns declared in ``spec`` (`declared.row_values`): feature name -> value per snapshot row
        self.row_declared = declared.row_values(spec, rows, "items")
        self._declared_missing = {c.feature_name: declared.missing_value(c) for c in spec.declared_of("items")}

    def declared_at(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Values of the declared item column with feature name ``name`` at snapshot ``rows``
        (`declared.row_values`' encoding); row -1 (no valid row) has the column's missing value."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty(len(rows), dtype=object)
        known = rows >= 0
        out[known] = self.row_declared[name][rows[known]]
        out[~known] = self._declared_missing[name]
        return out

    def lookup(self, item_ids: np.ndarray) -> np.ndarray:
        """Id code of each item id (-1 for unknown)."""
        return self.snapshots.codes(item_ids)

    def rows_of(self, item_ids: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Snapshot row of each item at ``ts``."""
        return self.snapshots.rows_of(item_ids, ts)


class UserTable:
    """User regions with snapshots (see the module doc) and the columns declared in ``spec``."""

    def __init__(self, users: pd.DataFrame, spec: F.FeatureSpec):
        self.spec = spec
        self.snapshots = Snapshots(users, "user_id")
        self.row_region = self.snapshots.rows["region_id"].to_numpy(dtype=object)
        self.row_declared = declared.row_values(spec, self.snapshots.rows, "users")

    def regions(self, user_ids: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Region of each user at ``ts`` ("" for users missing from the table)."""
        rows = self.snapshots.rows_of(user_ids, ts)
        out = np.full(len(rows), "", dtype=object)
        known = rows >= 0
        out[known] = self.row_region[rows[known]]
        return out


def user_regions(users: Union[UserTable, Mapping[str, str]], user_ids: np.ndarray,
                 ts: np.ndarray) -> np.ndarray:
    """Region per impression from a `UserTable` or a plain ``user_id -> region`` map."""
    if isinstance(users, UserTable):
        return users.regions(user_ids, ts)
    return np.array([users.get(u, "") or "" for u in user_ids], dtype=object)


def expand_windows(lo: np.ndarray, hi: np.ndarray, epoch: np.ndarray
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gives every distinct ``(lo, hi, epoch)`` window its own copy of its elements.

    Returns ``(new_lo, new_hi, source, element_epoch)``: per impression a window
    into the expanded element list, and per expanded element its position in the
    original flat arrays and the epoch whose attributes it shows.
    """
    if len(lo) == 0:
        empty = np.array([], dtype=np.int64)
        return empty, empty, empty, empty
    keys = np.stack([lo, hi, epoch], axis=1).astype(np.int64)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    lengths = uniq[:, 1] - uniq[:, 0]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    total = int(offsets[-1])
    source = np.repeat(uniq[:, 0] - offsets[:-1], lengths) + np.arange(total, dtype=np.int64)
    return offsets[:-1][inverse], offsets[1:][inverse], source, np.repeat(uniq[:, 2], lengths)


def read_item_table(input_base: str, spec_json: str) -> ItemTable:
    """The log's items table as an `ItemTable` of the feature contract ``spec_json``."""
    spec = F.FeatureSpec.from_json(spec_json)
    items = io.read_table(input_base, contract.ITEMS, extra=declared.column_names(spec, contract.ITEMS))
    return ItemTable(items, spec)
