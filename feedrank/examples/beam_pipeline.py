"""The Beam graph: validate the event log and write train/eval tf.Examples.

Elements are pandas frames (batches), never single events:

  files/row groups --read+validate (vectorised, per batch)--> valid frames
    --GroupByKey(hash(event_id) shard)--> dedupe --+--> item shards (imps+clicks)
                                                   +--> user shards (all events)
  item shards --item_history--> counts per (item_id, ts) --> user shards
  user shards (events + counts, CoGroupByKey) --build_examples--> train / eval
    --> GZIP TFRecords ``Split-<name>/data_tfrecord-*.gz``

Bad rows (one reason each) go to ``<quarantine_dir>/quarantine.parquet``;
accounting goes to ``summary.json`` (both in the quarantine and examples dirs).
`run` is the plain-Python entry; the TFX executor calls `build` + `finalize`.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.options.pipeline_options import PipelineOptions

from feedrank.events import contract, io, validate
from feedrank.examples import accounting, build, tfrecord
from feedrank.examples.accounting import QUARANTINE_FILE, SUMMARY_FILE, TooManyBadRowsError  # noqa: F401 (API)
from feedrank.examples.history import JOIN_KEY, empty_history, item_history
from feedrank.examples.settings import EVENTS_PER_SHARD, ExampleSettings

log = logging.getLogger(__name__)

SPLITS = accounting.SPLITS
TRAIN, EVAL = SPLITS
TFRECORD_PREFIX = "data_tfrecord"
_ITEM_COLUMNS = ["item_id", "event", "ts"]
_USHARD = "_user_shard"
_SHUFFLE_COLUMNS = build.EVENT_COLUMNS + [validate.ORDER]
_USER_EVENTS = (contract.IMPRESSION, contract.SEARCH) + tuple(build.CHANNEL_EVENTS.values())


@dataclasses.dataclass
class ExampleGenConfig(ExampleSettings):
    """Parameters of example generation: the component's (`ExampleSettings`,
    with ``num_shards: 0`` meaning one shard per ``events_per_shard`` events)
    and the Beam graph's own."""

    events_per_shard: int = EVENTS_PER_SHARD
    batch_rows: int = 262_144        # rows per read batch
    chunk_examples: int = 20_000     # examples per framed TFRecord chunk element
    gzip_level: int = 1              # zlib level of the output TFRecords (1: ~3x faster than 6, ~20% larger)

    @classmethod
    def of(cls, config: Any) -> "ExampleGenConfig":
        """From None, a dict, this class or any object with these attributes."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        get = config.get if isinstance(config, dict) else (lambda k, d: getattr(config, k, d))
        return cls(**{f.name: get(f.name, f.default) for f in dataclasses.fields(cls)})

    def build_config(self) -> build.BuildConfig:
        return build.BuildConfig(self.label_window_s, self.eval_days,
                                 self.negative_sampling_rate, self.seed)


def shard_of(values: np.ndarray, num_shards: int) -> np.ndarray:
    """Stable (process-independent) shard of each string value."""
    h = pd.util.hash_array(np.asarray(values, dtype=object))
    return (h % np.uint64(num_shards)).astype(np.int64)


def _split(df: pd.DataFrame, shards: np.ndarray) -> Iterable[Tuple[int, pd.DataFrame]]:
    """``(shard, rows)`` pairs; one stable sort, not a scan per shard."""
    if df.empty:
        return
    order = np.argsort(shards, kind="stable")
    ordered = shards[order]
    bounds = np.flatnonzero(np.diff(ordered)) + 1
    for a, b in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(order)]])):
        yield int(ordered[a]), df.iloc[order[a:b]].reset_index(drop=True)


def _by_shard(df: pd.DataFrame, column: str, num_shards: int) -> Iterable[Tuple[int, pd.DataFrame]]:
    """Splits a frame into ``(shard, sub-frame)`` pairs on ``hash(column)``."""
    if df.empty:
        return
    yield from _split(df, shard_of(df[column].to_numpy(dtype=object), num_shards))


def _concat(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class _ReadValidate(beam.DoFn):
    """Reads one file/row group in batches and applies the row-level checks."""

    def __init__(self, num_shards: int, batch_rows: int):
        self._shards, self._rows = num_shards, batch_rows

    def process(self, unit: Tuple[str, str, int, Optional[int]], items: build.ItemTable):
        path, fmt, index, group = unit
        tf = io.TableFile(contract.EVENTS, path, fmt, index)
        groups = None if group is None else [group]
        for offset, df in io.iter_batches(tf, self._rows, groups):
            df[validate.ORDER] = io.order_key(index, offset, len(df))
            good, bad = validate.split_batch(df, items.index)
            log.info("read %s rows %d..%d: %d valid, %d quarantined",
                     os.path.basename(path), offset, offset + len(df), len(good), len(bad))
            good = good[_SHUFFLE_COLUMNS]          # drop what no later stage reads
            good["event"] = pd.Categorical(good["event"], categories=contract.EVENT_TYPES)
            yield beam.pvalue.TaggedOutput("stats", {"events_read": len(df)})
            if len(bad):
                yield beam.pvalue.TaggedOutput("quarantine", bad)
            yield from _by_shard(good, "event_id", self._shards)


class _Dedupe(beam.DoFn):
    """Resolves duplicate event ids in one event-id shard; routes onwards."""

    def __init__(self, num_shards: int):
        self._shards = num_shards

    def process(self, element: Tuple[int, List[pd.DataFrame]]):
        shard, frames = element
        kept, dups = validate.dedupe(_concat(frames))
        log.info("event-id shard %d: %d events kept, %d duplicates", shard, len(kept), len(dups))
        if len(dups):
            yield beam.pvalue.TaggedOutput("quarantine", dups)
        if kept.empty:
            return
        stats = collections.Counter({"events_used": len(kept)})
        for kind, n in kept["event"].value_counts().items():
            if n:
                stats[f"events_{kind}"] = int(n)
        yield beam.pvalue.TaggedOutput("stats", dict(stats))
        yield beam.pvalue.TaggedOutput("max_ts", int(kept["ts"].max()))
        kind = kept["event"]
        sel = kind.isin((contract.IMPRESSION, contract.CLICK)).to_numpy()
        user_shard = shard_of(kept["user_id"].to_numpy(dtype=object)[sel], self._shards)
        ic = kept.loc[sel, _ITEM_COLUMNS].assign(**{_USHARD: user_shard.astype(np.int32)})
        for s, part in _by_shard(ic, "item_id", self._shards):
            yield beam.pvalue.TaggedOutput("items", (s, part))
        user = kept.loc[kind.isin(_USER_EVENTS).to_numpy(), build.EVENT_COLUMNS]
        for s, part in _by_shard(user, "user_id", self._shards):
            yield (s, part)


def _item_history(element: Tuple[int, List[pd.DataFrame]], num_shards: int):
    """Item-shard stage: history counts per impression, keyed by user shard."""
    _, frames = element
    events = _concat(frames)
    if events.empty:
        return
    hist = item_history(events, passthrough=[_USHARD])
    for s, part in _split(hist, hist.pop(_USHARD).to_numpy()):
        yield s, part.drop_duplicates(JOIN_KEY).reset_index(drop=True)


class _Build(beam.DoFn):
    """User-shard stage: builds, splits and samples the examples."""

    def __init__(self, cfg: ExampleGenConfig):
        self._cfg = cfg

    def process(self, element, items: build.ItemTable, users: Dict[str, str], max_ts: int):
        shard, grouped = element
        events = _concat(grouped["events"])
        if events.empty:
            return
        hist = _concat(grouped["hist"])
        if hist.empty:
            hist = empty_history()
        built = build.build_examples(events, hist, items, users, self._cfg.label_window_s)
        is_eval, keep = build.split_and_keep(built.ts, built.label, built.impression_id,
                                             max_ts, self._cfg.build_config())
        stats = collections.Counter()
        for split, mask in ((TRAIN, keep & ~is_eval), (EVAL, keep & is_eval)):
            idx = np.flatnonzero(mask)
            stats[f"examples_{split}"] += len(idx)
            stats[f"positives_{split}"] += int(built.label[idx].sum())
            for a in range(0, len(idx), self._cfg.chunk_examples):
                chunk = idx[a:a + self._cfg.chunk_examples]
                yield beam.pvalue.TaggedOutput(split, tfrecord.frame(built.serialized[i] for i in chunk))
        stats["impressions"] = len(built.ts)
        stats["negatives_dropped"] = int((~keep).sum())
        log.info("user shard %d: %d events, %d impressions -> %d train, %d eval examples",
                 shard, len(events), len(built.ts), stats[f"examples_{TRAIN}"],
                 stats[f"examples_{EVAL}"])
        yield beam.pvalue.TaggedOutput("stats", dict(stats))


def _sum_stats(dicts: Iterable[Dict[str, int]]) -> Dict[str, int]:
    total: collections.Counter = collections.Counter()
    for d in dicts:
        total.update(d)
    return dict(total)


def _read_units(files: Sequence[io.TableFile]) -> List[Tuple[str, str, int, Optional[int]]]:
    units = []
    for tf in files:
        if tf.fmt == io.PARQUET:
            units += [(tf.path, tf.fmt, tf.index, g) for g in range(io.parquet_row_groups(tf))]
        else:
            units.append((tf.path, tf.fmt, tf.index, None))
    return units


def resolve_shards(cfg: ExampleGenConfig, event_files: Sequence[io.TableFile]) -> int:
    """``cfg.num_shards``, or for 0 one shard per ``events_per_shard`` events
    (estimated from parquet metadata / CSV size), so shards stay small as the
    log grows (sorting and hashing stay cache-friendly: linear scaling)."""
    if cfg.num_shards > 0:
        return int(cfg.num_shards)
    rows = sum(io.estimate_rows(tf) for tf in event_files)
    n = max(1, min(4096, -(-rows // max(1, cfg.events_per_shard))))
    log.info("auto shards: ~%d events -> %d shards", rows, n)
    return n


def build_pipeline(p: beam.Pipeline, input_base: str, output_dir: str, quarantine_dir: str,
                   config: Any = None) -> ExampleGenConfig:
    """Adds the example-generation graph to ``p`` (schema checked eagerly).

    Returns the effective config (``num_shards`` resolved) for `finalize`.
    """
    cfg = ExampleGenConfig.of(config)
    tables = io.check_log(input_base)
    n = resolve_shards(cfg, tables[contract.EVENTS])
    items = (p | "ItemsPath" >> beam.Create([input_base])
             | "ReadItems" >> beam.Map(lambda b: build.ItemTable(io.read_table(b, contract.ITEMS))))
    users = (p | "UsersPath" >> beam.Create([input_base])
             | "ReadUsers" >> beam.Map(lambda b: dict(zip(*io.read_table(b, contract.USERS)[
                 ["user_id", "region_id"]].to_numpy(dtype=object).T))))
    items_si = beam.pvalue.AsSingleton(items)
    read = (p | "Files" >> beam.Create(_read_units(tables[contract.EVENTS]))
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadValidate" >> beam.ParDo(_ReadValidate(n, cfg.batch_rows), items_si)
            .with_outputs("stats", "quarantine", main="valid"))
    deduped = (read.valid | "ByEventId" >> beam.GroupByKey()
               | "Dedupe" >> beam.ParDo(_Dedupe(n)).with_outputs(
                   "stats", "quarantine", "max_ts", "items", main="user_events"))
    max_ts = deduped.max_ts | "MaxTs" >> beam.CombineGlobally(lambda xs: max(xs, default=0))
    hist = (deduped["items"] | "ByItem" >> beam.GroupByKey()
            | "ItemHistory" >> beam.FlatMap(_item_history, n))
    built = ({"events": deduped.user_events, "hist": hist} | "ByUser" >> beam.CoGroupByKey()
             | "Build" >> beam.ParDo(_Build(cfg), items_si, beam.pvalue.AsSingleton(users),
                                     beam.pvalue.AsSingleton(max_ts))
             .with_outputs("stats", TRAIN, EVAL))
    for split in SPLITS:
        _ = built[split] | f"Write[{split}]" >> tfrecord.WriteFramedTFRecords(
            os.path.join(output_dir, f"Split-{split}", TFRECORD_PREFIX), ".gz", cfg.gzip_level)
    _ = ((read.quarantine, deduped.quarantine) | "AllBad" >> beam.Flatten()
         | "BadToList" >> beam.combiners.ToList()
         | "WriteQuarantine" >> beam.Map(accounting.write_quarantine, os.path.join(quarantine_dir, QUARANTINE_FILE)))
    stats = ((read.stats, deduped.stats, built.stats) | "AllStats" >> beam.Flatten()
             | "SumStats" >> beam.CombineGlobally(_sum_stats))
    _ = (stats | "AddMaxTs" >> beam.Map(lambda s, m: dict(s, max_ts=m), beam.pvalue.AsSingleton(max_ts))
         | "WriteStats" >> beam.Map(accounting.write_json,
                                  os.path.join(quarantine_dir, accounting.STATS_FILE)))
    return dataclasses.replace(cfg, num_shards=n)


def finalize(output_dir: str, quarantine_dir: str, config: Any = None) -> Dict[str, Any]:
    """Summary of a finished run (see `accounting.finalize`)."""
    return accounting.finalize(output_dir, quarantine_dir, ExampleGenConfig.of(config))


def default_options(beam_options: Union[None, PipelineOptions, Sequence[str]] = None) -> PipelineOptions:
    """DirectRunner in-memory options unless given."""
    if isinstance(beam_options, PipelineOptions):
        return beam_options
    args = list(beam_options) if beam_options else [
        "--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
    return PipelineOptions(args)


def run(input_base: str, output_dir: str, quarantine_dir: str, config: Any = None,
        beam_options: Union[None, PipelineOptions, Sequence[str]] = None) -> Dict[str, Any]:
    """Validates the log at ``input_base`` and writes examples; returns the summary."""
    with beam.Pipeline(options=default_options(beam_options)) as p:
        effective = build_pipeline(p, input_base, output_dir, quarantine_dir, config)
    return finalize(output_dir, quarantine_dir, effective)
