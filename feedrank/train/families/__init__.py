"""Model families, chosen by name through the Trainer's ``model`` setting (`feedrank.train.settings`).

Every builder takes the run's feature contract (``spec``, a
`feedrank.features.FeatureSpec`: the model's inputs are its transformed
features) and returns a Keras model trained by the Trainer's ``fit``, except
``gbdt`` (TF-DF's trees, trained by `gbdt.fit` in one pass; TF-DF is imported
only when it is built)."""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Union

import tf_keras as keras

from feedrank import features as F
from feedrank.train.families import bst, deepfm, dien, din, dnn, double_channel, gbdt, multi_channel, wide_deep
from feedrank.train.settings import FAMILY_NAMES, TrainerSettings, as_settings

Builder = Callable[..., keras.Model]   # (vocab_sizes, settings, *, spec) -> model

FAMILIES: Dict[str, Builder] = {
    "din": din.build,
    "dien": dien.build,
    "bst": bst.build,
    "double_channel": double_channel.build,
    "multi_channel": multi_channel.build,
    "dnn": dnn.build,
    "wide_deep": wide_deep.build,
    "deepfm": deepfm.build,
    "gbdt": gbdt.build,
}


if set(FAMILIES) != set(FAMILY_NAMES):
    raise TypeError(f"settings.FAMILY_NAMES {sorted(FAMILY_NAMES)} must name the builders {sorted(FAMILIES)}")


def build_model(family: str, vocab_sizes: Mapping[str, int],
                config: Union[TrainerSettings, Mapping[str, Any]], *, spec: F.FeatureSpec) -> keras.Model:
    """Builds the named family for the feature contract ``spec`` from the Trainer's settings
    (or a flat mapping of them, checked like a config file's ``trainer:``); a clear error
    lists the known families."""
    try:
        builder = FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(FAMILIES)}") from None
    return builder(vocab_sizes, as_settings(config, "model settings"), spec=spec)
