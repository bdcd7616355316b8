"""Adding served impressions to an event log: the log's ``events`` table as a directory of parts.

  python -m feedrank.events.append --log data/daily                          # events/ as parts
  python -m feedrank.events.append --log data/daily --served 'runs/ab/*/events'   # and copy parts in

The serving log sink writes ``part-<first-entry-id>-<last-entry-id>.parquet``
files (the contract's columns, including ``arm``, ``model_version`` and
``score``). A log whose ``events`` table is a directory (``<log>/events/``)
reads such parts as more parts of the same table (`feedrank.events.io.table_files`),
so the sink can write straight into ``<log>/events/``. This module prepares a
log for that and copies parts written elsewhere:

* `as_part_directory` turns a single-file ``events.parquet`` / ``events.csv``
  into ``events/part-0-base.<ext>`` (a rename on the same filesystem; the name
  sorts before the sink's parts, whose entry ids begin with a millisecond time),
  also when the sink has created ``events/`` already;
* `append_parts` copies every ``.parquet`` part of a served directory that the
  log does not hold yet (by name; a part already there with other content is
  an error), each checked against the contract first and written atomically
  (temporary name, then rename).

Nothing here removes duplicate event ids: the example generator still keeps the
first occurrence by ``(ts, file order)`` and quarantines the others as
``duplicate_event_id``.
"""
from __future__ import annotations

import argparse
import filecmp
import glob
import logging
import os
import shutil
import sys
from typing import List, Optional

from feedrank.events import contract, io

log = logging.getLogger(__name__)

BASE_PART = "part-0-base"


def events_dir(log_dir: str) -> str:
    """The log's ``events/`` part directory."""
    return os.path.join(log_dir, contract.EVENTS)


def as_part_directory(log_dir: str) -> str:
    """Makes the log's events table a directory of parts; returns that directory.

    A single-file table moves into the directory, also when the sink has already
    created it; a log already in that form is left as it is; a log without an
    events table is a `ContractError`.
    """
    if not os.path.isdir(log_dir):
        raise io.ContractError(f"log directory {log_dir} does not exist")
    target = events_dir(log_dir)
    singles = [p for p in (target + ".parquet", target + ".csv") if os.path.isfile(p)]
    if len(singles) > 1:
        raise io.ContractError(f"table 'events' is ambiguous under {log_dir}: {singles}")
    if not singles:
        io.table_files(log_dir, contract.EVENTS)  # the part directory, or a ContractError naming what is missing
        return target
    os.makedirs(target, exist_ok=True)
    dest = os.path.join(target, BASE_PART + os.path.splitext(singles[0])[1].lower())
    if os.path.exists(dest):
        raise io.ContractError(f"cannot move {singles[0]} to {dest}: that part exists already")
    os.rename(singles[0], dest)
    log.info("events table of %s is now the part directory %s (%s)", log_dir, target, os.path.basename(dest))
    return target


def _served_parts(served_dir: str) -> List[io.TableFile]:
    """The served directory's parts, each checked against the events contract."""
    if not os.path.isdir(served_dir):
        raise io.ContractError(f"served events directory {served_dir} does not exist")
    parent, name = os.path.split(os.path.normpath(served_dir))
    files = io.table_files(parent, name)
    spec = contract.COLUMNS[contract.EVENTS]
    for tf in files:
        if tf.fmt != io.PARQUET:
            raise io.ContractError(f"served part {tf.path} is not Parquet: the log sink writes .parquet parts")
        cols = io.file_columns(tf)
        missing = [c for c, (_, required) in spec.items() if required and c not in cols]
        if missing:
            raise io.ContractError(f"served part {tf.path} is missing required column(s) {missing}")
    return files


def append_parts(log_dir: str, served_dir: str) -> List[str]:
    """Copies the served parts the log does not hold yet into ``<log>/events/``; returns the new paths.

    Idempotent: a part already copied (same name, same bytes) is skipped; the same
    name with other bytes is a `ContractError` (two sinks wrote the same entry range?).
    """
    target = as_part_directory(log_dir)
    if os.path.abspath(os.path.normpath(served_dir)) == os.path.abspath(target):
        log.info("the sink writes into %s itself: nothing to copy", target)
        return []
    added = []
    for tf in _served_parts(served_dir):
        dest = os.path.join(target, os.path.basename(tf.path))
        if os.path.exists(dest):
            if not filecmp.cmp(tf.path, dest, shallow=False):
                raise io.ContractError(f"{dest} already exists with other content than {tf.path}")
            continue
        tmp = os.path.join(target, f".{os.path.basename(tf.path)}.tmp")
        shutil.copyfile(tf.path, tmp)
        os.replace(tmp, dest)
        added.append(dest)
    log.info("appended %d served part(s) from %s to %s", len(added), served_dir, target)
    return added


def main(argv: Optional[List[str]] = None) -> int:
    """CLI: exit code 0, or 2 with a one-line error."""
    p = argparse.ArgumentParser(prog="python -m feedrank.events.append", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log", required=True, help="the event log directory (events, items, users)")
    p.add_argument("--served", action="append", default=[], metavar="DIR",
                   help="a directory of served event parts to copy in (a sink's events dir; repeatable; a glob "
                        "pattern such as 'ab/*/events' names every match); without it the log is only made a "
                        "part directory")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        added = []
        for pattern in args.served:
            dirs = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            if not dirs:
                log.warning("--served %s matches no directory", pattern)
            for served in dirs:
                added += append_parts(args.log, served)
        as_part_directory(args.log)
    except (io.ContractError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(added)} part(s) added to {events_dir(args.log)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
