"""Declared columns of the ``items`` and ``users`` tables in the example generator.

The run config's ``features:`` section names extra columns of the two
attribute tables (the ``declared`` columns of a `feedrank.features.FeatureSpec`,
which every function here takes).  Here they are checked against the
files (before any Beam work), converted per snapshot row of their table, and
encoded as the raw tf.Example features ``item_<column>`` / ``user_<column>``:

  * ``categorical``: one string ("" when missing);
  * ``numeric``: one float (the declared ``default`` when missing or empty);
  * ``tokens``: the whitespace-separated tokens, at most ``max_tokens`` (the
    first ones), an empty list when missing.

A declared column absent from a file of its table, a numeric column holding a
value that is not a number or is not finite (``inf``, ``-inf``; NaN is
missing), or a categorical/tokens column that is not text is
a `feedrank.events.io.ContractError` naming the table, the column and the file.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from feedrank import features as F
from feedrank.events import io, text
from feedrank.examples import encode as E

log = logging.getLogger(__name__)

# Parquet kinds accepted per declared kind (`io.file_columns`).
_ACCEPTED = {
    "categorical": {"string", "binary", "null"},
    "tokens": {"string", "binary", "null"},
    "numeric": {"int", "float", "null"},
}


def columns_of(spec: F.FeatureSpec, table: str) -> Tuple[F.Declared, ...]:
    """The columns of ``table`` ("items" or "users") declared in ``spec``."""
    return spec.declared_of(table)


def column_names(spec: F.FeatureSpec, table: str) -> List[str]:
    """Names of the columns of ``table`` declared in ``spec`` (`io.read_table`'s ``extra``)."""
    return [c.column for c in columns_of(spec, table)]


def _where(c: F.Declared) -> str:
    return f"table '{c.table}' column '{c.column}' (declared in features.{c.table} as {c.kind})"


def check_files(spec: F.FeatureSpec, files: Mapping[str, Sequence[io.TableFile]]) -> None:
    """Every column declared in ``spec`` is present in every file of its table with a usable type;
    numeric columns are read and checked here (numbers, finite).  Raises `io.ContractError` naming the column."""
    for table, tfs in files.items():
        for c in columns_of(spec, table):
            for tf in tfs:
                kinds = io.file_columns(tf)
                if c.column not in kinds:
                    raise io.ContractError(f"{_where(c)} is missing from {tf.path}")
                if tf.fmt == io.PARQUET and kinds[c.column] not in _ACCEPTED[c.kind]:
                    expected = "numbers" if c.kind == "numeric" else "text"
                    raise io.ContractError(f"{_where(c)} in {tf.path} has type '{kinds[c.column]}', "
                                           f"expected {expected}")
                if c.kind != "numeric":
                    continue
                with io.reading(tf):
                    if tf.fmt == io.CSV:
                        values = pd.read_csv(tf.path, usecols=[c.column], dtype=str, na_filter=False,
                                             encoding_errors=text.ERRORS)[c.column].to_numpy(dtype=object)
                    else:
                        values = pq.read_table(tf.path, columns=[c.column]).column(0).to_pandas().to_numpy(
                            dtype=object)
                numbers(c, values, tf.path)


def numbers(c: F.Declared, values: np.ndarray, where: str = "") -> np.ndarray:
    """float32 values of a numeric column: missing/empty/NaN -> ``default``; anything else
    that is not a finite number is a `io.ContractError` (an ``inf`` would train at loss=nan)."""
    series = pd.Series(values, dtype=object)
    missing = series.isna() | series.map(lambda v: isinstance(v, str) and not v.strip())
    parsed = pd.to_numeric(series.where(~missing, np.nan), errors="coerce").astype(float)
    bad = parsed.isna() & ~missing
    if bad.any():
        raise io.ContractError(f"{_where(c)}{' in ' + where if where else ''} holds values that are not "
                               f"numbers, e.g. {series[bad].iloc[0]!r} ({int(bad.sum())} row(s))")
    infinite = np.isinf(parsed.to_numpy())
    if infinite.any():
        raise io.ContractError(f"{_where(c)}{' in ' + where if where else ''} holds values that are not "
                               f"finite, e.g. {series[infinite].iloc[0]!r} ({int(infinite.sum())} row(s)); "
                               f"leave a value empty for the declared default")
    return np.where(np.isnan(parsed.to_numpy()), c.default, parsed.to_numpy()).astype(np.float32)


def _strings(c: F.Declared, values: np.ndarray) -> np.ndarray:
    """Text of a categorical/tokens column ("" when missing); non-text is a ContractError."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out[i] = ""
        elif isinstance(v, bytes):
            out[i] = v.decode("utf-8", errors="replace")
        elif isinstance(v, str):
            out[i] = v
        else:
            raise io.ContractError(f"{_where(c)} holds a value that is not text: {v!r}")
    return out


def row_values(spec: F.FeatureSpec, rows: pd.DataFrame, table: str) -> Dict[str, np.ndarray]:
    """Feature name -> per-row values of every column of ``table`` declared in ``spec``: bytes
    (categorical), float32 (numeric) or tuples of bytes (tokens)."""
    out: Dict[str, np.ndarray] = {}
    for c in columns_of(spec, table):
        if c.column not in rows.columns:
            raise io.ContractError(f"{_where(c)} is missing (columns: {sorted(rows.columns)})")
        raw = rows[c.column].to_numpy(dtype=object)
        if c.kind == "numeric":
            out[c.feature_name] = numbers(c, raw)
            continue
        strings = _strings(c, raw)
        values = np.empty(len(strings), dtype=object)
        if c.kind == "categorical":
            values[:] = [s.encode() for s in strings]
        else:
            values[:] = [tuple(t.encode() for t in s.split()[:c.max_tokens]) for s in strings]
        out[c.feature_name] = values
    return out


def missing_value(c: F.Declared):
    """`features.Declared.missing` in the example generator's encoding."""
    if c.kind == "categorical":
        return c.missing.encode()
    return np.float32(c.missing) if c.kind == "numeric" else c.missing


def entries(spec: F.FeatureSpec, table: str, values: Mapping[str, np.ndarray], rows: np.ndarray,
            fan_out) -> Dict[str, List[bytes]]:
    """Encoded tf.Example entries of the features of ``table`` declared in ``spec``, one
    per impression.

    ``values``: `row_values` of the table (built with the same ``spec``);
    ``rows``: the snapshot row of each impression (-1: the id is not in the table);
    ``fan_out(keys, make)`` encodes once per distinct key (`assemble.fan_out`).
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols: Dict[str, List[bytes]] = {}
    for c in columns_of(spec, table):
        if c.feature_name not in values:
            raise ValueError(f"{_where(c)}: the {table} table was read without this declared column "
                             f"(it holds {sorted(values)}); build the table with the same FeatureSpec")
        name, per_row = c.feature_name, values[c.feature_name]
        missing = missing_value(c)

        def value(i: int, per_row=per_row, missing=missing):
            return per_row[rows[i]] if rows[i] >= 0 else missing

        if c.kind == "numeric":
            cols[name] = fan_out(rows, lambda i, name=name, value=value: E.float_entry(name, float(value(i))))
        elif c.kind == "categorical":
            single = E.BytesEntry(name).single
            cols[name] = fan_out(rows, lambda i, single=single, value=value: single(value(i)))
        else:
            enc = E.BytesEntry(name)
            cols[name] = fan_out(rows, lambda i, enc=enc, value=value: enc.payload(
                b"".join(E.ld(b"\x0a", t) for t in value(i))))
    return cols
