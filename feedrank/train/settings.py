"""The Trainer's settings: the ``trainer:`` section of a config, typed and validated.

The YAML section is flat (``trainer: {model: bst, epochs: 4, transformer_heads: 8}``);
in Python the settings are `TrainerSettings`: the shared ones as its own fields
and each family's as one nested group (``settings.bst.transformer_heads``).
Every key name is unique across the groups, and every default is written here
once.  A family's group is accepted (and ignored) when another family is
trained, so one config can serve several families (``benchmarks/quality.py``).

The Trainer receives the settings as TFX ``custom_config``, a flat JSON-able
dict (`TrainerSettings.to_dict`: the shared settings and the groups the chosen
family reads; on Kubeflow one JSON runtime parameter, also logged to MLflow as
the run's parameters), and ``run_fn`` parses it back with the same checks
(`TrainerSettings.from_dict`).  The pipeline adds the `PIPELINE_KEYS`, which a
config file may not set.  The negative sampling rate is none of these: the
Trainer component reads it from the Examples artifact (`ARTIFACT_KEYS`), so an
overridden trainer config can never disagree with the data.

``input_cache`` (the decoded train/validation records kept after epoch 1):
``memory`` (default), ``disk`` (tf.data's file cache in the Trainer's own run
directory, named after the files it caches, removed after training) or ``""``
(off); anything else, a misspelt ``Memory`` or a file prefix, is refused.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional

from feedrank.typed import ConfigError, Section, build_typed, setting, to_plain

FAMILY_NAMES = ("bst", "deepfm", "dien", "din", "dnn", "double_channel", "gbdt", "multi_channel", "wide_deep")
# Keras activation names `layers.mlp` accepts besides "dice" and "prelu".
ACTIVATIONS = ("dice", "prelu", "relu", "elu", "selu", "gelu", "silu", "swish", "sigmoid", "tanh",
               "softplus", "softsign", "leaky_relu", "linear")
# Set by the pipeline and its components, never by a config file.
PIPELINE_KEYS = {
    "code_version": "the pipeline (the code's version)",
    "word_vectors_uri": "the Trainer component (the Word2VecGen artifact)",
    "item_vectors": "the Trainer (the word vectors mapped onto the item vocabulary)",
    "raw_examples": "transform.materialize (false: the Trainer applies the transform graph)",
    "declared_features": "the config's features section (`FeatureSpec.to_json`)",
}
# Read by the Trainer component from its input artifacts, never from the trainer config.
ARTIFACT_KEYS = {
    "negative_sampling_rate": "examples.negative_sampling_rate (the Trainer reads it from the Examples artifact)",
}
# custom_config key under which the Trainer component hands run_fn the Examples
# artifact's properties ({"uri": ..., "negative_sampling_rate": ...}).
EXAMPLES_ARTIFACT_KEY = "examples_artifact"
INPUT_CACHE_MODES = ("memory", "disk", "")
CALIBRATION_SETTINGS = ("auto", "platt", "isotonic", "none")   # trainer.calibration (`calibration.choose`)


@dataclasses.dataclass
class EmbeddingDims:
    """Embedding width per vocabulary (the `vocabs` of the run's `FeatureSpec`)."""
    item: int = setting(32, min=1)
    category: int = setting(16, min=1)
    region: int = setting(8, min=1)
    token: int = setting(16, min=1)


@dataclasses.dataclass
class Word2VecUse:
    """``trainer.word2vec``: how the model uses the Word2Vec post vectors (docs/word2vec.md)."""
    init: bool = True          # item table rows <- the post vectors
    freeze: bool = False       # the item table stays the vectors
    similarity: bool = False   # + cos(candidate, mean click vector) and max cos over the clicks


@dataclasses.dataclass
class DinSettings:
    """DIN's target attention (also the multi-channel family's click and page-view channels)."""
    attention_units: List[int] = setting([80, 40], min=1)


@dataclasses.dataclass
class DienSettings:
    gru_units: int = setting(0, min=0)           # 0: the candidate embedding width
    aux_loss_weight: float = setting(1.0, min=0.0)   # the paper's alpha; 0 drops the auxiliary net
    aux_units: List[int] = setting([100, 50], min=1)
    aux_negative_tries: int = setting(4, min=1)


@dataclasses.dataclass
class BstSettings:
    """The Behavior Sequence Transformer (also the double-channel family's sequence channel
    and the multi-channel family's ``click_encoder: transformer``)."""
    transformer_layers: int = setting(1, min=1)
    transformer_heads: int = setting(8, min=1)
    transformer_ff_units: Optional[int] = setting(None, min=1)   # None: the model width
    transformer_dropout: float = setting(0.0, min=0.0, below=1.0)
    position_dim: int = setting(8, min=1)
    bst_pooling: str = setting("candidate", choices=("candidate", "mean"))


@dataclasses.dataclass
class DoubleChannelSettings:
    feature_mlp_units: List[int] = setting([64], min=1)   # the hand-built feature channel's MLP


@dataclasses.dataclass
class MultiChannelSettings:
    click_encoder: str = setting("din", choices=("din", "transformer"))
    conversion_clusters_from: str = setting("category", choices=("category", "hash"))
    conversion_clusters: int = setting(64, min=1)   # for conversion_clusters_from: hash
    cluster_dim: int = setting(16, min=1)
    fusion: str = setting("concat", choices=("concat", "gated"))
    fusion_units: int = setting(32, min=1)          # for fusion: gated
    item_clusters: Any = None            # k-means label per item-table row: an array or a .npy path
    token_vectors: Any = None            # [token vocab, d] search-token vectors: an array or a .npy path
    token_vectors_trainable: bool = True


@dataclasses.dataclass
class WideDeepSettings:
    wide_buckets: int = setting(10007, min=1)   # hash buckets per wide cross
    wide_l2: float = setting(0.0, min=0.0)


@dataclasses.dataclass
class DeepFMSettings:
    fm_dim: int = setting(16, min=1)   # the width k of the field vectors the FM and the deep part share


@dataclasses.dataclass
class GbdtSettings:
    """TF-DF's gradient boosted trees (the ``gbdt`` family, docs/gbdt.md); the names are TF-DF's.

    Trained in one pass over the train split (``epochs``, ``batch_size``'s meaning for
    training, ``learning_rate`` and ``early_stopping_patience`` are Keras settings it
    ignores); the validation split stops the boosting once its loss has not improved
    for ``early_stopping_num_trees_look_ahead`` trees (0: all ``num_trees``), and the
    model keeps the trees up to its best validation loss."""
    num_trees: int = setting(500, min=1)
    max_depth: int = setting(6, min=1, max=30)
    shrinkage: float = setting(0.1, above=0.0, max=1.0)
    min_examples: int = setting(50, min=1)                            # per leaf
    subsample: float = setting(0.8, above=0.0, max=1.0)               # rows per tree
    num_candidate_attributes_ratio: float = setting(0.8, above=0.0, max=1.0)   # columns per split
    l2_regularization: float = setting(1.0, min=0.0)
    early_stopping_num_trees_look_ahead: int = setting(30, min=0)
    growing_strategy: str = setting("LOCAL", choices=("LOCAL", "BEST_FIRST_GLOBAL"))
    max_num_nodes: Optional[int] = setting(None, min=3)   # BEST_FIRST_GLOBAL's tree size; None: TF-DF's
    categorical_algorithm: str = setting("CART", choices=("CART", "RANDOM"))


GROUPS = {"din": DinSettings, "dien": DienSettings, "bst": BstSettings, "double_channel": DoubleChannelSettings,
          "multi_channel": MultiChannelSettings, "wide_deep": WideDeepSettings, "deepfm": DeepFMSettings,
          "gbdt": GbdtSettings}
# The groups each family reads.
FAMILY_GROUPS = {"din": ("din",), "dien": ("dien",), "bst": ("bst",), "dnn": (), "wide_deep": ("wide_deep",),
                 "deepfm": ("deepfm",), "gbdt": ("gbdt",),
                 "double_channel": ("double_channel", "bst"), "multi_channel": ("multi_channel", "din", "bst")}


@dataclasses.dataclass
class TrainerSettings(Section):
    """Every setting the Trainer reads; the family groups are filled from the flat keys."""
    model: str = setting("din", choices=FAMILY_NAMES)
    epochs: int = setting(3, min=1)
    batch_size: int = setting(1024, min=1)
    learning_rate: float = setting(0.001, above=0.0)
    seed: int = setting(0, min=0)
    early_stopping_patience: int = setting(1, min=0)   # epochs without a better validation AUC
    input_cache: str = "memory"                         # INPUT_CACHE_MODES; see the module docstring
    mixed_precision: bool = False                       # float16 on GPUs; ignored on CPU
    # TensorBoard weight histograms every this many epochs (0: off); loss, AUC, logloss and the
    # learning rate are always written, per epoch, to the Trainer's run directory
    tensorboard_histograms: int = setting(0, min=0)
    # the served probability's calibration, fitted on the validation split (`calibration.choose`):
    # auto (identity, platt or isotonic, whichever has the lowest out-of-fold log loss), platt,
    # isotonic, or none (the sampling-corrected probability as it is)
    calibration: str = setting("auto", choices=CALIBRATION_SETTINGS)
    embedding_dims: EmbeddingDims = dataclasses.field(default_factory=EmbeddingDims)
    embedding_l2: float = setting(0.0, min=0.0)
    dropout: float = setting(0.0, min=0.0, below=1.0)
    mlp_units: List[int] = setting([200, 80], min=1)
    activation: str = setting("dice", choices=ACTIVATIONS)
    match_features: bool = True                         # the in-graph user x post match features
    # share of post ids mapped to the OOV buckets per training step (layers.IdDropout), so that
    # posts unseen in training get trained rows; 0 = off
    id_dropout: float = setting(0.0, min=0.0, below=1.0)
    word2vec: Optional[Word2VecUse] = None              # None: no word vectors asked for
    din: DinSettings = dataclasses.field(default_factory=DinSettings)
    dien: DienSettings = dataclasses.field(default_factory=DienSettings)
    bst: BstSettings = dataclasses.field(default_factory=BstSettings)
    double_channel: DoubleChannelSettings = dataclasses.field(default_factory=DoubleChannelSettings)
    multi_channel: MultiChannelSettings = dataclasses.field(default_factory=MultiChannelSettings)
    wide_deep: WideDeepSettings = dataclasses.field(default_factory=WideDeepSettings)
    deepfm: DeepFMSettings = dataclasses.field(default_factory=DeepFMSettings)
    gbdt: GbdtSettings = dataclasses.field(default_factory=GbdtSettings)
    # PIPELINE_KEYS
    code_version: Optional[str] = None
    word_vectors_uri: Optional[str] = None
    raw_examples: bool = False   # the examples are raw: apply the transform graph in tf.data
    item_vectors: Any = None   # [item vocab, d] (NaN rows: no vector), an array or a .npy path
    declared_features: Optional[str] = None  # the declared item/user columns, JSON (`FeatureSpec.to_json`)

    def to_dict(self, every_group: bool = False) -> Dict[str, Any]:
        """The flat ``custom_config`` form: the shared settings and the groups ``model``
        reads (`FAMILY_GROUPS`; all of them with ``every_group``); unset optional
        settings are left out."""
        flat = to_plain(self)
        for group in GROUPS:
            values = flat.pop(group)
            if every_group or group in FAMILY_GROUPS[self.model]:
                flat.update(values)
        return flat

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, where: str = "trainer") -> "TrainerSettings":
        """The config file's flat ``trainer:`` section (`from_yaml`; None: the defaults)."""
        return cls.from_yaml({} if values is None else values, where or "trainer")

    @classmethod
    def from_yaml(cls, values: Mapping[str, Any], where: str = "trainer") -> "TrainerSettings":
        """The config file's ``trainer:`` section; the `PIPELINE_KEYS` are refused."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {type(values).__name__}")
        for key in sorted(set(values) & (set(PIPELINE_KEYS) | set(ARTIFACT_KEYS))):
            source = PIPELINE_KEYS.get(key) or ARTIFACT_KEYS[key]
            raise ConfigError(f"{where}.{key} is set by {source}, not in the trainer section")
        return cls.from_dict(values, where, allowed=sorted((SHARED_KEYS - set(PIPELINE_KEYS)) | set(KEY_GROUP)))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "custom_config",
                  allowed: List[str] | None = None) -> "TrainerSettings":
        """Flat settings (YAML keys plus the `PIPELINE_KEYS`) -> TrainerSettings; raises ConfigError."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {type(values).__name__}")
        for key in sorted(set(values) & set(ARTIFACT_KEYS)):
            raise ConfigError(f"{where}.{key} is not a trainer setting: it is set by {ARTIFACT_KEYS[key]}")
        shared = {k: v for k, v in values.items() if k not in KEY_GROUP}
        unknown = sorted(k for k in shared if k not in SHARED_KEYS)
        if unknown:
            allowed = allowed or sorted(SHARED_KEYS | set(KEY_GROUP))
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {allowed}")
        nested: Dict[str, Dict[str, Any]] = {g: {} for g in GROUPS}
        for key, value in values.items():
            if key in KEY_GROUP:
                nested[KEY_GROUP[key]][key] = value
        settings = build_typed(cls, shared, where)
        for group, group_values in nested.items():
            setattr(settings, group, build_typed(GROUPS[group], group_values, where))
        check_input_cache(f"{where}.input_cache", settings.input_cache)
        if settings.gbdt.max_num_nodes is not None and settings.gbdt.growing_strategy != "BEST_FIRST_GLOBAL":
            raise ConfigError(f"{where}.max_num_nodes limits trees grown with growing_strategy "
                              f"BEST_FIRST_GLOBAL, not {settings.gbdt.growing_strategy!r}: set both or neither")
        return settings


