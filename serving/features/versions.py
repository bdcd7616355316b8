"""Time-versioned attribute values in the online store: the offline snapshot rule at a second.

An ``items`` / ``users`` row holds its attributes from its ``valid_from`` on
(`feedrank.examples.snapshots`): at time ``t`` an id uses its row with the
greatest ``valid_from <= t``, a row without ``valid_from`` is valid from the
beginning, and before an id's first ``valid_from`` it has no attributes (as an
id missing from the table).  The store keeps every row of an id, so a reader
applies that rule at its own event's or request's second:

* an id with one row valid from the beginning is stored as before: the row
  itself (``p:items``: the JSON row, ``p:users``: the region, ``p:uattrs``: the
  JSON object), so a table without ``valid_from`` costs nothing more;
* any other id is stored as its versions, oldest first, each
  ``[valid_from or null, row]``: in ``p:items`` the JSON object
  ``{"versions": [...]}``, in ``p:uattrs`` the JSON list, and in ``p:users``
  `USER_MARK` followed by the JSON list.

This module needs no pandas, pyarrow or TensorFlow: the transformer imports it.
"""
from __future__ import annotations

import bisect
import json
import time
from typing import Any, List, Optional, Sequence, Tuple

# Starts a versioned ``p:users`` value (a region id never starts with NUL).
USER_MARK = "\x00"
VERSIONS = "versions"

Versions = List[Tuple[Optional[int], Any]]


def encode(versions: Versions) -> Any:
    """The JSON-able versions ``[[valid_from or null, row], ...]`` (oldest first)."""
    return [[None if vf is None else int(vf), row] for vf, row in versions]


def is_plain(versions: Versions) -> bool:
    """Whether ``versions`` is one row valid from the beginning (stored as the row itself)."""
    return len(versions) == 1 and versions[0][0] is None


def encode_user_region(versions: Versions) -> str:
    """The ``p:users`` value of a user's region versions."""
    if is_plain(versions):
        return str(versions[0][1])
    return USER_MARK + json.dumps(encode(versions))


def decode_user_region(raw) -> Versions:
    """The region versions of a ``p:users`` value ([] when absent)."""
    if raw is None:
        return []
    if isinstance(raw, bytes):
        raw = raw.decode()
    if not raw.startswith(USER_MARK):
        return [(None, raw)]
    return [(vf, region) for vf, region in json.loads(raw[len(USER_MARK):])]


class Timeline:
    """The versions of one id, searchable by time."""

    __slots__ = ("starts", "rows")

    def __init__(self, versions: Versions):
        # rows without valid_from come first (the loader writes them so) and count as -inf
        self.starts = [float("-inf") if vf is None else float(vf) for vf, _ in versions]
        self.rows = [row for _, row in versions]

    def at(self, ts: Optional[float]) -> Optional[Any]:
        """The row valid at ``ts`` (None: now); None before the first valid_from."""
        t = time.time() if ts is None else float(ts)
        k = bisect.bisect_right(self.starts, t) - 1
        return self.rows[k] if k >= 0 else None


def row_at(versions: Sequence[Tuple[Optional[int], Any]], ts: Optional[float]) -> Optional[Any]:
    """The row of ``versions`` valid at ``ts`` (None: now); None when none is valid yet."""
    return Timeline(list(versions)).at(ts) if versions else None
