"""Run configuration: one YAML file (see `configs/demo.yaml`), validated on load.

Every section is a `feedrank.typed.Section` whose fields declare their type,
range, choices and meaning; `load` builds them all with `feedrank.typed`, so an
unknown key, a wrong type or a value out of range is a one-line `ConfigError`
that names the file and the key path (``run.yaml: examples.label_window_s must
be an integer >= 0 ...``) and a typo never silently falls back to a default.
The rules that span sections are `check_rules`.  The ``trainer:`` section is
`feedrank.train.settings.TrainerSettings` (in ``mode: session``, the classes of
`MODE_SECTIONS`).

A file may inherit: ``base: demo.yaml`` (relative to the file's own directory)
reads that file first and then applies this one on top: mappings merge key by
key, at every depth; any other value (a list included) replaces the base's.
A base may itself have a base; a cycle is an error.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Dict, List, Mapping, Tuple

import yaml

from feedrank import features as F
from feedrank.examples.settings import ExampleSettings
from feedrank.sessions.settings import SessionEvaluatorConfig, SessionsConfig, SessionTrainerSettings
from feedrank.train.settings import TrainerSettings
from feedrank.tune.settings import TunerSettings
from feedrank.typed import ConfigError, Section, build_typed, check_value, setting

# The ``examples:`` section: fields, ranges and defaults declared once, in feedrank/examples/settings.py.
ExamplesConfig = ExampleSettings

CALIBRATION_BAND = ("two numbers [lo, hi] with 0 < lo <= 1 <= hi and lo < hi "
                    "(mean predicted CTR / observed CTR; 1 is calibrated)")


@dataclasses.dataclass
class EvaluatorConfig(Section):
    """The ``evaluator:`` section in ``mode: ranking``: the blessing gates."""
    SECTION = "evaluator"
    auc_floor: float = setting(0.6, min=0, max=1, doc="the eval AUC a candidate must reach")
    max_auc_regression: float = setting(0.002, min=0, doc="the AUC a candidate may lose against the baseline")
    # Calibration gate: mean predicted CTR / observed CTR on the eval split must lie in this band.
    calibration_band: List[float] = setting([0.9, 1.1], above=0, doc=CALIBRATION_BAND)
    slice_features: List[str] = setting(["category_id"])

    def check(self, where: str) -> None:
        band = self.calibration_band
        if len(band) != 2 or not 0 < band[0] < band[1] or not band[0] <= 1.0 <= band[1]:
            raise ConfigError(f"{where}.calibration_band must be {CALIBRATION_BAND}, got {band!r}")


@dataclasses.dataclass
class TransformConfig(Section):
    """tf.Transform. ``statistics``: TFDV statistics of the raw and transformed
    data (nothing downstream reads them). ``materialize``: write the transformed
    examples; false makes the Trainer apply the transform graph in tf.data."""
    SECTION = "transform"
    statistics: bool = True
    materialize: bool = True


@dataclasses.dataclass
class SimulateConfig(Section):
    """The ``simulate:`` section: the synthetic world ``--simulate-if-missing`` writes (docs/simulator.md)."""
    SECTION = "simulate"
    users: int = setting(20000, min=1)
    items: int = setting(50000, min=1)
    days: int = setting(14, min=1)
    seed: int = 0
    mechanisms: str = setting("off", doc="order-carrying behaviour: 'off', 'realistic' or a comma-separated "
                                         "list (docs/simulator.md)")
    # event types written to the log ([] = all), e.g. [impression, click]: a log without
    # views, conversions and searches (the world is simulated in full either way)
    event_types: List[str] = setting([])
    # "feed" (the classifieds feed) or "ecommerce" (shop sessions, docs/sessions.md)
    mode: str = setting("feed", choices=("feed", "ecommerce"))
    categories: int = setting(40, min=2, doc="ecommerce only")
    activity: float = setting(0.25, above=0, max=1, doc="ecommerce only: the mean daily probability a user shops")

    def check(self, where: str) -> None:
        """The mechanisms spec names known presets or mechanisms; the event types are known
        ones, impressions included."""
        from feedrank.events.simulator import mechanisms
        from feedrank.events.simulator.generate import check_event_types

        try:
            mechanisms.parse(self.mechanisms)
        except ValueError as e:
            raise ConfigError(f"{where}.mechanisms: {e}") from None
        try:
            check_event_types(self.event_types)
        except ValueError as e:
            raise ConfigError(f"{where}.event_types: {e}") from None

    def ecommerce_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of `feedrank.events.simulator.ecommerce_io.simulate_ecommerce`."""
        return dict(users=self.users, items=self.items, categories=self.categories, days=self.days,
                    seed=self.seed, activity=self.activity)

    def kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of `feedrank.events.simulator.simulate` (all but the output dir)."""
        return dict(users=self.users, items=self.items, days=self.days, seed=self.seed,
                    mechanisms=self.mechanisms, event_types=list(self.event_types) or None)


@dataclasses.dataclass
class MlflowConfig(Section):
    """MLflow tracking (docs/mlflow.md). An empty tracking_uri starts/reuses the local
    server (SQLite + artifacts under <run_root>/mlflow) on host:port (port 0 = a free one)."""
    SECTION = "mlflow"
    tracking_uri: str = ""
    experiment: str = ""        # default: pipeline_name
    registered_model: str = ""  # default: <pipeline_name>-ranker (mode session: -recommender)
    host: str = "127.0.0.1"
    port: int = setting(5050, min=0, max=65535, doc="0: a free port")


@dataclasses.dataclass
class Word2VecConfig(Section):
    """Offline post and query-token vectors (docs/word2vec.md): the `Word2VecGen`
    component, fed to the Trainer, which uses them as ``trainer.word2vec`` says."""
    SECTION = "word2vec"
    enabled: bool = False
    window_days: int = setting(7, min=1, doc="the days of clicks/searches that end where the train split "
                                             "starts (<= examples.warmup_days)")
    vector_size: int = setting(0, min=0, doc="0: the trainer's item embedding dim")
    token_vector_size: int = setting(0, min=0, doc="0: the trainer's token embedding dim")
    window: int = setting(5, min=1)
    min_count: int = setting(1, min=1)
    epochs: int = setting(10, min=1)
    negative: int = setting(5, min=1)
    sample: float = setting(0.001, min=0, doc="frequent-key down-sampling; 0: none")
    seed: int = 0


# Per kind: the options a declared column may carry, with their defaults.
FEATURE_OPTIONS: Dict[str, Dict[str, Any]] = {
    "categorical": {"oov_buckets": 2, "frequency_threshold": 1},
    "numeric": {"default": 0.0, "log1p": False},
    "tokens": {"max_tokens": 16, "oov_buckets": 10, "frequency_threshold": 1},
}
DECLARED_COLUMN = "a declared column {name, kind, ...options}"


@dataclasses.dataclass
class FeaturesConfig(Section):
    """Declared extra columns of the ``items`` and ``users`` tables (docs/features.md):
    each a mapping ``{name, kind, ...options}`` (`FEATURE_OPTIONS`)."""
    SECTION = "features"
    items: List[Dict[str, Any]] = setting([], doc=DECLARED_COLUMN)
    users: List[Dict[str, Any]] = setting([], doc=DECLARED_COLUMN)
    # each history entry carries its event's age bucket (`features.AGE_FEATURES`)
    event_ages: bool = True
    # each declared categorical item column also reaches the histories (`features.history_sequences`)
    history_attributes: bool = True
    # the candidates carry the user's own earlier impressions of them (`features.SEEN_FEATURES`)
    seen_before: bool = True

    def check(self, where: str) -> None:
        """Each declared column: an identifier ``name`` (unique in its table, not a built-in
        column), a known ``kind`` and only that kind's options, correctly typed; the features
        they make do not clash with other features (`features.FeatureSpec`)."""
        for table in F.DECLARED_TABLES:
            seen = set()
            for i, row in enumerate(getattr(self, table)):
                name, kind = row.get("name"), row.get("kind")
                if not isinstance(name, str) or not name.isidentifier():
                    raise ConfigError(f"{where}.{table}[{i}].name must be an identifier (a column of the {table} "
                                      f"table), got {name!r}")
                at = f"{where}.{table}.{name}"
                if name in F.BUILTIN_COLUMNS:
                    raise ConfigError(f"{at}: {name!r} is a built-in column (built-ins: {list(F.BUILTIN_COLUMNS)}); "
                                      f"declare only extra columns")
                if name in seen:
                    raise ConfigError(f"{at}: declared twice in {where}.{table}")
                seen.add(name)
                check_value(f"{at}.kind", kind, str, {"choices": list(FEATURE_OPTIONS)})
                options = FEATURE_OPTIONS[kind]
                unknown = sorted(set(row) - set(options) - {"name", "kind"})
                if unknown:
                    raise ConfigError(f"{at}: unknown option(s) {unknown} for kind {kind!r}; "
                                      f"allowed: {sorted(options)}")
                for key, default in options.items():
                    if key in row:
                        counts = isinstance(default, int) and not isinstance(default, bool)
                        check_value(f"{at}.{key}", row[key], type(default), {"min": 1} if counts else {})
        try:   # feature names: a declared feature or history sequence must not clash with another
            F.FeatureSpec.from_config(self)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None


@dataclasses.dataclass
class AbConfig(Section):
    """The online A/B test (docs/ab.md): the challenger's share of the users, the assignment
    salt, and the rule `promote --from-ab` applies: the CTR lift's lower 95% bound above
    ``min_lift``, the challenger's p99 latency and error rate (status >= 500) within bounds,
    and no sample-ratio mismatch (chi-square p >= ``srm_alpha``)."""
    SECTION = "ab"
    share: float = setting(0.5, above=0, below=1, doc="the challenger's share of the users, the transformer's "
                                                      "--challenger-share")
    salt: str = setting("feedrank-ab", doc="a non-empty string: the user -> arm hash's salt, the transformer's "
                                           "--ab-salt")
    min_lift: float = setting(0.0, above=-1, doc="the relative CTR lift the lower bound must exceed; 0.01 = +1 %")
    max_p99_ms: float = setting(250.0, min=0, doc="the challenger's p99 server latency")
    max_error_rate: float = setting(0.01, min=0, max=1, doc="the challenger's share of requests answered "
                                                            "with status >= 500")
    srm_alpha: float = setting(0.001, above=0, below=1, doc="SRM: the test fails below this chi-square p-value")
    show: int = setting(10, min=1, doc="posts shown per request")

    def check(self, where: str) -> None:
        if not self.salt:
            raise ConfigError(f"{where}.salt must be a non-empty string (it keys the user -> arm hash)")


MODES = ("ranking", "session")


@dataclasses.dataclass
class Config:
    """A run config: the top-level keys and one `feedrank.typed.Section` per section."""
    pipeline_name: str = "feedrank"
    # "ranking" (the feed's CTR rankers) or "session" (the session recommender, docs/session_pipeline.md)
    mode: str = setting("ranking", choices=MODES)
    input_base: str = "data/demo"
    run_root: str = "runs"
    push_root: str = "model_store"
    enable_cache: bool = True
    beam_pipeline_args: List[str] = setting(["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    simulate: SimulateConfig = dataclasses.field(default_factory=SimulateConfig)
    examples: ExamplesConfig = dataclasses.field(default_factory=ExamplesConfig)
    transform: TransformConfig = dataclasses.field(default_factory=TransformConfig)
    trainer: TrainerSettings = dataclasses.field(default_factory=TrainerSettings)
    evaluator: EvaluatorConfig = dataclasses.field(default_factory=EvaluatorConfig)
    mlflow: MlflowConfig = dataclasses.field(default_factory=MlflowConfig)
    word2vec: Word2VecConfig = dataclasses.field(default_factory=Word2VecConfig)
    features: FeaturesConfig = dataclasses.field(default_factory=FeaturesConfig)
    ab: AbConfig = dataclasses.field(default_factory=AbConfig)
    # mode: session only; in mode: session, trainer and evaluator are the MODE_SECTIONS' classes
    sessions: SessionsConfig = dataclasses.field(default_factory=SessionsConfig)
    # the genetic-algorithm Tuner (feedrank.tune.settings.TunerSettings, docs/tuning.md); mode: session
    tuner: TunerSettings = dataclasses.field(default_factory=TunerSettings)
    config_dir: str = "."

    @functools.cached_property
    def features_spec(self) -> F.FeatureSpec:
        """The run's feature contract: the built-in features plus the ``features``
        section's declared columns (built once per config)."""
        return F.FeatureSpec.from_config(self.features)

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


