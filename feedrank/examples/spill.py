"""The shuffles of example generation: through files (the frames of a shard are
written to files and Beam groups only their paths) or through Beam itself.

A runner that keeps the data of a ``GroupByKey`` in memory until the next stage
reads it (the Python DirectRunner / FnApiRunner, and the runner side of Beam's
local job service) would otherwise hold the whole event log, twice, between the
stages of example generation, so its memory would grow with the log.  With
`SpillDir` each stage holds one element's frames at a time: one read batch, or
one shard (about ``events_per_shard`` events), and the shuffled data lives on
disk until `SpillDir.remove` at the end of the run.

A file's name is fixed by the element that writes it (its kind, target shard
and source), so a retried bundle overwrites its own files; readers take a
shard's paths in sorted order.  Frames are pickled (protocol 5), exactly as a
Beam coder would pickle them, so what the stages see is unchanged.

`InBeam` (``shuffle: beam``) hands the frames to Beam instead, for runners
with a shuffle service of their own; `of` picks one by name.
"""
from __future__ import annotations

import logging
import pickle
import uuid
from typing import Iterable, List, Tuple, Union

import pandas as pd
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from feedrank.examples.sharding import concat

log = logging.getLogger(__name__)

DIR_NAME = "_spill"
FILES, BEAM = "files", "beam"
MODES = (FILES, BEAM)
_UNCOMPRESSED = CompressionTypes.UNCOMPRESSED


def run_dir(base: str) -> str:
    """A fresh directory for one run's spilled frames under ``base``."""
    return FileSystems.join(base, f"{DIR_NAME}-{uuid.uuid4().hex[:12]}")


class SpillDir:
    """Writes and reads the frames of one run's shuffles under ``root``."""

    def __init__(self, root: str):
        self.root = root

    def path(self, kind: str, shard: int, source: str) -> str:
        """Where the frame of ``source`` for ``shard`` of the shuffle ``kind`` goes."""
        return FileSystems.join(self.root, kind, f"{int(shard):05d}", f"{source}.pkl")

    def write(self, kind: str, shard: int, source: str, frame: pd.DataFrame) -> Tuple[int, str]:
        """Writes ``frame``; returns ``(shard, path)``, the element Beam groups."""
        path = self.path(kind, shard, source)
        with FileSystems.create(path, compression_type=_UNCOMPRESSED) as f:
            pickle.dump(frame, f, protocol=5)
        return int(shard), path

    def write_shards(self, kind: str, source: str, parts: Iterable[Tuple[int, pd.DataFrame]]
                     ) -> List[Tuple[int, str]]:
        """Writes every ``(shard, frame)`` of ``parts``; returns their ``(shard, path)`` elements."""
        return [self.write(kind, shard, source, frame) for shard, frame in parts]

    @staticmethod
    def read(paths: Iterable[str]) -> pd.DataFrame:
        """One frame of the frames at ``paths`` (see `read`)."""
        return read(paths)

    def remove(self) -> None:
        """Deletes the run's directory (nothing when it was never written)."""
        if FileSystems.exists(self.root):
            FileSystems.delete([self.root])
            log.info("removed the spilled shuffle data %s", self.root)


def read(paths: Iterable[str]) -> pd.DataFrame:
    """One frame of the frames at ``paths``, concatenated in sorted path order."""
    frames = []
    for path in sorted(paths):
        with FileSystems.open(path, compression_type=_UNCOMPRESSED) as f:
            frames.append(pickle.load(f))
    return concat(frames)


class InBeam:
    """The same interface with the frames themselves as Beam's elements."""

    @staticmethod
    def write_shards(kind: str, source: str, parts: Iterable[Tuple[int, pd.DataFrame]]
                     ) -> List[Tuple[int, pd.DataFrame]]:
        """The ``(shard, frame)`` pairs themselves."""
        del kind, source
        return [(int(shard), frame) for shard, frame in parts]

    @staticmethod
    def read(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
        """One frame of the grouped frames, in the order Beam gives them."""
        return concat(frames)

    def remove(self) -> None:
        """Nothing to remove."""


def of(mode: str, root: str) -> Union[SpillDir, InBeam]:
    """The shuffle named ``mode`` (`FILES` under ``root``, or `BEAM`)."""
    if mode == FILES:
        return SpillDir(root)
    if mode == BEAM:
        return InBeam()
    raise ValueError(f"shuffle must be one of {MODES}, got {mode!r}")
