"""The Beam graph from an event log to the session recommender's training samples.

    events table (files) --read, parse--> Event --Sessionize(gap_s)--> Session
      --by user, in start order, with the purchase history--> samples (`feedrank.sessions.samples`)
      --by the session's start vs eval_start_ts--> GZIP TFRecords ``Split-train/``, ``Split-eval/``

plus ``summary.json`` in the output directory: exact counts (events read and used,
views without a logged dwell, sessions, purchase points, full, shortened and
next-page-only samples per split), the split bounds and the mean pages before an
add-to-cart.  Page types come from the log's catalogue (`feedrank.sessions.catalogue`).
Only ``view`` and ``purchase`` events are session events; such a row without an event
id, user, item or parsable ``ts`` is dropped and counted (``events_bad``).  Duplicate event ids are not removed.

    python -m feedrank.sessions.beam_samples --log data/shop --out runs/shop_samples --gap-s 1800 --k 5
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
from typing import Any, Dict, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from feedrank.events import contract, io, validate
from feedrank.sessions import catalogue
from feedrank.sessions import features as F
from feedrank.sessions import samples as S
from feedrank.sessions.sessionize import DEFAULT_GAP_S, SESSION_EVENTS, Event, Sessionize, check_gap

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
TFRECORD_PREFIX = "data_tfrecord"
_COUNT = "count"
COUNTERS = ("events_read", "events_used", "events_other_type", "events_bad", "views_without_dwell", "sessions",
            *[f"{name}_{split}" for split in S.SPLITS
              for name in ("sessions", "sessions_with_purchase", "purchase_points", "samples",
                           "full_samples", "shortened_samples", "next_page_samples", "pages_before_purchase_sum")])


class NoSamplesError(ValueError):
    """The log gives no training sample (no add-to-cart after a page view in the train split)."""


@dataclasses.dataclass(frozen=True)
class SampleSettings:
    """How sessions become samples (docs/sessions.md)."""

    gap_s: int = DEFAULT_GAP_S          # a pause longer than this ends a session
    k: int = F.DEFAULT_K                # recent page states per sample
    eval_days: int = 1                  # the log's last UTC days are the eval split
    eval_start_ts: int = 0              # > 0: this split bound instead of eval_days
    val_days: int = 0                   # the days before eval are the val split (0: none)
    next_pages: bool = True             # every page transition is a sample (the next page its target)
    max_purchase_history: int = F.DEFAULT_MAX_PURCHASE_HISTORY
    shortened: bool = True              # also the shortened-path samples
    num_shards: int = 1                 # files per split (0: the runner decides)

    def __post_init__(self) -> None:
        check_gap(self.gap_s)
        if self.k < 1 or self.eval_days < 1 or min(self.max_purchase_history, self.num_shards, self.val_days) < 0:
            raise ValueError(f"k and eval_days must be >= 1, max_purchase_history, num_shards and val_days >= 0: "
                             f"{self}")
        if self.eval_start_ts < 0:
            raise ValueError(f"eval_start_ts must be >= 0 (0: from eval_days), got {self.eval_start_ts}")


class _Read(beam.DoFn):
    """One file of the events table -> session events (+ counts)."""

    def process(self, tf: io.TableFile):
        counts = dict.fromkeys(("events_read", "events_used", "events_other_type", "events_bad",
                                "views_without_dwell"), 0)
        for _, df in io.iter_batches(tf):
            counts["events_read"] += len(df)
            ts, ok = validate.parse_ts(df["ts"])
            kind = df["event"].to_numpy()
            session = df["event"].isin(SESSION_EVENTS).to_numpy()
            good = session & ok & (df["event_id"] != "").to_numpy() & (df["user_id"] != "").to_numpy() \
                & (df["item_id"] != "").to_numpy()
            counts["events_other_type"] += int((~session).sum())
            counts["events_bad"] += int((session & ~good).sum())
            counts["events_used"] += int(good.sum())
            no_dwell = ~np.isfinite(pd.to_numeric(df["dwell_s"], errors="coerce").to_numpy(np.float64))
            counts["views_without_dwell"] += int((good & (kind == contract.VIEW) & no_dwell).sum())
            cols = [df[c].to_numpy() for c in ("event_id", "user_id", "item_id", "dwell_s", "session_id")]
            for i in good.nonzero()[0]:
                dwell = float(cols[3][i])
                yield Event(str(cols[0][i]), str(cols[1][i]), str(cols[2][i]), str(kind[i]), int(ts[i]),
                            dwell if math.isfinite(dwell) else float("nan"), str(cols[4][i]))
        for name, n in counts.items():
            yield beam.pvalue.TaggedOutput(_COUNT, (name, n))


class _Samples(beam.DoFn):
    """One user's sessions -> serialised samples tagged by split (+ counts)."""

    def __init__(self, settings: SampleSettings, page_types: Dict[str, str]):
        self._s, self._types = settings, page_types

    def process(self, element, eval_start_ts: int):
        _, sessions = element
        s = self._s
        val_start = eval_start_ts - s.val_days * S.DAY if s.val_days else None
        counts: Dict[str, int] = {}
        for split, session, built in S.user_samples(sessions, eval_start_ts, s.k, s.max_purchase_history,
                                                   s.shortened, s.next_pages, val_start, self._types):
            full = sum(x[F.FULL_PATH] for x in built)
            carts = sum(bool(x[F.LABEL_ITEMS]) for x in built)
            for name, n in (("sessions", 1), (f"sessions_{split}", 1), (f"samples_{split}", len(built)),
                            (f"sessions_with_purchase_{split}", int(bool(S.purchase_points(session)))),
                            (f"purchase_points_{split}", full), (f"full_samples_{split}", full),
                            (f"shortened_samples_{split}", carts - full),
                            (f"next_page_samples_{split}", len(built) - carts),
                            (f"pages_before_purchase_sum_{split}",
                             sum(x[F.N_PAGES_BEFORE_PURCHASE] for x in built if x[F.FULL_PATH]))):
                counts[name] = counts.get(name, 0) + n
            for x in built:
                yield beam.pvalue.TaggedOutput(split, F.to_example(x))
        for name, n in counts.items():
            yield beam.pvalue.TaggedOutput(_COUNT, (name, n))


