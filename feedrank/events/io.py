"""Reading the event-log tables (see `feedrank.events.contract`).

A table ``<name>`` is ``<dir>/<name>.parquet``, ``<dir>/<name>.csv`` or a
directory ``<dir>/<name>/`` of ``.parquet`` / ``.csv`` parts (read in sorted
name order, which defines the "file order" used for duplicate resolution).

Schema problems (missing table, missing required column, a column of the
wrong physical type) raise `ContractError` naming the table and column; a file
that cannot be read (a truncated or corrupt Parquet file, a malformed CSV)
raises `UnreadableFileError` naming the file and the problem.
Per-row problems (an unparsable ``ts``, bytes that are not UTF-8 etc.) are *not*
errors here: they are left for `feedrank.events.validate` to quarantine.  For
that reason CSV files are read with every column as text, numeric columns are
parsed later, and text is decoded with ``surrogateescape`` (`feedrank.events.text`).
Event batches keep the log's columns beyond the contract (after the contract's),
so a quarantined row keeps every column it came with.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feedrank.events import contract, text

log = logging.getLogger(__name__)

PARQUET = "parquet"
CSV = "csv"
_EXTENSIONS = {".parquet": PARQUET, ".pq": PARQUET, ".csv": CSV}


class ContractError(ValueError):
    """The log violates the contract at the table/column level."""


class UnreadableFileError(ContractError):
    """A file of the log cannot be read at all (truncated, corrupt, malformed)."""


# Exceptions of the readers that mean "this file cannot be read" (never a bug of ours).
_READ_ERRORS = (pa.ArrowException, OSError, pd.errors.ParserError, pd.errors.EmptyDataError,
                UnicodeDecodeError, EOFError)
_ARROW_PREFIX = re.compile(r"^Could not open Parquet input source '[^']*': ")
_NAMES = {PARQUET: "Parquet", CSV: "CSV"}


@contextlib.contextmanager
def reading(tf: "TableFile") -> Iterator[None]:
    """Turns a reader's error on ``tf`` into an `UnreadableFileError` naming the file."""
    try:
        yield
    except ContractError:
        raise
    except _READ_ERRORS as e:
        problem = " ".join(_ARROW_PREFIX.sub("", str(e)).split()) or type(e).__name__
        raise UnreadableFileError(
            f"table '{tf.table}': cannot read {tf.path} as {_NAMES[tf.fmt]}: {problem}") from None


@dataclasses.dataclass(frozen=True)
class TableFile:
    """One physical file of a table, with its position in file order."""

    table: str
    path: str
    fmt: str      # PARQUET or CSV
    index: int    # position in the table's file order


def table_files(input_base: str, table: str) -> List[TableFile]:
    """Lists the files of ``table`` under ``input_base`` in file order.

    Raises:
      ContractError: when the table is absent or its directory holds no parts.
    """
    candidates = [os.path.join(input_base, table + ext) for ext in (".parquet", ".csv")]
    found = [p for p in candidates if os.path.isfile(p)]
    part_dir = os.path.join(input_base, table)
    if os.path.isdir(part_dir):
        parts = sorted(
            os.path.join(part_dir, n) for n in os.listdir(part_dir)
            if os.path.splitext(n)[1].lower() in _EXTENSIONS and not n.startswith((".", "_")))
        if not parts:
            raise ContractError(
                f"table '{table}': directory {part_dir} holds no .parquet/.csv parts")
        found.extend(parts)
    if not found:
        raise ContractError(
            f"table '{table}' is missing: expected {table}.parquet, {table}.csv or a "
            f"directory {table}/ of parts under {input_base}")
    if len({os.path.dirname(p) for p in found}) > 1 or (
            len(found) > 1 and not os.path.isdir(part_dir)):
        raise ContractError(f"table '{table}' is ambiguous under {input_base}: {found}")
    return [TableFile(table, p, _EXTENSIONS[os.path.splitext(p)[1].lower()], i)
            for i, p in enumerate(found)]


