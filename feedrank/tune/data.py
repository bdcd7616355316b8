"""The session tuner's data: session samples -> fit and validation arrays for the DRNN.

The Tuner tunes on the train split alone; the eval split stays the
Evaluator's.  The train split's samples are ordered by their session's start,
and the sessions that start last (``valid_fraction`` of the samples, whole
sessions) are the tuning validation set, a split by time as the pipeline's.
The one page-and-item vocabulary (`drnn.vocabulary`, descending frequency) comes
from the fit part only; the ids that are items are the label items, the purchased
items and the item pages.  ``max_samples`` (> 0) keeps the latest samples, to
bound a tuning run's cost.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf

from feedrank.sessions import drnn
from feedrank.sessions import features as SF
from feedrank.sessions.catalogue import item_flags

log = logging.getLogger(__name__)

Arrays = Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray], Dict[str, np.ndarray]]   # inputs, targets, weights


@dataclasses.dataclass
class SessionData:
    """Fit and validation arrays (`drnn.from_samples`: inputs, targets, sample weights), the id
    count (padding and out of vocabulary included), the vocabulary and its item flags
    (`arrays` maps other samples, e.g. an eval split, with them)."""
    train: Arrays
    valid: Arrays
    num_pages: int
    num_items: int
    pages: Dict[str, int] = dataclasses.field(default_factory=dict)
    item_mask: List[bool] = dataclasses.field(default_factory=list)

    def arrays(self, samples: Sequence[Mapping[str, Any]], max_pages: int = 50, max_purchases: int = 50) -> Arrays:
        x, y, w, _ = drnn.from_samples(samples, self.pages, max_pages, max_purchases, self.item_mask or None)
        return x, y, w


def read_samples(file_patterns: Sequence[str]) -> List[Dict[str, Any]]:
    """Session samples (dicts of the feature contract) from GZIP TFRecord files or patterns."""
    files = sorted({f for p in file_patterns for f in tf.io.gfile.glob(p)})
    if not files:
        raise ValueError(f"no session-sample files match {list(file_patterns)}")
    out = [SF.from_example(r.numpy()) for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    log.info("read %d session samples from %d file(s)", len(out), len(files))
    return out


def split_by_time(samples: Sequence[Mapping[str, Any]], valid_fraction: float,
                  max_samples: int = 0) -> Tuple[List[Mapping[str, Any]], List[Mapping[str, Any]]]:
    """(fit, valid): the last-starting sessions' samples (about ``valid_fraction``) are valid."""
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"tuner valid_fraction must be in (0, 1), got {valid_fraction}")
    ordered = sorted(samples, key=lambda s: (s[SF.SESSION_START_TS], s[SF.SESSION_ID], s[SF.PREFIX_LEN]))
    if max_samples > 0:
        ordered = ordered[-max_samples:]
    cut = int(round(len(ordered) * (1.0 - valid_fraction)))
    while 0 < cut < len(ordered) and ordered[cut][SF.SESSION_ID] == ordered[cut - 1][SF.SESSION_ID]:
        cut += 1   # whole sessions on each side
    fit, valid = ordered[:cut], ordered[cut:]
    if not fit or not valid:
        raise ValueError(f"{len(ordered)} session samples cannot be split into fit and validation sets "
                         f"(valid_fraction={valid_fraction}): the Tuner needs more sessions")
    return fit, valid


def session_data(samples: Sequence[Mapping[str, Any]], valid_fraction: float = 0.2, max_samples: int = 0,
                 max_pages: int = 50, max_purchases: int = 50) -> SessionData:
    """`SessionData` from session samples (module doc)."""
    fit, valid = split_by_time(samples, valid_fraction, max_samples)
    pages = drnn.vocabulary(p for s in fit for p in list(s[SF.HISTORY_PAGES]) + list(s[SF.RECENT_PAGES])
                            + list(s[SF.LABEL_ITEMS]) + list(s[SF.PURCHASE_HISTORY]) + [s[SF.NEXT_PAGE]] if p)
    items = {v for s in fit for v in list(s[SF.LABEL_ITEMS]) + list(s[SF.PURCHASE_HISTORY])}
    items |= {p for s in fit for p, t in zip(list(s[SF.HISTORY_PAGES]) + list(s[SF.RECENT_PAGES]),
                                              list(s[SF.HISTORY_PAGE_TYPES]) + list(s[SF.RECENT_PAGE_TYPES]))
              if t == "item"}
    mask = item_flags(sorted(pages, key=pages.get), items)
    train = drnn.from_samples(fit, pages, max_pages, max_purchases, mask)[:3]
    valid_arrays = drnn.from_samples(valid, pages, max_pages, max_purchases, mask)[:3]
    if not train[2][drnn.CART].any() or not valid_arrays[2][drnn.CART].any():
        raise ValueError("the tuning fit or validation set has no add-to-cart row")
    log.info("tuning data: %d fit rows, %d validation rows, %d catalogue ids", len(train[1][drnn.CART]),
             len(valid_arrays[1][drnn.CART]), len(pages) + 2)
    return SessionData(train, valid_arrays, len(pages) + 2, len(pages) + 2, pages, mask)
