"""The Word2Vec corpus: per-user click sequences and per-query token lists.

Events are read with the example generator's own reader and row checks
(`feedrank.events.io`, `feedrank.events.validate`): malformed rows are
skipped (the example generator quarantines and counts them; here they are
only counted), duplicate event ids keep their first occurrence by
``(ts, file order)``.

The leakage rule: the corpus covers ``[train_start - window_days days,
train_start)`` where ``train_start`` is the first second of the ranker's train
split: the example generator's ``train_start_ts``, the end of its
``examples.warmup_days`` history-only days (`train_start`).  Every example,
train, validation or eval, is later than every event the vectors saw, so no
example's similarity features or initial embeddings reflect its own label or
anything after it.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from feedrank.events import contract, io, validate
from feedrank.examples import splits
from feedrank.examples.settings import ExampleSettings

log = logging.getLogger(__name__)

DAY_S = 86_400
MAX_SENTENCE = 10_000   # gensim's limit per sentence; longer sequences are split
_KEEP = ("event_id", "user_id", "item_id", "event", "ts", "query", validate.ORDER)
_CORPUS_EVENTS = (contract.CLICK, contract.SEARCH)


class EmptyCorpusError(ValueError):
    """No click falls in the vectors' window."""


@dataclasses.dataclass
class Corpus:
    """Sentences for Word2Vec and the facts of how they were cut."""

    click_sequences: List[List[str]]   # one per user, oldest first
    queries: List[List[str]]           # one per search, its tokens
    window_start: int                  # unix seconds, inclusive
    window_end: int                    # unix seconds, exclusive: the start of the train split
    counts: Dict[str, int]


def train_start(events: pd.DataFrame, warmup_days: int) -> int:
    """First second of the train split, by the example generator's own rule for its
    ``train_start_ts`` (`feedrank.examples.splits.bounds_of`): midnight (UTC) of the
    first plausible impression's day plus ``warmup_days`` days."""
    kind = events["event"].astype(str).to_numpy()
    ts = events["ts"].to_numpy(dtype=np.int64)[kind == contract.IMPRESSION]
    settings = ExampleSettings(warmup_days=int(warmup_days))
    bounds = splits.bounds_of(splits.histogram(ts, settings.min_ts), settings)
    if not bounds:
        raise EmptyCorpusError("the event log holds no plausible impression, so the train split has no "
                               "start: the word2vec window cannot be placed")
    return int(bounds["train_start_ts"])


def read_valid_events(input_base: str) -> Tuple[pd.DataFrame, Dict[str, int]]:
    """Valid, de-duplicated events (clicks and searches keep their ids and query;
    other types only ``event_id``/``event``/``ts``, enough for the dedupe and the
    cutoff) and the counts ``events_read``, ``events_valid``, ``skipped_bad``."""
    tables = io.check_log(input_base)
    items = pd.Index(io.read_table(input_base, contract.ITEMS)["item_id"].to_numpy(dtype=object)).unique()
    frames, read, bad = [], 0, 0
    for tf in tables[contract.EVENTS]:
        for offset, df in io.iter_batches(tf):
            df[validate.ORDER] = io.order_key(tf.index, offset, len(df))
            good, quarantined = validate.split_batch(df, items)
            read, bad = read + len(df), bad + len(quarantined)
            good = good[list(_KEEP)].copy()
            other = ~good["event"].isin(_CORPUS_EVENTS).to_numpy()
            good.loc[other, ["user_id", "item_id", "query"]] = ""   # not needed: keep memory small
            good["event"] = pd.Categorical(good["event"], categories=contract.EVENT_TYPES)
            frames.append(good)
    events = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(_KEEP))
    events, dups = validate.dedupe(events)
    counts = {"events_read": read, "events_valid": len(events), "skipped_bad": bad + len(dups)}
    log.info("word2vec corpus: %d events read, %d valid, %d malformed/duplicate rows skipped",
             read, len(events), counts["skipped_bad"])
    return events, counts


def _chunks(seq: List[str]) -> List[List[str]]:
    return [seq[i:i + MAX_SENTENCE] for i in range(0, len(seq), MAX_SENTENCE)]


def build_corpus(events: pd.DataFrame, window_days: int, warmup_days: int = 0,
                 end: Optional[int] = None) -> Corpus:
    """Sentences from valid events (``event``, ``user_id``, ``item_id``, ``query``,
    int ``ts``, ``event_id``) in ``[end - window_days days, end)``.  ``end`` is the
    start of the train split: pass the example generator's ``train_start_ts`` to use
    exactly its split; without it, `train_start` of the events and ``warmup_days``."""
    if window_days < 1:
        raise ValueError(f"window_days must be >= 1, got {window_days}")
    if events.empty:
        raise EmptyCorpusError("the event log holds no valid events")
    ts = events["ts"].to_numpy(dtype=np.int64)
    end = int(end) if end is not None else train_start(events, warmup_days)
    start = end - int(window_days) * DAY_S
    in_window = (ts >= start) & (ts < end)
    kind = events["event"].astype(str).to_numpy()
    clicks = events.loc[in_window & (kind == contract.CLICK)].sort_values(["user_id", "ts", "event_id"])
    searches = events.loc[in_window & (kind == contract.SEARCH)].sort_values(["user_id", "ts", "event_id"])
    sequences = [s for _, items in clicks.groupby("user_id", sort=True)["item_id"]
                 for s in _chunks(list(items))]
    queries = [q.split() for q in searches["query"].to_numpy(dtype=object)]
    queries = [q for q in queries if q]
    counts = {
        "clicks_in_window": len(clicks), "click_users": len(sequences),
        "distinct_clicked_items": int(clicks["item_id"].nunique()),
        "searches_in_window": len(queries),
        "clicks_from_train_start": int(((ts >= end) & (kind == contract.CLICK)).sum()),
        "clicks_before_window": int(((ts < start) & (kind == contract.CLICK)).sum()),
    }
    log.info("word2vec window [%d, %d) (the %d day(s) before the train split): %s",
             start, end, window_days, counts)
    if not len(clicks):
        raise EmptyCorpusError(
            f"no clicks in the word2vec window [{start}, {end}) (the {window_days} day(s) before the "
            f"train split starts at {end}); {counts['clicks_from_train_start']} click(s) fall in or after "
            f"the train split and {counts['clicks_before_window']} before the window: raise "
            f"examples.warmup_days and word2vec.window_days together, or disable word2vec")
    return Corpus(sequences, queries, start, end, counts)


def load_corpus(input_base: str, window_days: int, warmup_days: int = 0,
                end: Optional[int] = None) -> Corpus:
    """`read_valid_events` then `build_corpus`; the read counts join the corpus counts."""
    events, read_counts = read_valid_events(input_base)
    corpus = build_corpus(events, window_days, warmup_days, end)
    corpus.counts = {**read_counts, **corpus.counts}
    return corpus