def _max_ts(values: Iterable[int]) -> int:
    return max(values, default=-1)


def _write_summary(counts: Dict[str, int], output_dir: str, last_ts: int, eval_start_ts: int,
                   settings: SampleSettings) -> None:
    summary: Dict[str, Any] = {name: int(counts.get(name, 0)) for name in COUNTERS}
    for split in S.SPLITS:
        points = summary[f"purchase_points_{split}"]
        summary[f"mean_pages_before_purchase_{split}"] = (
            round(summary[f"pages_before_purchase_sum_{split}"] / points, 4) if points else None)
    summary.update(log_end_ts=int(last_ts), eval_start_ts=int(eval_start_ts),
                   val_start_ts=int(eval_start_ts - settings.val_days * S.DAY) if settings.val_days else None,
                   settings=dataclasses.asdict(settings))
    with FileSystems.create(os.path.join(output_dir, SUMMARY_FILE)) as f:
        f.write(json.dumps(summary, indent=2, sort_keys=True).encode())


def build_pipeline(p: beam.Pipeline, input_base: str, output_dir: str, settings: SampleSettings) -> None:
    """Adds the graph to ``p``; checks the events table now (a clear `io.ContractError`)."""
    files = io.check_table(input_base, contract.EVENTS)
    page_types = catalogue.load(input_base).types
    read = p | "EventFiles" >> beam.Create(files) | "Read" >> beam.ParDo(_Read()).with_outputs(_COUNT, main="ev")
    last_ts = read.ev | "Ts" >> beam.Map(lambda e: e.ts) | "LastTs" >> beam.CombineGlobally(_max_ts)
    bound = last_ts | "EvalStart" >> beam.Map(
        lambda t: settings.eval_start_ts or S.eval_start(max(t, 0), settings.eval_days))
    built = (read.ev | "Sessionize" >> Sessionize(settings.gap_s)
             | "ByUser" >> beam.Map(lambda s: (s.user_id, s)) | "UserSessions" >> beam.GroupByKey()
             | "Samples" >> beam.ParDo(_Samples(settings, page_types), beam.pvalue.AsSingleton(bound)).with_outputs(
                 _COUNT, *S.SPLITS))
    for split in S.SPLITS:
        _ = built[split] | f"Write[{split}]" >> beam.io.WriteToTFRecord(
            os.path.join(output_dir, f"Split-{split}", TFRECORD_PREFIX), file_name_suffix=".gz",
            num_shards=settings.num_shards)
    _ = ((read[_COUNT], built[_COUNT]) | "Counts" >> beam.Flatten() | "Sum" >> beam.CombinePerKey(sum)
         | "ToDict" >> beam.combiners.ToDict()
         | "Summary" >> beam.Map(_write_summary, output_dir, beam.pvalue.AsSingleton(last_ts),
                                 beam.pvalue.AsSingleton(bound), settings))


