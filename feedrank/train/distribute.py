"""Multi-worker training: the strategy from ``TF_CONFIG``, the input's shards, who writes.

**Strategy** (`distribution_strategy`): `tf.distribute.MultiWorkerMirroredStrategy`
when ``TF_CONFIG`` names a cluster (checked by `cluster_from_env`: a malformed one is a
`ConfigError` naming it), `MirroredStrategy` on a multi-GPU machine, else the default
strategy.  It is made once per process, before any TensorFlow op runs (collective ops
are configured at program start), so the run_fns ask for it first.

**Batches**: ``batch_size`` is the global batch.  Each worker builds its shard's pipeline
in batches of ``batch_size`` (`sharded_dataset`) and Keras hands it to the strategy,
which cuts each batch into one piece per replica in the cluster (tf.data's legacy
rebatch: the pipeline parses after batching, so its batch size is not static); at each
step every replica takes the next piece of its own worker's batch.  A step thus takes
``batch_size / n`` examples on each of the ``n`` replicas, each replica's mean loss is
scaled by ``1 / n`` and the gradients are summed: one step over ``batch_size``
examples.  A worker's last, partial batch of an epoch is cut the same way, so an epoch
takes (workers) x ceil(shard / batch_size) steps.  (The session Trainer's batch of
samples becomes one row per label item before the cut.)  tf.data's auto-shard rewrite
is off: the pipeline is sharded where it is built.

**Shards** (`choose_shard`): tf.data's two auto-shard policies, chosen here explicitly:

* ``file`` when the split has at least one file per worker: worker ``i`` of ``n`` reads
  files ``i, i+n, ...`` of the sorted list.  Every record is read and decompressed once
  in the whole cluster (GZIP decompression is the input's slowest part), and each
  worker caches only its shard.  A shard is as large as its files: ExampleGen's
  hash-partitioned shards are about even; when they are not, the worker that runs out
  first contributes empty batches until every worker has (MultiWorkerMirrored's
  partial-batch handling keeps the collectives in step), so uneven files cost time,
  never correctness.
* ``data`` otherwise (fewer files than workers, e.g. the one file per split Beam's
  DirectRunner writes): every worker reads, caches and shuffles the whole split with
  the same seed and keeps records ``i, i+n, ...`` of the shuffled stream.  The pieces
  the ``n`` workers take at a step are then together the one-worker run's batch of that
  step, in the one-worker order: the training is the one-worker training, except that
  each epoch's last, partial batch is taken in ``n`` smaller steps (and up to
  floating-point summation order).  The price: every worker reads the whole split.

**Metrics and early stopping**: Keras metrics sum their variables over all replicas
before ``result()``, so every worker logs the same loss and AUC and ``EarlyStopping``
stops every worker at the same epoch, restoring the same weights.  Batch-statistics
layers (Dice's batch normalization) normalise over each replica's piece, not the batch.

**Outputs** (`output_dir`): every worker runs the same steps after training, export
included (saving may run collective ops, so every worker saves, as TensorFlow's
multi-worker guide prescribes), but only the chief writes to the artifact's location:
another worker writes to a temporary directory that is removed afterwards.

**Records** (`ShardTally`): each worker writes ``workers/<type>-<index>.json`` into the
real run directory: its task, the shard policy and files, and per epoch the wall and
CPU seconds of its training steps, the number of train records it read and their
fingerprint, the sum of each serialized record's
31-bit farmhash (``tf.strings.to_hash_bucket_fast``).  The sum ignores order, so the
workers' shards are disjoint and cover the split exactly when their counts add up to
the split's and their fingerprints to the split's fingerprint (`fingerprint`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras as keras

from feedrank.typed import ConfigError

log = logging.getLogger(__name__)

TF_CONFIG = "TF_CONFIG"
JOBS = ("chief", "worker")            # the jobs MultiWorkerMirroredStrategy trains with
FINGERPRINT_BUCKETS = 2 ** 31 - 1     # per-record hash range: a sum over 2**32 records fits int64
RECORDS_DIR = "workers"               # <run dir>/workers/<type>-<index>.json
POLICIES = ("off", "file", "data")
_STRATEGY: Optional[tf.distribute.Strategy] = None


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's place in the ``TF_CONFIG`` cluster."""
    task_type: str
    task_index: int
    num_workers: int          # chief + workers: the processes that train
    is_chief: bool            # the chief task, or worker 0 without one (TensorFlow's rule)
    worker_id: int = 0        # 0 .. num_workers-1: the chief first, then the workers in order


