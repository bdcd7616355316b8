"""Run configuration: one YAML file (see `configs/demo.yaml`), validated on load.

Unknown sections or keys are errors that name the key, so a typo never
silently falls back to a default.  The ``trainer:`` section is
`feedrank.train.settings.TrainerSettings`.

A file may inherit: ``base: demo.yaml`` (relative to the file's own directory)
reads that file first and then applies this one on top: mappings merge key by
key, at every depth; any other value (a list included) replaces the base's.
A base may itself have a base; a cycle is an error.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Tuple

import yaml

from feedrank import features as F
from feedrank.examples.settings import VALID_SPLITS, ExampleSettings
from feedrank.sessions.settings import SessionEvaluatorConfig, SessionsConfig, SessionTrainerSettings
from feedrank.train.settings import TrainerSettings
from feedrank.tune.settings import TunerSettings
from feedrank.typed import ConfigError

# The ``examples:`` section: fields and defaults declared once, in feedrank/examples/settings.py.
ExamplesConfig = ExampleSettings


@dataclasses.dataclass
class EvaluatorConfig:
    auc_floor: float = 0.6
    max_auc_regression: float = 0.002
    # Calibration gate: mean predicted CTR / observed CTR on the eval split must lie in this band.
    calibration_band: List[float] = dataclasses.field(default_factory=lambda: [0.9, 1.1])
    slice_features: List[str] = dataclasses.field(default_factory=lambda: ["category_id"])


@dataclasses.dataclass
class TransformConfig:
    """tf.Transform. ``statistics``: TFDV statistics of the raw and transformed
    data (nothing downstream reads them). ``materialize``: write the transformed
    examples; false makes the Trainer apply the transform graph in tf.data."""
    statistics: bool = True
    materialize: bool = True


@dataclasses.dataclass
class SimulateConfig:
    users: int = 20000
    items: int = 50000
    days: int = 14
    seed: int = 0
    # order-carrying behaviour (docs/simulator.md): "off", "realistic" or a comma-separated list
    mechanisms: str = "off"
    # event types written to the log ([] = all), e.g. [impression, click]: a log without
    # views, conversions and searches (the world is simulated in full either way)
    event_types: List[str] = dataclasses.field(default_factory=list)
    # "feed" (the classifieds feed) or "ecommerce" (shop sessions, docs/sessions.md)
    mode: str = "feed"
    categories: int = 40           # ecommerce only
    activity: float = 0.25         # ecommerce only: mean daily probability a user shops

    def ecommerce_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of `feedrank.events.simulator.ecommerce_io.simulate_ecommerce`."""
        return dict(users=self.users, items=self.items, categories=self.categories, days=self.days,
                    seed=self.seed, activity=self.activity)

    def kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of `feedrank.events.simulator.simulate` (all but the output dir)."""
        return dict(users=self.users, items=self.items, days=self.days, seed=self.seed,
                    mechanisms=self.mechanisms, event_types=list(self.event_types) or None)


@dataclasses.dataclass
class MlflowConfig:
    """MLflow tracking (docs/mlflow.md). An empty tracking_uri starts/reuses the local
    server (SQLite + artifacts under <run_root>/mlflow) on host:port (port 0 = a free one)."""
    tracking_uri: str = ""
    experiment: str = ""        # default: pipeline_name
    registered_model: str = ""  # default: <pipeline_name>-<model>
    host: str = "127.0.0.1"
    port: int = 5050


@dataclasses.dataclass
class Word2VecConfig:
    """Offline post and query-token vectors (docs/word2vec.md): the `Word2VecGen`
    component, fed to the Trainer, which uses them as ``trainer.word2vec`` says."""
    enabled: bool = False
    window_days: int = 7         # the days of clicks/searches that END where the train split starts
                                 # (<= examples.warmup_days)
    vector_size: int = 0         # 0: the trainer's item embedding dim
    token_vector_size: int = 0   # 0: the trainer's token embedding dim
    window: int = 5
    min_count: int = 1
    epochs: int = 10
    negative: int = 5
    sample: float = 0.001        # frequent-key down-sampling (0: none)
    seed: int = 0


@dataclasses.dataclass
class FeaturesConfig:
    """Declared extra columns of the ``items`` and ``users`` tables (docs/features.md):
    each a mapping ``{name, kind, ...options}``; `check_features` validates them and
    `load` declares them in `feedrank.features`."""
    items: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    users: List[Dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class AbConfig:
    """The online A/B test (docs/ab.md): the challenger's share of the users, the assignment
    salt, and the rule `promote --from-ab` applies: the CTR lift's lower 95% bound above
    ``min_lift``, the challenger's p99 latency and error rate (status >= 500) within bounds,
    and no sample-ratio mismatch (chi-square p >= ``srm_alpha``)."""
    share: float = 0.5             # challenger's share of the users (the transformer's --challenger-share)
    salt: str = "feedrank-ab"      # the assignment hash's salt (the transformer's --ab-salt)
    min_lift: float = 0.0          # relative CTR lift the lower bound must exceed (0.01 = +1 %)
    max_p99_ms: float = 250.0      # challenger's p99 server latency
    max_error_rate: float = 0.01   # challenger's share of requests answered with status >= 500
    srm_alpha: float = 0.001       # SRM: the test fails below this chi-square p-value
    show: int = 10                 # posts shown per request


# Per kind: the options a declared column may carry, with their defaults.
FEATURE_OPTIONS: Dict[str, Dict[str, Any]] = {
    "categorical": {"oov_buckets": 2, "frequency_threshold": 1},
    "numeric": {"default": 0.0, "log1p": False},
    "tokens": {"max_tokens": 16, "oov_buckets": 10, "frequency_threshold": 1},
}


MODES = ("ranking", "session")


@dataclasses.dataclass
class Config:
    pipeline_name: str = "feedrank"
    # "ranking" (the feed's CTR rankers) or "session" (the session recommender, docs/session_pipeline.md)
    mode: str = "ranking"
    input_base: str = "data/demo"
    run_root: str = "runs"
    push_root: str = "model_store"
    enable_cache: bool = True
    beam_pipeline_args: List[str] = dataclasses.field(
        default_factory=lambda: ["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    simulate: SimulateConfig = dataclasses.field(default_factory=SimulateConfig)
    examples: ExamplesConfig = dataclasses.field(default_factory=ExamplesConfig)
    transform: TransformConfig = dataclasses.field(default_factory=TransformConfig)
    trainer: TrainerSettings = dataclasses.field(default_factory=TrainerSettings)
    evaluator: EvaluatorConfig = dataclasses.field(default_factory=EvaluatorConfig)
    mlflow: MlflowConfig = dataclasses.field(default_factory=MlflowConfig)
    word2vec: Word2VecConfig = dataclasses.field(default_factory=Word2VecConfig)
    features: FeaturesConfig = dataclasses.field(default_factory=FeaturesConfig)
    ab: AbConfig = dataclasses.field(default_factory=AbConfig)
    # mode: session only (feedrank.sessions.settings.SessionsConfig)
    sessions: SessionsConfig = dataclasses.field(default_factory=SessionsConfig)
    # the genetic-algorithm Tuner (feedrank.tune.settings.TunerSettings, docs/tuning.md); mode: session
    tuner: TunerSettings = dataclasses.field(default_factory=TunerSettings)
    config_dir: str = "."

    @property
    def declared(self) -> Tuple[F.Declared, ...]:
        """The ``features`` section as `feedrank.features.Declared` columns."""
        return F.declared_from_config(self.features)

    @property
    def model_name(self) -> str:
        return self.trainer.model

    @property
    def pipeline_dir(self) -> str:
        return os.path.join(self.run_root, self.pipeline_name)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.pipeline_dir, "metadata.sqlite")

    @property
    def push_dir(self) -> str:
        return os.path.join(self.push_root, self.model_name)


def check_type(where: str, value: Any, default: Any) -> None:
    """Raises ConfigError unless ``value`` has the type of the field's ``default``."""
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, (str, list, dict)):
        ok, kind = isinstance(value, type(default)), f"a {type(default).__name__}"
    else:
        ok, kind = True, ""
    if not ok:
        raise ConfigError(f"{where} must be {kind}, got {value!r}")


