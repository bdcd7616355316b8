"""The Trainer's tf.distribute choice: MultiWorkerMirrored from TF_CONFIG, else default on CPU;
TF_CONFIG is checked first, so a malformed one is an error naming it."""
import json
import os
import subprocess
import sys

import pytest

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


def _cluster(tf_config):
    from feedrank.train.distribute import cluster_from_env

    return cluster_from_env({"TF_CONFIG": tf_config if isinstance(tf_config, str) else json.dumps(tf_config)})


def test_tf_config_gives_the_task_and_the_chief():
    two = {"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 1}}
    c = _cluster(two)
    assert (c.task_type, c.task_index, c.num_workers, c.is_chief, c.worker_id) == ("worker", 1, 2, False, 1)
    assert _cluster({**two, "task": {"type": "worker", "index": 0}}).is_chief   # worker 0 without a chief
    with_chief = {"cluster": {"chief": ["h:1"], "worker": ["h:2", "h:3"]}, "task": {"type": "worker", "index": 0}}
    c = _cluster(with_chief)
    assert (c.num_workers, c.is_chief, c.worker_id) == (3, False, 1)
    c = _cluster({**with_chief, "task": {"type": "chief", "index": 0}})
    assert (c.is_chief, c.worker_id) == (True, 0)
    assert _cluster("") is None and _cluster("  ") is None


@pytest.mark.parametrize("tf_config, message", [
    ('{"cluster": ', r"TF_CONFIG is not valid JSON \(Expecting value at character 12\)"),
    ('["worker"]', "TF_CONFIG needs a 'cluster' mapping of job name to a list of 'host:port'"),
    ({"cluster": {"ps": ["h:1"]}, "task": {"type": "ps", "index": 0}}, "TF_CONFIG cluster job 'ps' is not one of"),
    ({"cluster": {"worker": "h:1,h:2"}, "task": {"type": "worker", "index": 0}},
     "TF_CONFIG cluster.worker must be a non-empty list of 'host:port', got 'h:1,h:2'"),
    ({"cluster": {"worker": ["h:x"]}, "task": {"type": "worker", "index": 0}}, "cluster.worker must be a non-empty"),
    ({"cluster": {"worker": ["h:1"]}}, r"TF_CONFIG task must be \{'type': one of \['worker'\], 'index': n\}, got None"),
    ({"cluster": {"worker": ["h:1"]}, "task": {"type": "chief", "index": 0}}, "TF_CONFIG task must be"),
    ({"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 2}},
     r"TF_CONFIG task.index must be an integer in \[0, 2\) for the 2 worker task\(s\), got 2"),
    ({"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": "0"}}, "task.index must be an integer"),
    ({"cluster": {"chief": ["h:1", "h:2"]}, "task": {"type": "chief", "index": 0}}, "cluster.chief must name one task"),
])
def test_a_malformed_tf_config_is_a_config_error_naming_it(tf_config, message):
    from feedrank.typed import ConfigError

    with pytest.raises(ConfigError, match=message):
        _cluster(tf_config)


def test_a_malformed_tf_config_stops_the_trainer_with_a_clear_error():
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CONFIG='{"cluster": {"worker": ["localhost:1"]}}', TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=300)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == ("feedrank.typed.ConfigError: TF_CONFIG task must be "
                                                   "{'type': one of ['worker'], 'index': n}, got None")
