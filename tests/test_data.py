"""The Trainer's tf.data input pipeline (`feedrank.train.data`): every example
once per epoch, and the record cache (`input_cache`) changes nothing but speed."""
import os

import numpy as np

from feedrank import features as F
from feedrank.train import data
from tests.model_harness import random_batch, transformed_spec, write_transformed

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
    plain = data.dataset([path], transformed_spec(), 64, shuffle=True, seed=7)
    cached = data.dataset([path], transformed_spec(), 64, shuffle=True, seed=7, cache="memory")
    first = _epoch(cached)
    np.testing.assert_array_equal(first, _epoch(plain))  # caching changes nothing, order included
    assert sorted(first) == list(range(N))
    os.remove(path)  # later epochs must come from the cache
    second = _epoch(cached)
    assert sorted(second) == list(range(N)) and not np.array_equal(first, second)  # reshuffled
    x, y = next(iter(cached))
    i = int(y[0])
    np.testing.assert_array_equal(x[F.idx(F.CLICK_ITEMS.name)][0].numpy(), batch[F.idx(F.CLICK_ITEMS.name)][i])


def test_file_cache_writes_under_the_prefix(tmp_path):
    path = str(tmp_path / "eval.gz")
    _write(path)
    prefix = str(tmp_path / "cache" / "records")
    os.makedirs(os.path.dirname(prefix))
    ds = data.dataset([path], transformed_spec(), 100, cache=prefix)
    assert list(_epoch(ds)) == list(range(N))  # no shuffle: file order
    assert any(name.startswith("records") for name in os.listdir(os.path.dirname(prefix)))
    os.remove(path)
    assert list(_epoch(ds)) == list(range(N))


def test_same_seed_same_batches_in_the_same_order(tmp_path):
    path = str(tmp_path / "train.gz")
    _write(path)
    runs = [_epoch(data.dataset([path], transformed_spec(), 32, shuffle=True, seed=s)) for s in (5, 5, 6)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
