"""Text columns holding bytes that are not UTF-8.

The readers (`feedrank.events.io`) decode every text value with Python's
``surrogateescape`` error handler: a byte that is not part of valid UTF-8
becomes a lone surrogate (U+DC80..U+DCFF), which valid UTF-8 text never holds.
So one bad byte never fails a whole file: `undecodable` finds the rows that hold
such bytes (`feedrank.events.validate` quarantines them), and `escape_text`
shows their raw content with backslash-escaped bytes (``x\\xff1``), which can be
written anywhere UTF-8 is required.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

log = logging.getLogger(__name__)

ERRORS = "surrogateescape"   # the error handler every text value is decoded with


def undecodable(values: Any) -> np.ndarray:
    """True where a text value holds bytes that were not UTF-8 (lone surrogates).

    One ``encode`` of the joined column is the fast path; only a column that
    fails it is checked value by value.
    """
    values = np.asarray(values, dtype=object)
    try:
        try:
            joined = "\n".join(values)
        except TypeError:  # not all text
            joined = "\n".join(v for v in values if isinstance(v, str))
        joined.encode("utf-8")
        return np.zeros(len(values), dtype=bool)
    except UnicodeEncodeError:
        return np.fromiter((isinstance(v, str) and not _encodes(v) for v in values),
                           dtype=bool, count=len(values))


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def escape_text(value: str) -> str:
    """A value read with ``surrogateescape``, its undecodable bytes shown as ``\\xNN``."""
    if _encodes(value):
        return value
    try:
        raw = value.encode("utf-8", ERRORS)
    except UnicodeEncodeError:  # a surrogate that does not stand for a byte
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def decode_bytes(col: pd.Series) -> pd.Series:
    """``bytes`` values (a binary Parquet column) decoded as UTF-8 with ``surrogateescape``."""
    if not col.map(type).eq(bytes).any():
        return col
    return col.map(lambda v: v.decode("utf-8", ERRORS) if isinstance(v, bytes) else v)


def _column_to_pandas(array: pa.Array) -> pd.Series:
    """One Arrow column as pandas; text with invalid UTF-8 decoded value by value."""
    try:
        return array.to_pandas()
    except (pa.ArrowException, UnicodeDecodeError):
        t = array.type
        if pa.types.is_dictionary(t):
            array, t = array.dictionary_decode(), t.value_type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise
        as_bytes = array.view(pa.large_binary() if pa.types.is_large_string(t) else pa.binary())
        return pd.Series([None if v is None else v.decode("utf-8", ERRORS) for v in as_bytes.to_pylist()],
                         dtype=object)


def batch_to_pandas(batch: pa.RecordBatch) -> pd.DataFrame:
    """A record batch as pandas; a string column holding invalid UTF-8 does not fail it."""
    try:
        return batch.to_pandas()
    except (pa.ArrowException, UnicodeDecodeError):
        log.warning("a text column holds bytes that are not UTF-8: decoding it value by value")
        return pd.DataFrame({name: _column_to_pandas(batch.column(i))
                             for i, name in enumerate(batch.schema.names)})
