"""Model families, chosen by name through the Trainer's ``custom_config['model']``."""
from __future__ import annotations

from typing import Callable, Dict, Mapping

import tf_keras as keras

from feedrank.train.families import bst, dien, din, dnn, double_channel, multi_channel, wide_deep

Builder = Callable[[Mapping[str, int], Mapping], keras.Model]

FAMILIES: Dict[str, Builder] = {
    "din": din.build,
    "dien": dien.build,
    "bst": bst.build,
    "double_channel": double_channel.build,
    "multi_channel": multi_channel.build,
    "dnn": dnn.build,
    "wide_deep": wide_deep.build,
}


def build_model(family: str, vocab_sizes: Mapping[str, int], config: Mapping) -> keras.Model:
    """Builds the named family; a clear error lists the known ones."""
    try:
        builder = FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(FAMILIES)}") from None
    return builder(vocab_sizes, config)
