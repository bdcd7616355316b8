"""Vectorised validation of event rows (one quarantine reason per bad row).

Row-level checks run per batch (`split_batch`); the duplicate check needs all
rows sharing an ``event_id`` together and runs per event-id shard (`dedupe`).
Precedence of the row-level reasons, first match wins:
``undecodable_text`` > ``missing_id`` > ``unparsable_ts`` > ``ts_before_floor`` >
``unknown_event_type`` > ``item_not_in_items``
(an item is required only for known, non-search event types).  A row is
undecodable when a text column holds bytes that are not UTF-8 (`feedrank.events.io`
reads them as lone surrogates); a ``ts`` is before the floor when it is negative
or earlier than ``min_ts`` (``examples.min_ts``).
Duplicates are resolved among rows that passed the row-level checks: the first
occurrence by ``(ts, file order)`` is kept, the others are quarantined.
A quarantined row keeps every column it came with, as text (undecodable bytes
backslash-escaped, e.g. ``\\xff``), plus ``_ord`` and ``reason``.
"""
from __future__ import annotations

import logging
from typing import Collection, Dict, List, Tuple

import numpy as np
import pandas as pd

from feedrank.events import contract
from feedrank.events.text import escape_text, undecodable
from feedrank.examples.settings import DEFAULTS

log = logging.getLogger(__name__)

REASON = "reason"
ORDER = "_ord"            # global file-order key (see io.order_key)
QUARANTINE_COLUMNS = list(contract.EVENT_COLUMNS) + [ORDER, REASON]
LOG_REASON = "log_reason"  # a log's own ``reason`` column, renamed in the quarantine
_TEXT_COLUMNS = [c for c, (logical, _) in contract.EVENT_COLUMNS.items() if logical == "string"]


def parse_ts(raw: pd.Series) -> Tuple[np.ndarray, np.ndarray]:
    """Parses raw ``ts`` values to int64 seconds.

    Returns ``(ts, ok)``; ``ok`` is False for NaN/None, non-numeric text and
    non-integral numbers.  ``ts`` is 0 where not ok.
    """
    if pd.api.types.is_integer_dtype(raw.dtype):
        return raw.to_numpy(dtype=np.int64), np.ones(len(raw), dtype=bool)
    if pd.api.types.is_float_dtype(raw.dtype):
        num = raw.to_numpy(dtype=float)
    else:
        text = raw.astype(object).where(raw.notna(), None)
        num = pd.to_numeric(text.map(lambda v: v.strip() if isinstance(v, str) else v),
                            errors="coerce").to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(num) & (np.floor(num) == num)
    ts = np.where(ok, num, 0).astype(np.int64)
    return ts, ok


def row_reasons(df: pd.DataFrame, item_ids: Collection[str],
                min_ts: int = DEFAULTS.min_ts) -> Tuple[np.ndarray, np.ndarray]:
    """Row-level reasons for a normalised events frame.

    Returns ``(reasons, ts)``: an object array with a reason or ``""`` per row,
    and the parsed int64 ``ts``.  ``min_ts`` is the timestamp floor (a negative
    ``ts`` is below it whatever its value).
    """
    bad_text = np.zeros(len(df), dtype=bool)
    for name in _TEXT_COLUMNS:
        if name in df.columns and df[name].dtype == object:
            bad_text |= undecodable(df[name].to_numpy())
    known = df["event"].isin(contract.EVENT_TYPES).to_numpy()
    # Only known event types other than search need an item; an unknown type is
    # reported as unknown rather than as missing/unknown item.
    needs_item = known & ~df["event"].isin(contract.EVENTS_WITHOUT_ITEM).to_numpy()
    missing = (df["event_id"].eq("") | df["user_id"].eq("")).to_numpy()
    missing |= needs_item & df["item_id"].eq("").to_numpy()
    ts, ts_ok = parse_ts(df["ts"])
    unknown_event = ~known
    if isinstance(item_ids, pd.Index) and item_ids.is_unique:  # hash engine reused per batch
        known_item = item_ids.get_indexer(df["item_id"].to_numpy(dtype=object)) >= 0
    else:
        known_item = df["item_id"].isin(item_ids).to_numpy()
    unknown_item = needs_item & ~known_item
    before_floor = ts_ok & ((ts < 0) | (ts < int(min_ts)))
    reasons = np.select(
        [bad_text, missing, ~ts_ok, before_floor, unknown_event, unknown_item],
        [contract.UNDECODABLE, contract.MISSING_ID, contract.BAD_TS, contract.TS_BEFORE_FLOOR,
         contract.UNKNOWN_EVENT, contract.UNKNOWN_ITEM],
        default="").astype(object)
    return reasons, ts