def _arrow_kind(t: pa.DataType) -> str:
    """Coarse kind of an Arrow type: string, int, float, null or other."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    return "other"


# Physical kinds accepted for each logical type.  ``ts`` may arrive as float
# (NaN) or text: such rows are quarantined one by one, not rejected wholesale.
# Text may arrive as binary (decoded as UTF-8, undecodable rows quarantined).
_ACCEPTED = {
    "string": {"string", "binary", "null"},
    "int64": {"int", "float", "string", "null"},
    "float64": {"int", "float", "null"},
}


def file_columns(tf: TableFile) -> Dict[str, str]:
    """Column name -> coarse kind for one file (CSV columns are all text)."""
    with reading(tf):
        if tf.fmt == PARQUET:
            schema = pq.read_schema(tf.path)
            return {f.name: _arrow_kind(f.type) for f in schema}
        header = pd.read_csv(tf.path, nrows=0, dtype=str, encoding_errors=text.ERRORS)
    return {c: "string" for c in header.columns}


def check_table(input_base: str, table: str) -> List[TableFile]:
    """Checks every file of ``table`` against the contract; returns its files."""
    files = table_files(input_base, table)
    spec = contract.COLUMNS[table]
    for tf in files:
        cols = file_columns(tf)
        for name, (logical, required) in spec.items():
            if name not in cols:
                if required:
                    raise ContractError(
                        f"table '{table}' ({tf.path}) is missing required column '{name}'")
                continue
            kind = cols[name]
            if tf.fmt == CSV:
                continue
            if kind not in _ACCEPTED[logical]:
                raise ContractError(
                    f"table '{table}' ({tf.path}) column '{name}' has wrong type "
                    f"'{kind}', expected {logical}")
    return files


def check_log(input_base: str) -> Dict[str, List[TableFile]]:
    """Checks all three tables; returns table -> files."""
    if not os.path.isdir(input_base):
        raise ContractError(f"log directory {input_base} does not exist")
    return {t: check_table(input_base, t) for t in contract.TABLES}


def _normalise(df: pd.DataFrame, table: str, numeric_ts: bool, keep_extra: bool = False) -> pd.DataFrame:
    """Brings a frame to contract column order/types (strings as object).

    String columns get ``""`` for missing values (binary values are decoded);
    float columns are parsed (unparsable -> NaN); ``ts`` is left raw unless
    ``numeric_ts``.  With ``keep_extra`` the columns beyond the contract follow,
    as they are.
    """
    out = {}
    n = len(df)
    for name, (logical, _) in contract.COLUMNS[table].items():
        if name not in df.columns:
            col = pd.Series([""] * n if logical == "string" else [float("nan")] * n,
                            index=df.index, dtype=object if logical == "string" else float)
        else:
            col = df[name]
            if logical == "string":
                col = text.decode_bytes(col.astype(object).where(col.notna(), ""))
                if col.map(type).ne(str).any():
                    col = col.astype(str)
            elif logical == "float64":
                col = pd.to_numeric(col, errors="coerce").astype(float)
            elif numeric_ts:
                col = pd.to_numeric(col, errors="coerce")
        out[name] = col
    if keep_extra:
        for name in df.columns:
            if name not in out:
                out[name] = df[name]
    return pd.DataFrame(out, index=df.index)


def _next(tf: "TableFile", it: Iterator[Any]) -> Any:
    """The next item of a reader's iterator (None at the end), read errors naming the file."""
    with reading(tf):
        return next(it, None)


def iter_batches(tf: TableFile, batch_rows: int = 262_144, row_groups: Optional[Sequence[int]] = None,
                 keep_extra: bool = True) -> Iterator[Tuple[int, pd.DataFrame]]:
    """Yields ``(first_row_offset, frame)`` batches of one file, normalised.

    ``ts`` keeps its raw values (ints, floats or strings) for validation.
    ``row_groups`` restricts a parquet file to some row groups.  ``keep_extra``
    keeps the file's columns beyond the contract (after the contract's).

    Raises:
      UnreadableFileError: naming the file, when it cannot be read.
    """
    wanted = list(contract.COLUMNS[tf.table])
    if tf.fmt == PARQUET:
        with reading(tf):
            pf = pq.ParquetFile(tf.path)
            names = pf.schema_arrow.names
            present = [c for c in names if keep_extra or c in wanted]
            groups = list(range(pf.num_row_groups)) if row_groups is None else list(row_groups)
            offsets = [0]
            for g in range(pf.num_row_groups):
                offsets.append(offsets[-1] + pf.metadata.row_group(g).num_rows)
        for g in groups:
            offset = offsets[g]
            with reading(tf):
                batches = pf.iter_batches(batch_size=batch_rows, row_groups=[g], columns=present)
            while (rb := _next(tf, batches)) is not None:
                df = text.batch_to_pandas(rb)
                yield offset, _normalise(df, tf.table, numeric_ts=False, keep_extra=keep_extra)
                offset += len(df)
    else:
        offset = 0
        with reading(tf):
            chunks = pd.read_csv(tf.path, dtype=str, na_filter=False, chunksize=batch_rows,
                                 encoding_errors=text.ERRORS)
        while (df := _next(tf, chunks)) is not None:
            yield offset, _normalise(df, tf.table, numeric_ts=False, keep_extra=keep_extra)
            offset += len(df)


