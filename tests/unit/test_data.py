"""The Trainer's tf.data input pipeline (`feedrank.train.data`): every example
once per epoch, and the record cache (`input_cache`) changes nothing but speed; the
on-disk cache lives where it is told, keyed to the files it caches; a worker's shard
is its files, or every n-th example of the order every worker shuffles alike."""
import os

import numpy as np
import pytest
import tensorflow as tf

from feedrank import features as F
from feedrank.train import data, distribute
from tests.helpers.model_harness import random_batch, transformed_spec, write_transformed

N = 300


def _write(path):
    """N generated transformed examples; the label is the example's index, to track order."""
    batch = random_batch(N, seed=3)
    write_transformed(path, batch, np.arange(N))
    return batch


def _epoch(ds):
    return np.concatenate([y.numpy() for _, y in ds]).astype(int)


def test_cached_pipeline_yields_the_same_examples_and_order_then_reads_no_file(tmp_path):
    path = str(tmp_path / "train.gz")
    batch = _write(path)
    plain = data.dataset([path], transformed_spec(), 64, shuffle=True, seed=7, spec=F.BUILTIN)
    cached = data.dataset([path], transformed_spec(), 64, shuffle=True, seed=7, cache="memory", spec=F.BUILTIN)
    first = _epoch(cached)
    np.testing.assert_array_equal(first, _epoch(plain))  # caching changes nothing, order included
    assert sorted(first) == list(range(N))
    os.remove(path)  # later epochs must come from the cache
    second = _epoch(cached)
    assert sorted(second) == list(range(N)) and not np.array_equal(first, second)  # reshuffled
    x, y = next(iter(cached))
    i = int(y[0])
    np.testing.assert_array_equal(x[F.idx(F.CLICK_ITEMS.name)][0].numpy(), batch[F.idx(F.CLICK_ITEMS.name)][i])


def test_disk_cache_writes_in_its_directory_keyed_to_the_files(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    path = str(tmp_path / "eval.gz")
    _write(path)
    cache_dir = str(tmp_path / "run" / "input_cache")
    ds = data.dataset([path], transformed_spec(), 100, cache="disk", cache_dir=cache_dir, spec=F.BUILTIN)
    assert list(_epoch(ds)) == list(range(N))  # no shuffle: file order
    key = data.cache_key([path])
    assert any(name.startswith(f"records-{key}") for name in os.listdir(cache_dir))
    assert os.listdir(cwd) == []  # never the working directory
    os.remove(path)
    assert list(_epoch(ds)) == list(range(N))  # later passes read the cache


def test_two_runs_over_different_data_never_share_a_disk_cache(tmp_path):
    """Same setting, same cache directory: each run reads its own records, also when the
    second run's data sit at the first run's path (rewritten in place)."""
    cache_dir = str(tmp_path / "input_cache")
    parse_spec = transformed_spec()
    a, b = str(tmp_path / "a" / "train.gz"), str(tmp_path / "b" / "train.gz")
    for path, offset in ((a, 0), (b, 1000)):
        os.makedirs(os.path.dirname(path))
        write_transformed(path, random_batch(N, seed=3), np.arange(N) + offset)
    def cached(path):
        return list(_epoch(data.dataset([path], parse_spec, 100, cache="disk", cache_dir=cache_dir,
                                        spec=F.BUILTIN)))

    assert cached(a) == list(range(N))
    assert cached(b) == list(range(1000, 1000 + N))
    write_transformed(a, random_batch(N, seed=4), np.arange(N) + 5000)   # new data, same file name
    assert cached(a) == list(range(5000, 5000 + N))
    assert len({data.cache_key([a]), data.cache_key([b]), data.cache_key([a, b])}) == 3


def test_a_cache_mode_other_than_memory_disk_or_off_is_refused(tmp_path):
    path = str(tmp_path / "train.gz")
    _write(path)
    for bad in ("Memory", str(tmp_path / "cache" / "records")):
        with pytest.raises(ValueError, match=r"input cache must be one of \['memory', 'disk', ''\]"):
            data.dataset([path], transformed_spec(), 64, cache=bad, spec=F.BUILTIN)
    with pytest.raises(ValueError, match="'disk' input cache needs a cache_dir"):
        data.dataset([path], transformed_spec(), 64, cache="disk", spec=F.BUILTIN)
    assert not os.path.exists(tmp_path / "cache")


def test_same_seed_same_batches_in_the_same_order(tmp_path):
    path = str(tmp_path / "train.gz")
    _write(path)
    runs = [_epoch(data.dataset([path], transformed_spec(), 32, shuffle=True, seed=s, spec=F.BUILTIN))
            for s in (5, 5, 6)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def _batches(ds):
    return [y.numpy().astype(int) for _, y in ds]


def test_data_shards_take_every_nth_example_of_the_one_worker_order(tmp_path):
    """The ``data`` policy: both workers shuffle alike and keep every second example, so their
    k-th batches of 64 hold exactly the examples of the one-worker k-th batch of 64 (the
    strategy then splits each of a worker's batches into one piece per worker for a step)."""
    path = str(tmp_path / "train.gz")
    _write(path)

    def run(shard=None, tally=None):
        return _batches(data.dataset([path], transformed_spec(), 64, shuffle=True, seed=7, cache="memory",
                                     spec=F.BUILTIN, shard=shard, tap=tally.tap if tally else None))

    one = np.concatenate(run())
    tallies = [distribute.ShardTally(), distribute.ShardTally()]
    shards = [run(distribute.Shard("data", i, 2), tallies[i]) for i in range(2)]
    for i, batches in enumerate(shards):
        np.testing.assert_array_equal(np.concatenate(batches), one[i::2])   # every second, from the i-th
    assert sorted(np.concatenate([*shards[0], *shards[1]])) == list(range(N))
    # the tally counted each worker's records, and the fingerprints add up to the split's
    records = [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]
    totals = [t.totals() for t in tallies]
    assert [n for n, _ in totals] == [N - N // 2, N // 2]
    assert sum(f for _, f in totals) == distribute.fingerprint(records) and totals[0][1] != totals[1][1]


def test_file_shards_read_their_own_files_and_need_one_file_per_worker(tmp_path):
    paths = [str(tmp_path / f"train-{i}.gz") for i in range(3)]
    for i, p in enumerate(paths):
        write_transformed(p, random_batch(10 * (i + 1), seed=i), np.arange(10 * (i + 1)) + 100 * i)
    got = [sorted(np.concatenate(_batches(data.dataset([str(tmp_path / "train-*")], transformed_spec(), 8,
                                                       shuffle=True, spec=F.BUILTIN,
                                                       shard=distribute.choose_shard(3, 2, i)))))
           for i in range(2)]
    assert got[0] == list(range(10)) + list(range(200, 230))   # files 0 and 2
    assert got[1] == list(range(100, 120))                      # file 1
    assert distribute.choose_shard(3, 2, 0).policy == "file"
    assert distribute.choose_shard(1, 2, 1) == distribute.Shard("data", 1, 2)
    assert distribute.choose_shard(5, 1, 0) == distribute.Shard()   # one worker: the whole split