def build_dataclass(cls, values: Dict[str, Any], where: str):
    """``cls(**values)`` with nested dataclasses built recursively; unknown
    keys and mistyped values are errors that name the key."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    kwargs = {}
    for k, v in values.items():
        default = getattr(cls(), k)
        if dataclasses.is_dataclass(default):
            if not isinstance(v, dict):
                raise ConfigError(f"{where}.{k} must be a mapping, got {type(v).__name__}")
            v = build_dataclass(type(default), v, f"{where}.{k}")
        else:
            check_type(f"{where}.{k}", v, default)
        kwargs[k] = v
    return cls(**kwargs)


def read_yaml_mapping(path: str, what: str = "config file") -> Dict[str, Any]:
    """The top-level mapping of a YAML file; ConfigError if missing, unparsable or not a mapping."""
    if not os.path.exists(path):
        raise ConfigError(f"{what} {path!r} does not exist")
    try:
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path!r} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path!r} must hold a mapping at the top level")
    return raw


def merge(base: Dict[str, Any], child: Dict[str, Any]) -> Dict[str, Any]:
    """``child`` on top of ``base``: mappings merge key by key, other values replace."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            value = merge(out[key], value)
        out[key] = value
    return out


def read_config(path: str, chain: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """A config file's mapping with its ``base`` chain applied (see the module docstring)."""
    raw = read_yaml_mapping(path)
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base must be a file name relative to the config's directory, got {base!r}")
    chain = chain + (os.path.realpath(path),)
    base_path = os.path.join(os.path.dirname(path), base)
    if os.path.realpath(base_path) in chain:
        names = " -> ".join(os.path.basename(p) for p in chain + (base_path,))
        raise ConfigError(f"config files inherit in a cycle: {names}")
    if not os.path.exists(base_path):
        raise ConfigError(f"{path}: base config file {base_path!r} does not exist")
    return merge(read_config(base_path, chain), raw)


def load(path: str, overrides: Dict[str, Any] | None = None) -> Config:
    """Reads and validates a YAML config (and its ``base`` chain); ``overrides`` replace
    whole top-level keys; relative paths stay relative to the CWD."""
    raw = read_config(path)
    raw.update(overrides or {})
    trainer = raw.pop("trainer", {})
    if not isinstance(trainer, dict):
        raise ConfigError(f"{os.path.basename(path)}: trainer must be a mapping, got {type(trainer).__name__}")
    sessions = raw.pop("sessions", None)
    tuner = raw.pop("tuner", None)
    session_evaluator = raw.pop("evaluator", {}) if raw.get("mode") == "session" else None
    cfg = build_dataclass(Config, raw, os.path.basename(path))
    check_mode(cfg, sessions)
    if cfg.mode == "session":   # the sessions, trainer and evaluator sections of feedrank/sessions/settings.py
        cfg.sessions = SessionsConfig.from_mapping(sessions or {}, "sessions")
        cfg.trainer = SessionTrainerSettings.from_yaml(trainer, "trainer")
        cfg.evaluator = SessionEvaluatorConfig.from_mapping(session_evaluator, "evaluator")
    else:
        cfg.trainer = TrainerSettings.from_yaml(trainer, "trainer")
    cfg.tuner = TunerSettings.from_mapping(tuner, "tuner")
    if cfg.tuner.enabled and (cfg.mode != "session" or cfg.trainer.model != "drnn"):
        raise ConfigError("tuner.enabled: the pipeline tunes the session DRNN (mode: session, trainer.model: drnn); "
                          f"this config has mode {cfg.mode!r}, model {cfg.trainer.model!r} (docs/tuning.md)")
    cfg.config_dir = os.path.dirname(os.path.abspath(path))
    ex = cfg.examples
    if not 0.0 < ex.negative_sampling_rate <= 1.0:
        raise ConfigError(f"examples.negative_sampling_rate must be in (0, 1], got {ex.negative_sampling_rate}")
    if not 0.0 <= ex.max_bad_fraction <= 1.0:
        raise ConfigError(f"examples.max_bad_fraction must be in [0, 1], got {ex.max_bad_fraction}")
    if ex.eval_days < 1:
        raise ConfigError(f"examples.eval_days must be >= 1, got {ex.eval_days}")
    if ex.valid_split not in VALID_SPLITS:
        raise ConfigError(f"examples.valid_split must be one of {list(VALID_SPLITS)}, got {ex.valid_split!r}")
    if ex.valid_split == "last_days" and ex.valid_days < 1:
        raise ConfigError(f"examples.valid_days must be >= 1, got {ex.valid_days}")
    if ex.valid_split == "user_hash" and not 0.0 < ex.valid_user_share < 1.0:
        raise ConfigError(f"examples.valid_user_share must be in (0, 1), got {ex.valid_user_share}")
    for key in ("warmup_days", "min_ts", "max_future_skew_s", "feature_delay_s"):
        if getattr(ex, key) < 0:
            raise ConfigError(f"examples.{key} must be >= 0, got {getattr(ex, key)}")
    if cfg.mode == "ranking":
        check_evaluator(cfg.evaluator)
    check_word2vec(cfg)
    check_simulate(cfg.simulate)
    check_features(cfg.features)
    check_ab(cfg.ab)
    F.declare(cfg.declared)
    return cfg


def check_mode(cfg: Config, sessions: Any) -> None:
    """``mode`` is a known one; the ``sessions`` section only in ``mode: session``; the simulator's mode."""
    if cfg.mode not in MODES:
        raise ConfigError(f"mode must be one of {list(MODES)}, got {cfg.mode!r}")
    if sessions is not None and cfg.mode != "session":
        raise ConfigError(f"the sessions section applies only to mode: session (this config's mode is {cfg.mode!r})")
    if cfg.simulate.mode not in ("feed", "ecommerce"):
        raise ConfigError(f"simulate.mode must be 'feed' or 'ecommerce', got {cfg.simulate.mode!r}")
    if cfg.simulate.categories < 2 or not 0.0 < cfg.simulate.activity <= 1.0:
        raise ConfigError(f"simulate.categories must be >= 2 and simulate.activity in (0, 1], got "
                          f"{cfg.simulate.categories} and {cfg.simulate.activity}")
    if cfg.mode == "session" and cfg.simulate.mode != "ecommerce":
        raise ConfigError("mode: session reads a shop's sessions: set simulate.mode: ecommerce "
                          "(what --simulate-if-missing writes)")


def check_features(section: FeaturesConfig) -> None:
    """Each declared column: a mapping with an identifier ``name`` (unique in its table, not
    a built-in column), a known ``kind`` and only that kind's options, correctly typed."""
    for table in F.DECLARED_TABLES:
        seen = set()
        for i, row in enumerate(getattr(section, table)):
            where = f"features.{table}[{i}]"
            if not isinstance(row, dict):
                raise ConfigError(f"{where} must be a mapping {{name, kind, ...}}, got {row!r}")
            name, kind = row.get("name"), row.get("kind")
            if not isinstance(name, str) or not name.isidentifier():
                raise ConfigError(f"{where}.name must be an identifier (a column of the {table} table), got {name!r}")
            where = f"features.{table}.{name}"
            if name in F.BUILTIN_COLUMNS:
                raise ConfigError(f"{where}: {name!r} is a built-in column (built-ins: {list(F.BUILTIN_COLUMNS)}); "
                                  f"declare only extra columns")
            if name in seen:
                raise ConfigError(f"{where}: declared twice in features.{table}")
            seen.add(name)
            if kind not in FEATURE_OPTIONS:
                raise ConfigError(f"{where}.kind must be one of {list(FEATURE_OPTIONS)}, got {kind!r}")
            options = FEATURE_OPTIONS[kind]
            unknown = sorted(set(row) - set(options) - {"name", "kind"})
            if unknown:
                raise ConfigError(f"{where}: unknown option(s) {unknown} for kind {kind!r}; allowed: {sorted(options)}")
            for key, default in options.items():
                if key in row:
                    check_type(f"{where}.{key}", row[key], default)
                    if isinstance(default, int) and not isinstance(default, bool) and row[key] < 1:
                        raise ConfigError(f"{where}.{key} must be >= 1, got {row[key]}")


def check_ab(ab: AbConfig) -> None:
    """The `ab` section: a share strictly between 0 and 1, a non-empty salt, non-negative
    thresholds, an SRM alpha in (0, 1) and at least one post shown."""
    if not 0.0 < ab.share < 1.0:
        raise ConfigError(f"ab.share must be in (0, 1) (the challenger's share of the users), got {ab.share}")
    if not ab.salt:
        raise ConfigError("ab.salt must be a non-empty string (it keys the user -> arm hash)")
    if ab.min_lift <= -1.0:
        raise ConfigError(f"ab.min_lift must be > -1 (a relative lift; 0.01 = +1 %), got {ab.min_lift}")
    for key in ("max_p99_ms", "max_error_rate"):
        if getattr(ab, key) < 0:
            raise ConfigError(f"ab.{key} must be >= 0, got {getattr(ab, key)}")
    if ab.max_error_rate > 1:
        raise ConfigError(f"ab.max_error_rate must be a share in [0, 1], got {ab.max_error_rate}")
    if not 0.0 < ab.srm_alpha < 1.0:
        raise ConfigError(f"ab.srm_alpha must be in (0, 1), got {ab.srm_alpha}")
    if ab.show < 1:
        raise ConfigError(f"ab.show must be >= 1, got {ab.show}")


def check_simulate(sim: SimulateConfig) -> None:
    """The `simulate` section's mechanisms spec names known presets or mechanisms,
    and its event types are known ones, impressions included."""
    from feedrank.events.simulator import mechanisms

    try:
        mechanisms.parse(sim.mechanisms)
    except ValueError as e:
        raise ConfigError(f"simulate.mechanisms: {e}") from None
    from feedrank.events.simulator.generate import check_event_types

    try:
        check_event_types(sim.event_types)
    except ValueError as e:
        raise ConfigError(f"simulate.event_types: {e}") from None


def check_evaluator(ev: EvaluatorConfig) -> None:
    """The `evaluator` section: the AUC floor in [0, 1], a non-negative regression margin, and a
    calibration band of two numbers around 1 (mean predicted CTR / observed CTR)."""
    if not 0.0 <= ev.auc_floor <= 1.0:
        raise ConfigError(f"evaluator.auc_floor must be in [0, 1], got {ev.auc_floor}")
    if ev.max_auc_regression < 0:
        raise ConfigError(f"evaluator.max_auc_regression must be >= 0 (the AUC a candidate may lose "
                          f"against the baseline), got {ev.max_auc_regression}")
    band = ev.calibration_band
    numbers = len(band) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in band)
    if not numbers or not 0 < band[0] < band[1] or not band[0] <= 1.0 <= band[1]:
        raise ConfigError(f"evaluator.calibration_band must be two numbers [lo, hi] with 0 < lo <= 1 <= hi "
                          f"and lo < hi (mean predicted CTR / observed CTR; 1 is calibrated), got {band!r}")