# The sections whose class depends on the config's ``mode``.
MODE_SECTIONS: Dict[str, Dict[str, type]] = {
    "ranking": {"trainer": TrainerSettings, "evaluator": EvaluatorConfig},
    "session": {"trainer": SessionTrainerSettings, "evaluator": SessionEvaluatorConfig, "sessions": SessionsConfig},
}


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


def apply_sets(raw: Dict[str, Any], sets: List[str]) -> Dict[str, Any]:
    """``raw`` with each ``KEY=VALUE`` of ``sets`` applied: a dotted key names a nested key
    (``trainer.epochs=2``), the value is read as YAML (``2`` a number, ``[32, 16]`` a list,
    ``true`` a bool, anything else text).  The result is validated like the file."""
    out = dict(raw)
    for item in sets:
        key, sep, text = item.partition("=")
        path = [k.strip() for k in key.split(".")]
        if not sep or not all(path):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. trainer.epochs=2")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        node = out
        for depth, k in enumerate(path[:-1]):
            child = node.get(k)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(path[:depth + 1])} is a value, not a section")
            node[k] = child = dict(child)
            node = child
        node[path[-1]] = value
    return out


def add_config_arguments(p, default: str = "configs/demo.yaml") -> None:
    """``--config``, ``--set KEY=VALUE`` (repeatable) and ``--tracking-uri`` on a subcommand;
    `load_args` reads them."""
    p.add_argument("--config", default=default, help="YAML run config (default: %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set_values",
                   help="override one config key, dotted, value as YAML (e.g. trainer.epochs=2); "
                        "validated like the file; repeatable")
    p.add_argument("--tracking-uri", metavar="URL",
                   help="the MLflow tracking server, e.g. http://127.0.0.1:5000 (default: the config's "
                        "mlflow.tracking_uri, else $MLFLOW_TRACKING_URI, else the local server)")


