"""Transform stage: tf.Transform preprocessing and the in-graph cross features."""
