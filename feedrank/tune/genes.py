"""The tuned hyperparameters (genes), their ranges, and how they map onto the Trainers' settings.

Two search spaces, both KerasTuner `HyperParameters` so that every tuner
(`GeneticOracle`, KerasTuner's RandomSearch) searches exactly the same space:

* ``session`` (the DRNN, `feedrank.sessions.drnn.DrnnSettings`): ``width`` (k),
  ``length`` (L), ``height``, ``units`` (neurons per layer), ``learning_rate``
  and ``batch_size`` (a fit argument);
* ``ctr`` (the ranking families, `feedrank.train.settings.TrainerSettings`):
  ``learning_rate``, ``batch_size``, ``mlp_width`` and ``mlp_depth`` (the MLP
  ``mlp_units = [mlp_width] * mlp_depth``) and ``dropout``.

`repair` keeps a chromosome valid where genes constrain each other: the DRNN
needs ``height < length``, so ``height`` is clipped to ``length - 1``.  The
mapping functions (`drnn_overrides`, `trainer_overrides`) turn tuned values
into the settings' keys; the Trainers apply them to their typed settings.
This module imports neither TensorFlow nor KerasTuner at import time.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

log = logging.getLogger(__name__)

SESSION, CTR = "session", "ctr"
MODES = (SESSION, CTR)

# name -> (kind, spec): "int" (min, max), "log" (min, max) float, "float" (min, max, step), "choice" values
SESSION_GENES: Dict[str, Tuple[str, Tuple[Any, ...]]] = {
    "width": ("int", (1, 8)),
    "length": ("int", (1, 3)),
    "height": ("int", (0, 2)),
    "units": ("choice", (16, 32, 64, 128)),
    "learning_rate": ("log", (1e-4, 3e-2)),
    "batch_size": ("choice", (32, 64, 128, 256)),
}
CTR_GENES: Dict[str, Tuple[str, Tuple[Any, ...]]] = {
    "learning_rate": ("log", (1e-4, 1e-2)),
    "batch_size": ("choice", (256, 512, 1024, 2048)),
    "mlp_width": ("choice", (32, 64, 128, 256)),
    "mlp_depth": ("int", (1, 3)),
    "dropout": ("float", (0.0, 0.5, 0.1)),
}
GENES = {SESSION: SESSION_GENES, CTR: CTR_GENES}
# The settings a tuned value replaces, per mode (what the docs and the Trainers' hooks name).
SESSION_DRNN_KEYS = ("width", "length", "height", "units", "learning_rate")
FIT_KEYS = ("batch_size",)


def check_mode(mode: str) -> str:
    """``mode`` itself if it is a tuning mode; else a ValueError naming the allowed ones."""
    if mode not in MODES:
        raise ValueError(f"tuner mode must be one of {list(MODES)}, got {mode!r}")
    return mode


def space(mode: str, genes: Optional[Mapping[str, Tuple[str, Sequence[Any]]]] = None):
    """A `keras_tuner.HyperParameters` declaring ``mode``'s genes (or ``genes``)."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for name, (kind, spec) in (genes or GENES[check_mode(mode)]).items():
        if kind == "int":
            hp.Int(name, int(spec[0]), int(spec[1]))
        elif kind == "log":
            hp.Float(name, float(spec[0]), float(spec[1]), sampling="log")
        elif kind == "float":
            hp.Float(name, float(spec[0]), float(spec[1]), step=float(spec[2]))
        elif kind == "choice":
            hp.Choice(name, list(spec), ordered=True)
        else:
            raise ValueError(f"gene {name!r} has unknown kind {kind!r} (int, log, float, choice)")
    return hp


def repair(values: Dict[str, Any]) -> Dict[str, Any]:
    """``values`` with the DRNN's ``height < length`` enforced (height clipped to length - 1)."""
    if "height" in values and "length" in values and values["height"] >= values["length"]:
        values = {**values, "height": int(values["length"]) - 1}
    return values


def _values(hyperparameters: Any) -> Dict[str, Any]:
    """Tuned values from TFX's ``fn_args.hyperparameters`` (a HyperParameters config
    ``{"space": ..., "values": ...}``), a `keras_tuner.HyperParameters` or a plain mapping."""
    if hyperparameters is None:
        return {}
    if hasattr(hyperparameters, "values") and not isinstance(hyperparameters, Mapping):
        return dict(hyperparameters.values)
    if not isinstance(hyperparameters, Mapping):
        raise ValueError(f"hyperparameters must be a mapping or keras_tuner.HyperParameters, "
                         f"got {type(hyperparameters).__name__}")
    if "values" in hyperparameters and isinstance(hyperparameters["values"], Mapping):
        return dict(hyperparameters["values"])
    return dict(hyperparameters)


def drnn_overrides(hyperparameters: Any) -> Tuple[Dict[str, Any], Optional[int]]:
    """(the `DrnnSettings` keys to override, the batch size or None) from tuned values."""
    values = repair(_values(hyperparameters))
    unknown = sorted(set(values) - set(SESSION_GENES))
    if unknown:
        raise ValueError(f"tuned hyperparameters {unknown} are not session genes {sorted(SESSION_GENES)}")
    drnn = {k: (float(v) if k == "learning_rate" else int(v)) for k, v in values.items() if k in SESSION_DRNN_KEYS}
    batch = values.get("batch_size")
    return drnn, (int(batch) if batch is not None else None)


def trainer_overrides(hyperparameters: Any) -> Dict[str, Any]:
    """The flat `TrainerSettings` keys (``custom_config`` form) that tuned ranking values replace."""
    values = _values(hyperparameters)
    unknown = sorted(set(values) - set(CTR_GENES))
    if unknown:
        raise ValueError(f"tuned hyperparameters {unknown} are not ranking genes {sorted(CTR_GENES)}")
    out: Dict[str, Any] = {}
    if "learning_rate" in values:
        out["learning_rate"] = float(values["learning_rate"])
    if "batch_size" in values:
        out["batch_size"] = int(values["batch_size"])
    if "dropout" in values:
        out["dropout"] = float(values["dropout"])
    if "mlp_width" in values or "mlp_depth" in values:
        if not ("mlp_width" in values and "mlp_depth" in values):
            raise ValueError("tuned hyperparameters must hold both mlp_width and mlp_depth, or neither")
        out["mlp_units"] = [int(values["mlp_width"])] * int(values["mlp_depth"])
    return out


def apply_trainer_hyperparameters(settings: Dict[str, Any], hyperparameters: Any) -> Dict[str, Any]:
    """The ranking Trainer's flat ``custom_config`` with the Tuner's best values applied
    (``hyperparameters`` None or empty: unchanged)."""
    overrides = trainer_overrides(hyperparameters)
    if overrides:
        log.info("tuned hyperparameters override the trainer settings: %s", overrides)
    return {**settings, **overrides}
