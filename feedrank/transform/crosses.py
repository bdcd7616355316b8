"""User x post cross features computed in TensorFlow from raw serving inputs.

The example generator computes the same two features in Python
(`feedrank.examples.build.crosses`);
`tests/e2e/test_serving_contract.py::test_example_generator_crosses_equal_the_in_graph_crosses`
checks both agree on simulated data, so serving cannot drift from training.
"""
from __future__ import annotations

from typing import Dict

import tensorflow as tf

from feedrank import features as F


def cross_features(user_region_id: tf.Tensor, region_id: tf.Tensor,
                   click_category_ids: tf.Tensor, category_id: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Region match and interest-category share.

    Args:
      user_region_id: [B] string, "" when unknown.
      region_id: [B] string, the candidate's region.
      click_category_ids: [B, L] string, "" is padding.
      category_id: [B] string, the candidate's category.
    Returns:
      {region_match: [B] float32, interest_cat_share: [B] float32}
    """
    region_match = tf.logical_and(tf.equal(user_region_id, region_id),
                                  tf.strings.length(user_region_id) > 0)
    present = tf.cast(tf.strings.length(click_category_ids) > 0, tf.float32)
    same = tf.cast(tf.equal(click_category_ids, category_id[:, None]), tf.float32) * present
    n = tf.reduce_sum(present, axis=1)
    share = tf.math.divide_no_nan(tf.reduce_sum(same, axis=1), n)
    return {F.REGION_MATCH.name: tf.cast(region_match, tf.float32),
            F.INTEREST_CATEGORY_SHARE.name: share}