def _as_text(col: pd.Series) -> pd.Series:
    """A column as text: missing values ``""``, undecodable bytes backslash-escaped."""
    text = col.astype(object).where(col.notna(), "").astype(str)
    if undecodable(text.to_numpy()).any():
        text = text.map(escape_text)
    return text


def quarantine_columns(df: pd.DataFrame) -> List[str]:
    """The columns a quarantine frame of ``df`` has: the contract's, then the log's
    other columns in their order, then ``_ord`` and ``reason``."""
    extra = [LOG_REASON if c == REASON else c for c in df.columns
             if c not in contract.EVENT_COLUMNS and c != ORDER]
    return list(contract.EVENT_COLUMNS) + extra + [ORDER, REASON]


def quarantine_frame(df: pd.DataFrame, reasons) -> pd.DataFrame:
    """Bad rows as an all-text frame keeping every column they came with, plus
    ``_ord`` and a ``reason`` column (a log's own ``reason`` becomes ``log_reason``)."""
    out = {}
    for name in contract.EVENT_COLUMNS:
        col = df[name] if name in df.columns else pd.Series([""] * len(df), index=df.index, dtype=object)
        out[name] = _as_text(col)
    for name in df.columns:
        if name not in contract.EVENT_COLUMNS and name != ORDER:
            out[LOG_REASON if name == REASON else name] = _as_text(df[name])
    out[ORDER] = df[ORDER].to_numpy(dtype=np.int64) if ORDER in df.columns else np.zeros(len(df), np.int64)
    out[REASON] = reasons
    return pd.DataFrame(out, columns=quarantine_columns(df)).reset_index(drop=True)


def empty_quarantine() -> pd.DataFrame:
    """An empty quarantine frame with the right columns."""
    return quarantine_frame(pd.DataFrame({c: pd.Series([], dtype=object)
                                          for c in contract.EVENT_COLUMNS}), [])


def split_batch(df: pd.DataFrame, item_ids: Collection[str],
                min_ts: int = DEFAULTS.min_ts) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Splits a normalised batch (with ``_ord``) into valid rows and bad rows.

    Valid rows get an int64 ``ts``; bad rows come back as a quarantine frame.
    ``min_ts`` is the timestamp floor (`row_reasons`).
    """
    reasons, ts = row_reasons(df, item_ids, min_ts)
    bad = reasons != ""
    good = df.loc[~bad].copy()
    good["ts"] = ts[~bad]
    quarantined = quarantine_frame(df.loc[bad], reasons[bad])
    if bad.any():
        log.debug("batch: %d rows, %d quarantined", len(df), int(bad.sum()))
    return good.reset_index(drop=True), quarantined


def dedupe(df: pd.DataFrame) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Keeps the first row per ``event_id`` by ``(ts, _ord)``; returns (kept, dup rows)."""
    if df.empty:
        return df, empty_quarantine()
    order = np.lexsort((df[ORDER].to_numpy(), df["ts"].to_numpy(), ))
    df = df.iloc[order]
    dup = df["event_id"].duplicated(keep="first").to_numpy()
    kept = df.loc[~dup] if not dup.any() else df.iloc[np.flatnonzero(~dup)]
    dups = df.iloc[np.flatnonzero(dup)]
    quarantined = quarantine_frame(dups, np.full(len(dups), contract.DUPLICATE_ID, dtype=object))
    return kept.reset_index(drop=True), quarantined


def reason_counts(quarantine: pd.DataFrame) -> Dict[str, int]:
    """Counts per reason (every reason present, zero when absent)."""
    counts = {r: 0 for r in contract.REASONS}
    if len(quarantine):
        for r, c in quarantine[REASON].value_counts().items():
            counts[str(r)] = int(c)
    return counts
