"""The Trainer's raw-example input (`transform.materialize: false`): raw
examples mapped through the tf.Transform layer give the same batches, in the
same order, as the transformed examples tf.Transform materialises."""
import os

import numpy as np
import tensorflow as tf

from feedrank import features as F
from feedrank.train import data, trainer
from tests.helpers import examplegen as eg
from tests.helpers.transform import analyze_and_transform


def test_raw_examples_through_the_transform_layer_match_the_materialised_ones(tmp_path):
    result = eg.run(eg.make_log(str(tmp_path / "log")), str(tmp_path / "gen"), num_shards=1)
    raw_files = sorted(tf.io.gfile.glob(os.path.join(result["output_dir"], "Split-train", "*")))
    transformed_file, tft_out = analyze_and_transform(raw_files, str(tmp_path / "tft"))

    parse_spec, layer = trainer.input_spec(tft_out, raw_examples=False, spec=F.BUILTIN)
    raw_spec, raw_layer = trainer.input_spec(tft_out, raw_examples=True, spec=F.BUILTIN)
    assert layer is None and raw_layer is not None
    materialised = data.dataset([transformed_file], parse_spec, 64, shuffle=True, seed=5, cache="memory",
                                spec=F.BUILTIN)
    from_raw = data.dataset(raw_files, raw_spec, 64, shuffle=True, seed=5, cache="memory",
                            transform_layer=raw_layer, spec=F.BUILTIN)
    batches = 0
    for (xa, ya), (xb, yb) in zip(materialised, from_raw):
        assert sorted(xa) == sorted(xb) == sorted(F.BUILTIN.model_input_names())
        for k in xa:
            assert xa[k].dtype == xb[k].dtype and xa[k].shape == xb[k].shape, k
            if xa[k].dtype == tf.float32:  # z-scores: the same graph, up to float rounding
                np.testing.assert_allclose(xa[k].numpy(), xb[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
            else:
                np.testing.assert_array_equal(xa[k].numpy(), xb[k].numpy(), err_msg=k)
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())
        batches += 1
    assert batches == len(list(from_raw)) > 1
