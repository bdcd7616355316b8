"""The users table, sharded like the user events.

Each user shard's build reads only its users' rows, so no stage holds the whole
users table: `ShardUsers` reads the table in batches (one element per file or
parquet row group) and shuffles each batch's rows by ``hash(user_id)`` exactly as
the user events are (`feedrank.examples.sharding.by_shard`); `table_of` turns a
shard's rows back into the `feedrank.examples.snapshots.UserTable` that
`feedrank.examples.build.build_examples` reads.  Every row of a user lands in its
shard and the rows are put back in file order, so each user's snapshots (and
the first-in-file-order rule among equal ``valid_from``) are those of the whole
table: the examples are the same.
"""
from __future__ import annotations

import logging
import os
from typing import Tuple

import apache_beam as beam
import pandas as pd

from feedrank import features as F
from feedrank.events import contract, io
from feedrank.examples import declared, spill
from feedrank.examples.sharding import ReadUnit, by_shard
from feedrank.examples.snapshots import UserTable

log = logging.getLogger(__name__)

KIND = "user_rows"
_FILE_ORDER = "_user_row_ord"


class ShardUsers(beam.DoFn):
    """Reads one file / row group of the users table and shuffles its rows by user shard."""

    def __init__(self, num_shards: int, spec_json: str, shuffle: Tuple[str, str]):
        self._shards, self._spec_json, self._shuffle = num_shards, spec_json, shuffle

    def process(self, unit: ReadUnit):
        path, fmt, index, group = unit
        extra = declared.column_names(F.FeatureSpec.from_json(self._spec_json), contract.USERS)
        store = spill.of(*self._shuffle)
        tf = io.TableFile(contract.USERS, path, fmt, index)
        for offset, df in io.table_batches(tf, extra, None if group is None else [group]):
            first = io.order_key(index, offset, 1)[0]   # a row's key: its file's, plus its row in the file
            df = df.assign(**{_FILE_ORDER: first + df.index.to_numpy(dtype="int64")})
            log.info("users %s rows %d..%d: %d rows", os.path.basename(path), offset, offset + len(df), len(df))
            source = f"f{index}_g{-1 if group is None else group}_o{offset}"
            yield from store.write_shards(KIND, source, by_shard(df.reset_index(drop=True), "user_id",
                                                                 self._shards))


def table_of(rows: pd.DataFrame, spec: F.FeatureSpec) -> UserTable:
    """A shard's `UserTable` from its rows (in file order; no rows: an empty table)."""
    if rows.empty:
        return UserTable(io.empty_table(contract.USERS, declared.column_names(spec, contract.USERS)), spec)
    rows = rows.sort_values(_FILE_ORDER, kind="mergesort").drop(columns=[_FILE_ORDER]).reset_index(drop=True)
    return UserTable(rows, spec)
