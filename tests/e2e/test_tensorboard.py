"""TensorBoard: the Trainer of a real pipeline run writes per-epoch loss, AUC, logloss and the
learning rate into its ModelRun artifact; ``pipeline.py tensorboard`` finds them in the MLMD
store, and a real TensorBoard server started on them serves those scalars."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

import pipeline
from feedrank.ports import free_port
from feedrank.runners import tensorboard
from tests.helpers.config import TINY_CONFIG


def _scalars(logdir: str) -> dict:
    """Tag -> per-epoch values of the train and validation writers."""
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for sub in ("train", "validation"):
        acc = EventAccumulator(os.path.join(logdir, sub), size_guidance={"tensors": 0})
        acc.Reload()
        out[sub] = {tag: [float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
                    for tag in acc.Tags()["tensors"]}
    return out


@pytest.mark.e2e
def test_the_trainer_writes_tensorboard_logs_that_the_command_serves(first_run, tmp_path, capsys):
    cfg, summary = first_run
    assert summary["status"] == "succeeded"
    (logdir,) = tensorboard.trainer_logdirs(cfg.metadata_path)[-1:]
    scalars = _scalars(logdir)
    epochs = len(scalars["train"]["epoch_loss"])
    assert 1 <= epochs <= cfg.trainer.epochs
    for tag in ("epoch_loss", "epoch_auc", "epoch_logloss"):
        assert len(scalars["train"][tag]) == len(scalars["validation"][tag]) == epochs, tag
    assert scalars["train"]["epoch_learning_rate"] == pytest.approx([cfg.trainer.learning_rate] * epochs)
    assert all(0.0 < a < 1.0 for a in scalars["validation"]["epoch_auc"])

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"base": TINY_CONFIG, "pipeline_name": cfg.pipeline_name,
                                      "run_root": cfg.run_root}))
    assert pipeline.main(["tensorboard", "--config", str(config), "--print-logdir"]) == 0
    assert capsys.readouterr().out.strip() == logdir

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir_spec",
                             tensorboard.logdir_spec([logdir]), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, tags = time.monotonic() + 90, {}
        while not tags:
            assert proc.poll() is None and time.monotonic() < deadline, "TensorBoard did not serve the logs"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as r:
                    tags = json.load(r)
            except OSError:
                time.sleep(1)
        run = next(iter(k for k in tags if k.endswith("/validation")))
        assert {"epoch_auc", "epoch_loss"} <= set(tags[run])
    finally:
        proc.terminate()
        proc.wait(30)


def test_no_logs_is_one_line(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"base": TINY_CONFIG, "run_root": str(tmp_path / "runs")}))
    assert pipeline.main(["tensorboard", "--config", str(config), "--print-logdir"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no MLMD store" in err[0] and "pipeline.py run" in err[0]
