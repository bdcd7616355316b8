"""The Beam graph: validate the event log and write train/valid/eval tf.Examples.

Elements are pandas frames (batches), never single events:

  files/row groups --read+validate (vectorised, per batch)--> valid frames
    (+ an hourly histogram of impression times --> the log's bounds, `splits`)
    --GroupByKey(hash(event_id) shard)--> future check + dedupe --+--> item shards (imps+clicks)
                                                                  +--> user shards (all events)
  item shards --item_history--> counts per (item_id, ts) --> user shards
  users table --read in batches, GroupByKey(hash(user_id) shard)--> user shards (`user_rows`)
  user shards (events + counts + users' rows, CoGroupByKey) --build_examples, splits.assign-->
    train / valid / eval --> GZIP TFRecords ``Split-<name>/data_tfrecord-*.gz``

The four shuffles go through files by default (``shuffle: files``,
`feedrank.examples.spill`, under ``<spill_dir or quarantine_dir>/_spill-<run>/``):
Beam groups only their paths, so a runner that keeps grouped data in memory
holds one shard at a time, not the log or the users table (``shuffle: beam`` hands Beam the
frames).  The items table stays a side input of the read and build stages.

Rows keep every column they came with until the duplicate check, so a
quarantined duplicate is written whole; later stages get only what they read.
Bad rows (one reason each) go to ``<quarantine_dir>/quarantine.parquet``;
accounting goes to ``summary.json`` (both in the quarantine and examples dirs).
`run` is the plain-Python entry; the TFX executor calls `build` + `finalize`.

The run's feature contract (`feedrank.features.FeatureSpec`) crosses into the
Beam workers as its JSON: each stage that needs it rebuilds it once (a DoFn
in ``setup``) and passes it down.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
from typing import Any, Dict, Sequence, Tuple, Union

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.options.pipeline_options import PipelineOptions

from feedrank import features as F
from feedrank.events import contract, io, validate
from feedrank.examples import accounting, build, declared, snapshots, spill, splits, tfrecord, user_rows
from feedrank.examples.accounting import (  # noqa: F401 (API)
    QUARANTINE_FILE,
    SUMMARY_FILE,
    LogTooShortError,
    NoImpressionsError,
    NoPositiveLabelsError,
    TooManyBadRowsError,
)
from feedrank.examples.history import JOIN_KEY, empty_history, item_history
from feedrank.examples.settings import EVENTS_PER_SHARD, ExampleSettings
from feedrank.examples.sharding import ReadUnit, by_shard, read_units, resolve_shards, shard_of, split

log = logging.getLogger(__name__)

SPLITS = accounting.SPLITS
TRAIN, VALID, EVAL = SPLITS
TFRECORD_PREFIX = "data_tfrecord"
_ITEM_COLUMNS = ["item_id", "event", "ts"]
_USHARD = "_user_shard"
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
    shuffle: str = spill.FILES       # files: frames spilled to files, Beam moves paths; beam: Beam moves frames
    spill_dir: str = ""              # where shuffle: files writes them ("": the quarantine dir), see `spill`

    @classmethod
    def of(cls, config: Any) -> "ExampleGenConfig":
        """From None, a dict, this class or any object with these attributes."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        get = config.get if isinstance(config, dict) else (lambda k, d: getattr(config, k, d))
        return cls(**{f.name: get(f.name, f.default) for f in dataclasses.fields(cls)})


class _ReadValidate(beam.DoFn):
    """Reads one file/row group in batches and applies the row-level checks."""

    def __init__(self, num_shards: int, batch_rows: int, min_ts: int, shuffle: Tuple[str, str]):
        self._shards, self._rows, self._min_ts = num_shards, batch_rows, min_ts
        self._spill = spill.of(*shuffle)

    def process(self, unit: ReadUnit, items: build.ItemTable):
        path, fmt, index, group = unit
        tf = io.TableFile(contract.EVENTS, path, fmt, index)
        groups = None if group is None else [group]
        log.debug("read %s row group %s: starting", os.path.basename(path), group)
        for offset, df in io.iter_batches(tf, self._rows, groups):
            df[validate.ORDER] = io.order_key(index, offset, len(df))
            good, bad = validate.split_batch(df, items.index, min_ts=self._min_ts)
            log.info("read %s rows %d..%d: %d valid, %d quarantined",
                     os.path.basename(path), offset, offset + len(df), len(good), len(bad))
            good["event"] = pd.Categorical(good["event"], categories=contract.EVENT_TYPES)
            yield beam.pvalue.TaggedOutput("stats", {"events_read": len(df)})
            if len(bad):
                yield beam.pvalue.TaggedOutput("quarantine", bad)
            hist = splits.histogram(good["ts"].to_numpy()[(good["event"] == contract.IMPRESSION).to_numpy()],
                                    self._min_ts)
            if hist:
                yield beam.pvalue.TaggedOutput("hist", hist)
            source = f"f{index}_g{-1 if group is None else group}_o{offset}"   # every column, until dedupe
            yield from self._spill.write_shards("events", source, by_shard(good, "event_id", self._shards))