def finalize(output_dir: str) -> Dict[str, Any]:
    """Reads the run's summary; `NoSamplesError` when the train split is empty."""
    with open(os.path.join(output_dir, SUMMARY_FILE)) as f:
        summary = json.load(f)
    log.info("session samples: %s", {k: v for k, v in summary.items() if k != "settings"})
    if summary["samples_train"] == 0:
        raise NoSamplesError(
            f"no session sample in the train split: {summary['events_used']} session events "
            f"(view/purchase) of {summary['events_read']} read, {summary['sessions']} sessions, "
            f"{summary['purchase_points_eval']} add-to-cart points in eval")
    return summary


def run(input_base: str, output_dir: str, settings: Optional[SampleSettings] = None,
        beam_args: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Runs the graph on the DirectRunner (or ``beam_args``); returns the summary."""
    settings = settings or SampleSettings()
    opts = PipelineOptions(list(beam_args) if beam_args is not None else
                           ["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    with beam.Pipeline(options=opts) as p:
        build_pipeline(p, input_base, output_dir, settings)
    return finalize(output_dir)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: writes the samples of ``--log`` into ``--out`` and prints the summary."""
    d = SampleSettings()
    ap = argparse.ArgumentParser(prog="python -m feedrank.sessions.beam_samples", description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", required=True, help="event-log directory")
    ap.add_argument("--out", required=True, help="output directory (Split-train/, Split-eval/, summary.json)")
    ap.add_argument("--gap-s", type=int, default=d.gap_s, help="a pause longer than this ends a session")
    ap.add_argument("--k", type=int, default=d.k, help="recent page states per sample")
    ap.add_argument("--eval-days", type=int, default=d.eval_days, help="the log's last UTC days are eval")
    ap.add_argument("--eval-start-ts", type=int, default=d.eval_start_ts, help="> 0: this split bound instead")
    ap.add_argument("--val-days", type=int, default=d.val_days, help="the days before eval are the val split")
    ap.add_argument("--no-shortened", action="store_true", help="no label items on the shortened paths")
    ap.add_argument("--no-next-pages", action="store_true", help="no next-page targets (carts only)")
    args = ap.parse_args(argv)
    try:
        settings = SampleSettings(gap_s=args.gap_s, k=args.k, eval_days=args.eval_days,
                                  eval_start_ts=args.eval_start_ts, shortened=not args.no_shortened,
                                  val_days=args.val_days, next_pages=not args.no_next_pages)
        summary = run(args.log, args.out, settings)
    except (ValueError, io.ContractError) as e:   # NoSamples, Contract and Catalogue errors are ValueErrors
        ap.error(str(e))
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
