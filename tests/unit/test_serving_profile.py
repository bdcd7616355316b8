"""benchmarks/serving_profile.py: ops go to the serving stages by their name scopes."""
import importlib.util
import os
import sys

import tensorflow as tf

from feedrank.train import serving_graph as SG
from tests.helpers.config import ROOT


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module   # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


profile = load("serving_profile", "benchmarks/serving_profile.py")
PREFIX = "StatefulPartitionedCall/cond/then/_149/cond/"


def test_ops_go_to_the_stage_of_their_scope():
    stage = profile.stage_of
    assert stage(PREFIX + "attention_1/cond/then/_797/cond/attention_1/cond/MatMul:_MklMatMul") == "attention"
    assert stage(PREFIX + "candidate_side_20/head_mlp/head_mlp_dense0/BiasAdd:_MklNativeFusedMatMul") == "head"
    assert stage(PREFIX + "candidate_side_3/match_features/Equal:Equal") == "candidate_side"
    assert stage(PREFIX + "user_side_28/region_embedding/embedding_lookup:ResourceGather") == "user_side"
    assert stage(PREFIX + "transform/transform_features_layer/StatefulPartitionedCall/apply_vocab/x:Add") \
        == "transform"
    assert stage(PREFIX + "raw_features/boolean_mask/Where:Where") == "raw_features"
    assert stage("click_item_ids:_Arg") == "glue"
    # an export without the scopes: by layer names
    assert stage(PREFIX + "din_attention/att_mlp/att_mlp_dense0/Tensordot/MatMul:_MklMatMul") == "attention"
    assert stage(PREFIX + "item_embedding/embedding_lookup_1:ResourceGather") == "model_unscoped"
    assert set(SG.STAGES.values()) <= {"raw_features", "transform", "user_side", "attention", "candidate_side"}


def test_median_tree_takes_each_leafs_median():
    runs = [{"a": {"cpu_ms": 1.0, "n": 3}, "name": "x"}, {"a": {"cpu_ms": 5.0, "n": 1}, "name": "x"},
            {"a": {"cpu_ms": 2.0, "n": 2}, "name": "x"}]
    assert profile.median_tree(runs) == {"a": {"cpu_ms": 2.0, "n": 2.0}, "name": "x"}


def test_trace_attributes_each_calls_ops_by_scope():
    @tf.function
    def f(x):
        with tf.name_scope("transform"):
            y = tf.matmul(x, x)
        with tf.name_scope("attention"):
            return tf.reduce_sum(tf.nn.relu(y))

    x = tf.random.normal([32, 32])
    f(x)
    out = profile.trace(lambda: f(x), calls=4)
    assert out["ops:transform"] >= 1 and out["ops:attention"] >= 2
    assert out["transform"] > 0 and out["function_run_ms"] >= out["op_ms"] > 0