def load_args(args, overrides: Dict[str, Any] | None = None) -> Config:
    """The config of a subcommand's `add_config_arguments`: ``--config`` with ``--set`` and
    ``--tracking-uri`` applied (after ``overrides``)."""
    sets = list(getattr(args, "set_values", None) or [])
    if getattr(args, "tracking_uri", None):
        sets.append(f"mlflow.tracking_uri={args.tracking_uri}")
    return load(args.config, overrides, sets)


def load(path: str, overrides: Dict[str, Any] | None = None, sets: List[str] | None = None) -> Config:
    """Reads and validates a YAML config (and its ``base`` chain); ``overrides`` replace
    whole top-level keys, then ``sets`` (`apply_sets`) single keys; relative paths stay
    relative to the CWD.  A bad key or value is a ConfigError naming the file and the key."""
    raw = read_config(path)
    raw.update(overrides or {})
    try:
        raw = apply_sets(raw, list(sets or []))
    except ConfigError as e:
        raise ConfigError(f"{os.path.basename(path)}: {e}") from None
    try:
        cfg = validate(raw)
    except ConfigError as e:
        raise ConfigError(f"{os.path.basename(path)}: {e}") from None
    cfg.config_dir = os.path.dirname(os.path.abspath(path))
    return cfg


def validate(raw: Mapping[str, Any]) -> Config:
    """A config's mapping (a file with its ``base`` chain applied) as a `Config`: every
    section built and checked by `feedrank.typed`, those of `MODE_SECTIONS` by the
    config's mode, then `check_rules`."""
    raw = dict(raw)
    mode_field = next(f for f in dataclasses.fields(Config) if f.name == "mode")
    mode = check_value("mode", raw.get("mode", mode_field.default), str, mode_field.metadata)
    if raw.get("sessions") is not None and mode != "session":
        raise ConfigError(f"the sessions section applies only to mode: session (this config's mode is {mode!r})")
    by_mode = {key: cls.from_mapping(raw.pop(key, None), key) for key, cls in MODE_SECTIONS[mode].items()}
    cfg = build_typed(Config, raw)
    for key, section in by_mode.items():
        setattr(cfg, key, section)
    check_rules(cfg)
    return cfg


def check_rules(cfg: Config) -> None:
    """The rules that span sections (each section's own are its `Section.check`)."""
    if cfg.mode == "session" and cfg.simulate.mode != "ecommerce":
        raise ConfigError("mode: session reads a shop's sessions: set simulate.mode: ecommerce "
                          "(what --simulate-if-missing writes)")
    if cfg.mode == "session" and cfg.trainer.patience and not cfg.sessions.val_days:
        raise ConfigError(f"trainer.patience: {cfg.trainer.patience} stops early on the val split, which "
                          f"sessions.val_days: 0 leaves empty: set sessions.val_days >= 1 or trainer.patience: 0")
    if cfg.tuner.enabled and (cfg.mode != "session" or cfg.trainer.model != "drnn"):
        raise ConfigError("tuner.enabled: the pipeline tunes the session DRNN (mode: session, trainer.model: drnn); "
                          f"this config has mode {cfg.mode!r}, model {cfg.trainer.model!r} (docs/tuning.md)")
    w2v = cfg.word2vec
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