def check_input_cache(where: str, value: str) -> None:
    """One of `INPUT_CACHE_MODES`."""
    if value not in INPUT_CACHE_MODES:
        hint = (" (a path is not accepted: 'disk' caches in the Trainer's run directory, "
                "keyed to its examples)" if "/" in value else "")
        raise ConfigError(f"{where} must be 'memory', 'disk' or '' (off), got {value!r}{hint}")


def as_settings(config: "TrainerSettings | Mapping[str, Any]", where: str = "custom_config") -> TrainerSettings:
    """``config`` itself, or a flat mapping parsed with `TrainerSettings.from_dict`."""
    return config if isinstance(config, TrainerSettings) else TrainerSettings.from_dict(config, where)


KEY_GROUP: Dict[str, str] = {f.name: g for g, cls in GROUPS.items() for f in dataclasses.fields(cls)}
SHARED_KEYS = {f.name for f in dataclasses.fields(TrainerSettings)} - set(GROUPS)
if len(KEY_GROUP) != sum(len(dataclasses.fields(c)) for c in GROUPS.values()) or KEY_GROUP.keys() & SHARED_KEYS:
    raise TypeError("every trainer setting's name must be unique across the shared settings and the groups")
if set(FAMILY_GROUPS) != set(FAMILY_NAMES):
    raise TypeError("FAMILY_GROUPS must name the groups of every family in FAMILY_NAMES")