class _Dedupe(beam.DoFn):
    """Quarantines events after the log's plausible end and duplicate event ids
    in one event-id shard; routes the rest onwards, slimmed to what is read."""

    def __init__(self, num_shards: int, shuffle: Tuple[str, str]):
        self._shards = num_shards
        self._spill = spill.of(*shuffle)

    def process(self, element: tuple, bounds: Dict[str, Any]):
        shard, paths = element
        log.debug("event-id shard %d: starting", shard)
        events = self._spill.read(paths)
        if bounds and len(events):
            future = events["ts"].to_numpy() > int(bounds["future_cut_ts"])
            if future.any():
                yield beam.pvalue.TaggedOutput("quarantine", validate.quarantine_frame(
                    events.loc[future], np.full(int(future.sum()), contract.TS_IN_FUTURE, dtype=object)))
                events = events.loc[~future].reset_index(drop=True)
        kept, dups = validate.dedupe(events)
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
        source = f"e{shard}"
        for element in self._spill.write_shards("items", source, by_shard(ic, "item_id", self._shards)):
            yield beam.pvalue.TaggedOutput("items", element)
        user = kept.loc[kind.isin(_USER_EVENTS).to_numpy(), build.EVENT_COLUMNS]
        yield from self._spill.write_shards("users", source, by_shard(user, "user_id", self._shards))


def _item_history(element: tuple, shuffle: Tuple[str, str]):
    """Item-shard stage: history counts per impression, keyed by user shard."""
    shard, paths = element
    log.debug("item shard %d: starting", shard)
    store = spill.of(*shuffle)
    events = store.read(paths)
    if events.empty:
        return
    hist = item_history(events, passthrough=[_USHARD])
    log.info("item shard %d: %d events -> %d history rows", shard, len(events), len(hist))
    parts = ((s, part.drop_duplicates(JOIN_KEY).reset_index(drop=True))
             for s, part in split(hist, hist.pop(_USHARD).to_numpy()))
    yield from store.write_shards("hist", f"i{shard}", parts)


class _Build(beam.DoFn):
    """User-shard stage: builds, splits and samples the examples with the
    feature contract of ``spec_json`` (`FeatureSpec.to_json`)."""

    def __init__(self, cfg: ExampleGenConfig, spec_json: str, shuffle: Tuple[str, str]):
        self._cfg = cfg
        self._spec_json = spec_json
        self._spec: F.FeatureSpec | None = None
        self._spill = spill.of(*shuffle)

    def setup(self):
        self._spec = F.FeatureSpec.from_json(self._spec_json)

    def process(self, element, items: build.ItemTable, bounds: Dict[str, Any]):
        shard, grouped = element
        log.debug("user shard %d: starting", shard)
        events = self._spill.read(grouped["events"])
        if events.empty:
            return
        hist = self._spill.read(grouped["hist"])
        users = user_rows.table_of(self._spill.read(grouped["users"]), self._spec)
        if hist.empty:
            hist = empty_history()
        cfg = self._cfg
        built = build.build_examples(events, hist, items, users, cfg.label_window_s, cfg.feature_delay_s,
                                     spec=self._spec)
        split_of = splits.assign(built.ts, built.user_id, bounds, cfg)
        keep = build.sample_keep(split_of, built.label, built.impression_id,
                                 cfg.negative_sampling_rate, cfg.seed)
        stats = collections.Counter()
        for code, name in splits.SPLIT_NAMES.items():
            idx = np.flatnonzero(keep & (split_of == code))
            stats[f"examples_{name}"] += len(idx)
            stats[f"positives_{name}"] += int(built.label[idx].sum())
            for a in range(0, len(idx), cfg.chunk_examples):
                chunk = idx[a:a + cfg.chunk_examples]
                yield beam.pvalue.TaggedOutput(name, tfrecord.frame(built.serialized[i] for i in chunk))
        stats["impressions"] = len(built.ts)
        stats["impressions_warmup"] = int((split_of == splits.WARMUP).sum())
        stats["censored_eval"] = int((split_of == splits.CENSORED).sum())
        stats["negatives_dropped"] = int(((split_of == splits.TRAIN) & ~keep).sum())
        log.info("user shard %d: %d events, %d impressions -> %d train, %d valid, %d eval examples "
                 "(%d warm-up impressions, %d eval impressions censored)", shard, len(events),
                 len(built.ts), stats[f"examples_{TRAIN}"], stats[f"examples_{VALID}"],
                 stats[f"examples_{EVAL}"], stats["impressions_warmup"], stats["censored_eval"])
        yield beam.pvalue.TaggedOutput("stats", dict(stats))


