"""Reading an example split back: the serialized tf.Examples of one ``Split-<name>`` directory."""
from __future__ import annotations

import glob
import os
from typing import List


def read_split(examples_uri: str, split: str) -> List[bytes]:
    """Every serialized example of ``examples_uri/Split-<split>`` (GZIP TFRecords), file by file in
    name order; a missing or empty split is an error naming the directory."""
    import tensorflow as tf  # local import: the example generator's plain-Python path must not need TF

    split_dir = os.path.join(examples_uri, f"Split-{split}")
    files = sorted(glob.glob(os.path.join(split_dir, "*.gz")))
    if not files:
        raise FileNotFoundError(f"no GZIP TFRecord files (*.gz) in {split_dir}")
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