def cluster_from_env(environ: Optional[Mapping[str, str]] = None) -> Optional[Cluster]:
    """The cluster ``TF_CONFIG`` names (None when unset or empty); a malformed one is a
    `ConfigError` naming ``TF_CONFIG`` and what is wrong."""
    text = (os.environ if environ is None else environ).get(TF_CONFIG, "")
    if not text.strip():
        return None
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{TF_CONFIG} is not valid JSON ({e.msg} at character {e.pos})") from None
    cluster = cfg.get("cluster") if isinstance(cfg, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise ConfigError(f"{TF_CONFIG} needs a 'cluster' mapping of job name to a list of 'host:port', "
                          f"got {text[:200]!r}")
    for job, addresses in cluster.items():
        if job not in JOBS:
            raise ConfigError(f"{TF_CONFIG} cluster job {job!r} is not one of {list(JOBS)} "
                              "(MultiWorkerMirroredStrategy trains with chief and worker tasks)")
        if (not isinstance(addresses, list) or not addresses
                or not all(isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses)):
            raise ConfigError(f"{TF_CONFIG} cluster.{job} must be a non-empty list of 'host:port', got {addresses!r}")
    if len(cluster.get("chief", [])) > 1:
        raise ConfigError(f"{TF_CONFIG} cluster.chief must name one task, got {cluster['chief']!r}")
    task = cfg.get("task")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise ConfigError(f"{TF_CONFIG} task must be {{'type': one of {sorted(cluster)}, 'index': n}}, got {task!r}")
    index, size = task.get("index"), len(cluster[task["type"]])
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < size:
        raise ConfigError(f"{TF_CONFIG} task.index must be an integer in [0, {size}) for the "
                          f"{size} {task['type']} task(s), got {index!r}")
    has_chief = "chief" in cluster
    chief = ("chief", 0) if has_chief else ("worker", 0)
    worker_id = index + 1 if has_chief and task["type"] == "worker" else index
    return Cluster(task["type"], index, sum(len(v) for v in cluster.values()),
                   (task["type"], index) == chief, worker_id)


def distribution_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirrored when TF_CONFIG names a cluster (the Kubeflow GPU pool),
    Mirrored on a multi-GPU machine, else the default (one device) strategy.

    The multi-worker and mirrored strategies are made once per process (a second
    MultiWorkerMirroredStrategy cannot be made) and must be made before any TensorFlow op."""
    global _STRATEGY
    if _STRATEGY is not None:
        return _STRATEGY
    cluster = cluster_from_env()
    if cluster is not None:
        try:
            _STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as e:
            raise RuntimeError(f"MultiWorkerMirroredStrategy must be made before any TensorFlow op runs "
                               f"(call distribution_strategy() first in the process): {e}") from None
        log.info("%s %d of a %d-worker cluster%s", cluster.task_type, cluster.task_index,
                 cluster.num_workers, " (chief)" if cluster.is_chief else "")
    elif len(tf.config.list_logical_devices("GPU")) > 1:
        _STRATEGY = tf.distribute.MirroredStrategy()
    else:
        return tf.distribute.get_strategy()
    return _STRATEGY


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True for a MultiWorkerMirroredStrategy (one worker or several)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


@dataclasses.dataclass(frozen=True)
class Shard:
    """Worker ``index`` of ``count``'s part of a split; ``policy`` is one of `POLICIES`."""
    policy: str = "off"
    index: int = 0
    count: int = 1

    def files(self, files: Sequence[str]) -> List[str]:
        """The files this worker reads: its own under ``file``, every one otherwise."""
        return list(files[self.index::self.count]) if self.policy == "file" else list(files)

    def records(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        """``ds`` (a record stream every worker sees in the same order) cut to this worker's
        records under ``data``; unchanged otherwise."""
        return ds.shard(self.count, self.index) if self.policy == "data" else ds


def choose_shard(num_files: int, num_workers: int, index: int) -> Shard:
    """``file`` with at least one file per worker, else ``data`` (module docstring); ``off``
    for one worker."""
    if num_workers <= 1:
        return Shard()
    return Shard("file" if num_files >= num_workers else "data", index, num_workers)


def sharded_dataset(strategy: tf.distribute.Strategy, files: Sequence[str],
                    make: Callable[[Shard], tf.data.Dataset]) -> tf.data.Dataset:
    """``make(shard)`` for this worker's shard of ``files`` (`choose_shard`), with tf.data's
    auto-shard off under a multi-worker strategy (the pipeline is sharded where it is built)."""
    cluster = cluster_from_env() if is_multi_worker(strategy) else None
    if cluster is None:
        return make(Shard())
    shard = choose_shard(len(files), cluster.num_workers, cluster.worker_id)
    log.info("input shard %s: worker %d of %d reads %d of %d file(s)", shard.policy, cluster.worker_id,
             cluster.num_workers, len(shard.files(files)), len(files))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return make(shard).with_options(options)


@contextlib.contextmanager
def output_dir(path: str, cluster: Optional[Cluster]) -> Iterator[str]:
    """``path`` on the chief (or without a cluster); on another worker a temporary
    directory, removed on exit, so that worker leaves nothing at ``path``."""
    if cluster is None or cluster.is_chief:
        yield path
        return
    temp = tempfile.mkdtemp(prefix=f"feedrank-{cluster.task_type}-{cluster.task_index}-")
    try:
        yield os.path.join(temp, os.path.basename(path.rstrip("/")) or "output")
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def global_mean(per_example: tf.Tensor) -> tf.Tensor:
    """This replica's share of the mean over every replica's examples (its sum over the
    global count; 0 for no example anywhere): summing the replicas' gradients of it, as the
    optimizer does, gives the gradient of the global batch's mean."""
    count = tf.cast(tf.size(per_example), per_example.dtype)
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return tf.math.divide_no_nan(tf.reduce_sum(per_example), count)


def fingerprint(records: Sequence[bytes]) -> int:
    """The order-free fingerprint of serialized records (`ShardTally`'s): the sum of their hashes."""
    if not records:
        return 0
    return int(tf.reduce_sum(tf.strings.to_hash_bucket_fast(tf.constant(list(records)), FINGERPRINT_BUCKETS)))


class ShardTally(keras.callbacks.Callback):
    """Counts and fingerprints the serialized train records this worker's pipeline reads
    (`tap`), per epoch, and writes the worker's record (`write`).

    Its variables are plain local ones: make it outside any strategy scope."""

    def __init__(self, cluster: Optional[Cluster] = None):
        super().__init__()
        self.cluster = cluster
        self._count = tf.Variable(0, dtype=tf.int64, trainable=False, name="tally_records")
        self._sum = tf.Variable(0, dtype=tf.int64, trainable=False, name="tally_fingerprint")
        self._last = (0, 0)
        self._clock: Dict[str, float] = {}
        self.info: Dict[str, Any] = {}
        self.epochs: List[Dict[str, Any]] = []

    def describe(self, strategy: tf.distribute.Strategy, shard: Shard, files: Sequence[str],
                 global_batch: int) -> None:
        """Notes the strategy, the shard and the files this worker reads in its record."""
        replicas = strategy.num_replicas_in_sync
        self.info.update(strategy=type(strategy).__name__, replicas=replicas, shard_policy=shard.policy,
                         global_batch=global_batch, per_replica_batch=round(global_batch / replicas, 3),
                         train_files=shard.files(files))

    def tap(self, serialized: tf.Tensor) -> tf.Tensor:
        """Adds a batch of serialized records to the tally; returns it (in a tf.data map)."""
        hashes = tf.strings.to_hash_bucket_fast(serialized, FINGERPRINT_BUCKETS)
        with tf.control_dependencies([self._count.assign_add(tf.size(serialized, out_type=tf.int64)),
                                      self._sum.assign_add(tf.reduce_sum(hashes))]):
            return tf.identity(serialized)

    def totals(self) -> Tuple[int, int]:
        """(records, fingerprint) of everything tapped so far."""
        return int(self._count.numpy()), int(self._sum.numpy())

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        self._clock = {"wall": time.perf_counter(), "cpu": time.process_time()}

    def on_test_begin(self, logs: Optional[dict] = None) -> None:   # the epoch's validation starts
        if self._clock and "train_wall" not in self._clock:
            self._clock.update(train_wall=time.perf_counter(), train_cpu=time.process_time())

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        # cumulative values, differenced: the next epoch's iterator may start reading before
        # its on_epoch_begin, never before this epoch's end
        now, clock = self.totals(), self._clock
        self.epochs.append({"epoch": epoch + 1, "records": now[0] - self._last[0],
                            "fingerprint": now[1] - self._last[1],
                            # the epoch's training steps, validation excluded (CPU: every thread)
                            "train_seconds": round(clock.get("train_wall", time.perf_counter()) - clock["wall"], 4),
                            "train_cpu_seconds": round(clock.get("train_cpu", time.process_time()) - clock["cpu"], 4),
                            "logs": {k: float(v) for k, v in (logs or {}).items()}})
        self._last, self._clock = now, {}

    def record(self) -> Dict[str, Any]:
        """What this worker read, per epoch, and how long its fit took."""
        c = self.cluster
        task = ({"task_type": c.task_type, "task_index": c.task_index, "num_workers": c.num_workers,
                 "is_chief": c.is_chief} if c else
                {"task_type": "worker", "task_index": 0, "num_workers": 1, "is_chief": True})
        return {**task, **self.info, "epochs": self.epochs}

    def write(self, run_dir: str) -> str:
        """``<run_dir>/workers/<type>-<index>.json``: every worker writes its own."""
        rec = self.record()
        path = os.path.join(run_dir, RECORDS_DIR, f"{rec['task_type']}-{rec['task_index']}.json")
        tf.io.gfile.makedirs(os.path.dirname(path))
        with tf.io.gfile.GFile(path, "w") as f:
            json.dump(rec, f, indent=1)
        return path


@contextlib.contextmanager
def timed(tally: Optional[ShardTally]) -> Iterator[None]:
    """Adds the block's wall and CPU seconds (every thread of the process) to ``tally.info``."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        if tally is not None:
            tally.info.update(fit_seconds=round(time.perf_counter() - wall, 3),
                              fit_cpu_seconds=round(time.process_time() - cpu, 3))