def build_pipeline(p: beam.Pipeline, input_base: str, output_dir: str, quarantine_dir: str,
                   config: Any = None, *, spec: F.FeatureSpec) -> ExampleGenConfig:
    """Adds the example-generation graph to ``p`` (schema and declared columns checked eagerly).

    ``spec``: the run's feature contract (its declared item/user columns are read from
    the tables and written into the examples).  Returns the effective config
    (``num_shards`` resolved) for `finalize`.
    """
    cfg = ExampleGenConfig.of(config)
    spec_json = spec.to_json()
    tables = io.check_log(input_base)
    declared.check_files(spec, {t: tables[t] for t in (contract.ITEMS, contract.USERS)})
    n = resolve_shards(cfg, tables[contract.EVENTS])
    shuffle = (cfg.shuffle, spill.run_dir(cfg.spill_dir or quarantine_dir))
    spill.of(*shuffle)   # a known mode, checked before the run
    items = p | "ItemsPath" >> beam.Create([input_base]) | "ReadItems" >> beam.Map(snapshots.read_item_table, spec_json)
    users = (p | "UserFiles" >> beam.Create(read_units(tables[contract.USERS]))
             | "ShardUsers" >> beam.ParDo(user_rows.ShardUsers(n, spec_json, shuffle)))
    items_si = beam.pvalue.AsSingleton(items)
    read = (p | "Files" >> beam.Create(read_units(tables[contract.EVENTS]))
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadValidate" >> beam.ParDo(_ReadValidate(n, cfg.batch_rows, cfg.min_ts, shuffle), items_si)
            .with_outputs("stats", "quarantine", "hist", main="valid"))
    bounds = (read.hist | "ImpressionTimes" >> beam.CombineGlobally(splits.merge)
              | "Bounds" >> beam.Map(splits.bounds_of, cfg))
    bounds_si = beam.pvalue.AsSingleton(bounds)
    deduped = (read.valid | "ByEventId" >> beam.GroupByKey()
               | "Dedupe" >> beam.ParDo(_Dedupe(n, shuffle), bounds_si).with_outputs(
                   "stats", "quarantine", "max_ts", "items", main="user_events"))
    max_ts = deduped.max_ts | "MaxTs" >> beam.CombineGlobally(lambda xs: max(xs, default=0))
    hist = (deduped["items"] | "ByItem" >> beam.GroupByKey()
            | "ItemHistory" >> beam.FlatMap(_item_history, shuffle))
    built = ({"events": deduped.user_events, "hist": hist, "users": users} | "ByUser" >> beam.CoGroupByKey()
             | "Build" >> beam.ParDo(_Build(cfg, spec_json, shuffle), items_si, bounds_si)
             .with_outputs("stats", *SPLITS))
    for name in SPLITS:
        _ = built[name] | f"Write[{name}]" >> tfrecord.WriteFramedTFRecords(
            os.path.join(output_dir, f"Split-{name}", TFRECORD_PREFIX), ".gz", cfg.gzip_level)
    _ = ((read.quarantine, deduped.quarantine) | "AllBad" >> beam.Flatten()
         | "BadToList" >> beam.combiners.ToList()
         | "WriteQuarantine" >> beam.Map(accounting.write_quarantine, os.path.join(quarantine_dir, QUARANTINE_FILE)))
    stats = ((read.stats, deduped.stats, built.stats) | "AllStats" >> beam.Flatten()
             | "SumStats" >> beam.CombineGlobally(accounting.sum_stats))
    _ = (stats | "AddBounds" >> beam.Map(lambda s, m, b: dict(s, max_ts=m, bounds=b),
                                         beam.pvalue.AsSingleton(max_ts), bounds_si)
         | "WriteStats" >> beam.Map(accounting.write_json,
                                  os.path.join(quarantine_dir, accounting.STATS_FILE)))
    # The statistics are complete once every user shard is built: no stage reads the spill after.
    _ = stats | "RemoveSpill" >> beam.Map(lambda _, how: spill.of(*how).remove(), shuffle)
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
        beam_options: Union[None, PipelineOptions, Sequence[str]] = None, *,
        spec: F.FeatureSpec) -> Dict[str, Any]:
    """Validates the log at ``input_base`` and writes the examples of the feature
    contract ``spec``; returns the summary."""
    with beam.Pipeline(options=default_options(beam_options)) as p:
        effective = build_pipeline(p, input_base, output_dir, quarantine_dir, config, spec=spec)
    return finalize(output_dir, quarantine_dir, effective)
