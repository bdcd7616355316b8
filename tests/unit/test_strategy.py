"""The Trainer's tf.distribute choice: MultiWorkerMirrored from TF_CONFIG, else default on CPU."""
import json
import os
import subprocess
import sys

from feedrank.ports import free_port
from tests.helpers.config import ROOT

SCRIPT = ("import os; os.environ['TF_USE_LEGACY_KERAS'] = '1'\n"
          "import tensorflow as tf\n"
          "from feedrank.train.trainer import distribution_strategy\n"
          "s = distribution_strategy()\n"
          "kind = 'multi_worker' if isinstance(s, tf.distribute.MultiWorkerMirroredStrategy) else type(s).__name__\n"
          "print(kind, s.num_replicas_in_sync)\n")


def _strategy(env_extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(env_extra, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300, check=True)
    return out.stdout.strip().splitlines()[-1].split()


def test_default_strategy_on_a_cpu_machine():
    name, replicas = _strategy({})
    assert name == "_DefaultDistributionStrategy" and replicas == "1"


def test_multi_worker_strategy_from_tf_config():
    tf_config = {"cluster": {"worker": [f"127.0.0.1:{free_port()}"]}, "task": {"type": "worker", "index": 0}}
    name, replicas = _strategy({"TF_CONFIG": json.dumps(tf_config)})
    assert name == "multi_worker" and replicas == "1"