def check_word2vec(cfg: Config) -> None:
    """The `word2vec` section's ranges, its window inside the warm-up days, and ``trainer.word2vec``
    only with vectors to use."""
    w2v = cfg.word2vec
    for key in ("window_days", "window", "min_count", "epochs", "negative"):
        if getattr(w2v, key) < 1:
            raise ConfigError(f"word2vec.{key} must be >= 1, got {getattr(w2v, key)}")
    for key in ("vector_size", "token_vector_size"):
        if getattr(w2v, key) < 0:
            raise ConfigError(f"word2vec.{key} must be >= 0 (0: the trainer's embedding dim), got {getattr(w2v, key)}")
    if w2v.sample < 0:
        raise ConfigError(f"word2vec.sample must be >= 0, got {w2v.sample}")
    if w2v.enabled and cfg.examples.warmup_days < w2v.window_days:
        raise ConfigError(
            f"word2vec.window_days ({w2v.window_days}) exceeds examples.warmup_days "
            f"({cfg.examples.warmup_days}): the vectors train on the days before the train split, which "
            f"must be warm-up days without examples, or train examples would get vectors that saw their "
            f"own clicks; set examples.warmup_days >= word2vec.window_days")
    use = getattr(cfg.trainer, "word2vec", None)   # none in mode: session
    if use is not None and (use.init or use.similarity) and not w2v.enabled:
        raise ConfigError("trainer.word2vec uses word vectors, but the word2vec section is not enabled "
                          "(set word2vec.enabled: true)")