def estimate_rows(tf: TableFile) -> int:
    """Row count of a parquet file (metadata) or a rough one for CSV (size/80)."""
    with reading(tf):
        if tf.fmt == PARQUET:
            return pq.ParquetFile(tf.path).metadata.num_rows
        return os.path.getsize(tf.path) // 80 + 1


def parquet_row_groups(tf: TableFile) -> int:
    """Number of row groups of a parquet file (1 for CSV)."""
    with reading(tf):
        return pq.ParquetFile(tf.path).num_row_groups if tf.fmt == PARQUET else 1


def read_table(input_base: str, table: str, extra: Sequence[str] = ()) -> pd.DataFrame:
    """Reads a whole (small) table, e.g. items or users, checked and normalised
    (the contract's columns, then the ``extra`` ones, as they are: e.g. the
    table's columns declared in a feature contract,
    `feedrank.examples.declared.column_names`).

    A row holding bytes that are not UTF-8 in a text column is left out with a
    warning showing it (an event naming such an item is then quarantined as
    ``item_not_in_items``).
    """
    files = check_table(input_base, table)
    frames = [df for tf in files for _, df in table_batches(tf, extra)]
    df = pd.concat(frames, ignore_index=True) if frames else empty_table(table, extra)
    log.info("read table %s: %d rows from %d file(s)", table, len(df), len(files))
    return df


def empty_table(table: str, extra: Sequence[str] = ()) -> pd.DataFrame:
    """A table with no rows, as `read_table` gives it (the ``extra`` columns as object)."""
    df = _normalise(pd.DataFrame(columns=list(contract.COLUMNS[table])), table, False)
    for c in extra:
        if c not in df.columns:
            df[c] = pd.Series([], dtype=object)
    return df


def table_batches(tf: TableFile, extra: Sequence[str] = (), row_groups: Optional[Sequence[int]] = None
                  ) -> Iterator[Tuple[int, pd.DataFrame]]:
    """``(first_row_offset, frame)`` batches of one file of a small table as `read_table` reads
    it: the contract's columns, then the ``extra`` ones; a row holding bytes that are not
    UTF-8 in a text column is left out with a warning.  A frame's index is each row's
    position in its batch (``offset + index``: its row in the file)."""
    keep = list(contract.COLUMNS[tf.table]) + [c for c in extra if c not in contract.COLUMNS[tf.table]]
    for offset, df in iter_batches(tf, row_groups=row_groups, keep_extra=bool(extra)):
        df = df[[c for c in keep if c in df.columns]]
        bad = np.zeros(len(df), dtype=bool)
        for name, (logical, _) in contract.COLUMNS[tf.table].items():
            if logical == "string":
                bad |= text.undecodable(df[name].to_numpy())
        if bad.any():
            first = {k: text.escape_text(v) if isinstance(v, str) else v for k, v in df.loc[bad].iloc[0].items()}
            log.warning("table %s: %d row(s) with bytes that are not UTF-8 left out, e.g. %s",
                        tf.table, int(bad.sum()), first)
            df = df.loc[~bad]
        yield offset, df


def read_events(input_base: str) -> pd.DataFrame:
    """Reads the whole events table with raw ``ts`` and a file-order ``_ord``."""
    frames = []
    for tf in check_table(input_base, contract.EVENTS):
        for offset, df in iter_batches(tf):
            df["_ord"] = order_key(tf.index, offset, len(df))
            frames.append(df)
    return pd.concat(frames, ignore_index=True)


def order_key(file_index: int, offset: int, n: int) -> np.ndarray:
    """Global file-order key of ``n`` rows starting at ``offset`` of a file."""
    return (np.int64(file_index) << np.int64(40)) + np.arange(offset, offset + n, dtype=np.int64)
