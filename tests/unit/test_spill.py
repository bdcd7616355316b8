"""The file shuffle of example generation: frames come back as written, in path order."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from feedrank.examples import spill


def _frame(start: int, n: int) -> pd.DataFrame:
    return pd.DataFrame({"event_id": [f"e{i:05d}" for i in range(start, start + n)],
                         "event": pd.Categorical(["click"] * n, categories=["impression", "click"]),
                         "ts": np.arange(start, start + n, dtype=np.int64),
                         "dwell_s": np.full(n, np.nan)})


def test_frames_round_trip_in_path_order_and_the_run_dir_is_removed(tmp_path):
    root = spill.run_dir(str(tmp_path))
    assert os.path.dirname(root) == str(tmp_path) and os.path.basename(root).startswith("_spill-")
    s = spill.SpillDir(root)
    elements = s.write_shards("events", "f0_g1_o0", [(3, _frame(10, 2)), (5, _frame(20, 1))])
    elements += s.write_shards("events", "f0_g0_o0", [(3, _frame(0, 3))])
    assert [e[0] for e in elements] == [3, 5, 3]
    shard3 = [p for k, p in elements if k == 3]
    got = spill.read(shard3)
    want = pd.concat([_frame(0, 3), _frame(10, 2)], ignore_index=True)   # f0_g0 sorts before f0_g1
    pd.testing.assert_frame_equal(got, want)
    assert got["event"].dtype == want["event"].dtype
    assert spill.read([]).empty
    assert s.write("events", 3, "f0_g0_o0", _frame(0, 3)) == elements[2]   # a retry overwrites its own file
    s.remove()
    assert not os.path.exists(root) and os.listdir(tmp_path) == []
    s.remove()   # nothing left: no error


def test_the_shuffle_is_picked_by_name(tmp_path):
    assert isinstance(spill.of("files", str(tmp_path)), spill.SpillDir)
    in_beam = spill.of("beam", str(tmp_path))
    frame = _frame(0, 2)
    [(shard, got)] = in_beam.write_shards("events", "f0", [(np.int64(4), frame)])
    assert shard == 4 and got is frame
    pd.testing.assert_frame_equal(in_beam.read([frame, _frame(2, 1)]), _frame(0, 3))
    in_beam.remove()
    with pytest.raises(ValueError, match="shuffle must be one of"):
        spill.of("memory", str(tmp_path))
