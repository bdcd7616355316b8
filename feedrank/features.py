"""The single feature contract.

Every stage imports this module: the example generator writes these features,
`preprocessing_fn` transforms them, every model family reads the transformed
names, the export signatures accept the raw serving features and the serving
code sends them.  When a feature is added, exactly this file says so.

The built-in features are module constants.  A run's user-declared columns of
the ``items`` / ``users`` tables (docs/features.md) make a `FeatureSpec`: an
immutable value built once from the config (`FeatureSpec.from_config`) and
passed by value, as JSON where it crosses a process boundary (component
properties, Transform's custom_config, the Trainer's settings, the file beside
an exported model).  Nothing in this module changes after import.

Naming:
  * raw features are what the example generator writes into tf.Examples;
  * transformed features are ``<raw name>_idx`` for vocabulary lookups (0 is
    padding, 1..V are vocabulary entries, V+1..V+OOV are OOV buckets) and
    ``<raw name>_x`` for normalised numbers.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Dict, List, Tuple

# --------------------------------------------------------------------------
# Labels and metadata
# --------------------------------------------------------------------------
LABEL = "label"                    # click within the label window (0/1)
CONVERSION_LABEL = "conversion"    # call/chat within the label window (0/1)
LABELS: Tuple[str, ...] = (LABEL, CONVERSION_LABEL)

# Metadata: written for evaluation (GAUC, oracle join, slicing), never a model input.
IMPRESSION_ID = "impression_id"    # the impression's event_id
USER_ID = "user_id"
TS = "ts"                          # impression time, unix seconds
METADATA: Tuple[str, ...] = (IMPRESSION_ID, USER_ID, TS)


@dataclasses.dataclass(frozen=True)
class Vocab:
    """A tf.Transform vocabulary shared by one or more raw features.

    With ``labels`` the vocabulary is fixed and ordered instead of computed from
    the data: label i has id i + 1, any other value the OOV id
    ``len(labels) + 1`` (`num_oov_buckets` is 1), so ids keep the labels'
    order (the event-age buckets: a larger id is an older event)."""

    name: str
    num_oov_buckets: int
    frequency_threshold: int = 1
    labels: Tuple[str, ...] = ()

    @property
    def size(self) -> int | None:
        """The embedding table size of a fixed vocabulary (padding + labels + OOV); None otherwise."""
        return 1 + len(self.labels) + self.num_oov_buckets if self.labels else None


ITEM_VOCAB = Vocab("item", num_oov_buckets=20)
CATEGORY_VOCAB = Vocab("category", num_oov_buckets=2)
REGION_VOCAB = Vocab("region", num_oov_buckets=2)
TOKEN_VOCAB = Vocab("token", num_oov_buckets=10)
BUILTIN_VOCABS: Tuple[Vocab, ...] = (ITEM_VOCAB, CATEGORY_VOCAB, REGION_VOCAB, TOKEN_VOCAB)


@dataclasses.dataclass(frozen=True)
class IdFeature:
    """A scalar string id looked up in a (shared) vocabulary."""

    name: str
    vocab: Vocab
    side: str  # "candidate" or "user"


@dataclasses.dataclass(frozen=True)
class SeqFeature:
    """A behaviour sequence: most recent last, at most ``max_len`` values.

    ``shares_with`` names the candidate feature whose embedding table this
    sequence uses (the DIN/DIEN convention: history and candidate share ids).
    """

    name: str
    vocab: Vocab
    channel: str       # "click", "view", "conversion" or "search"
    max_len: int
    shares_with: str | None
    ages: bool = False  # the channel's event ages (`age_labels`), aligned entry by entry


@dataclasses.dataclass(frozen=True)
class DenseFeature:
    """A float feature; ``log1p`` features are log-transformed before z-scoring."""

    name: str
    side: str          # "candidate", "user" or "cross"
    default: float = 0.0
    log1p: bool = False
    min_value: float | None = None
    max_value: float | None = None


@dataclasses.dataclass(frozen=True)
class BagFeature:
    """An unordered bag of string tokens (a declared ``tokens`` column): VarLen
    strings in the raw example, ``<name>_idx`` [B, max_len] padded with PAD_ID
    after Transform, like a sequence."""

    name: str
    vocab: Vocab
    side: str          # "candidate" or "user"
    max_len: int


# --------------------------------------------------------------------------
# Candidate (post) side
# --------------------------------------------------------------------------
ITEM_ID = IdFeature("item_id", ITEM_VOCAB, "candidate")
CATEGORY_ID = IdFeature("category_id", CATEGORY_VOCAB, "candidate")
REGION_ID = IdFeature("region_id", REGION_VOCAB, "candidate")

# --------------------------------------------------------------------------
# User side
# --------------------------------------------------------------------------
USER_REGION_ID = IdFeature("user_region_id", REGION_VOCAB, "user")

BUILTIN_ID_FEATURES: Tuple[IdFeature, ...] = (ITEM_ID, CATEGORY_ID, REGION_ID, USER_REGION_ID)

# --------------------------------------------------------------------------
# Behaviour sequences, strictly before the impression time
# --------------------------------------------------------------------------
CLICK_LEN = 50
VIEW_LEN = 50
CONVERSION_LEN = 20
SEARCH_LEN = 30

CLICK_ITEMS = SeqFeature("click_item_ids", ITEM_VOCAB, "click", CLICK_LEN, "item_id")
CLICK_CATEGORIES = SeqFeature("click_category_ids", CATEGORY_VOCAB, "click", CLICK_LEN, "category_id")
CLICK_REGIONS = SeqFeature("click_region_ids", REGION_VOCAB, "click", CLICK_LEN, "region_id")
# Page views of posts: far denser than clicks (a user views ~10x more posts
# than they click from the feed), so the strongest interest signal of a
# sparse-click user.  Aligned with the click channel (same three ids).
VIEW_ITEMS = SeqFeature("view_item_ids", ITEM_VOCAB, "view", VIEW_LEN, "item_id")
VIEW_CATEGORIES = SeqFeature("view_category_ids", CATEGORY_VOCAB, "view", VIEW_LEN, "category_id")
VIEW_REGIONS = SeqFeature("view_region_ids", REGION_VOCAB, "view", VIEW_LEN, "region_id")
CONV_ITEMS = SeqFeature("conv_item_ids", ITEM_VOCAB, "conversion", CONVERSION_LEN, "item_id")
CONV_CATEGORIES = SeqFeature("conv_category_ids", CATEGORY_VOCAB, "conversion", CONVERSION_LEN, "category_id")
SEARCH_TOKENS = SeqFeature("search_tokens", TOKEN_VOCAB, "search", SEARCH_LEN, None)

SEQ_FEATURES: Tuple[SeqFeature, ...] = (
    CLICK_ITEMS, CLICK_CATEGORIES, CLICK_REGIONS,
    VIEW_ITEMS, VIEW_CATEGORIES, VIEW_REGIONS,
    CONV_ITEMS, CONV_CATEGORIES, SEARCH_TOKENS,
)

# Event ages: each behaviour of a history carries how long before the impression
# (the request, online) it happened, as a bucket label aligned with the channel's
# other sequences entry by entry.  Bucket i holds ages in [AGE_BOUNDS_S[i-1],
# AGE_BOUNDS_S[i]) seconds: under a minute, 1-5 min, ..., 7-30 days, older.
# The example generator and the online service both label ages with `age_labels`.
AGE_BOUNDS_S: Tuple[int, ...] = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600,
                                 86_400, 2 * 86_400, 7 * 86_400, 30 * 86_400)
AGE_LABELS: Tuple[str, ...] = tuple(f"age{i:02d}" for i in range(len(AGE_BOUNDS_S) + 1))
AGE_VOCAB = Vocab("age", num_oov_buckets=1, labels=AGE_LABELS)   # fixed: transformed id = bucket + 1


def age_labels(ages_s) -> List[str]:
    """Bucket labels (`AGE_LABELS`) of event ages in seconds (impression ts minus event ts)."""
    import bisect

    return [AGE_LABELS[bisect.bisect_right(AGE_BOUNDS_S, a)] for a in ages_s]


CLICK_AGES = SeqFeature("click_ages", AGE_VOCAB, "click", CLICK_LEN, None, ages=True)
VIEW_AGES = SeqFeature("view_ages", AGE_VOCAB, "view", VIEW_LEN, None, ages=True)
CONV_AGES = SeqFeature("conv_ages", AGE_VOCAB, "conversion", CONVERSION_LEN, None, ages=True)
SEARCH_AGES = SeqFeature("search_ages", AGE_VOCAB, "search", SEARCH_LEN, None, ages=True)
AGE_FEATURES: Tuple[SeqFeature, ...] = (CLICK_AGES, VIEW_AGES, CONV_AGES, SEARCH_AGES)
# channel -> its age sequence
AGES_OF: Dict[str, SeqFeature] = {s.channel: s for s in AGE_FEATURES}
# (history, candidate feature) pairs: every built-in sequence that shares a candidate's
# vocabulary, compared entry by entry with it by the match features
# (`train.layers.MatchFeatures` in-graph, `train.lightgbm_baseline` for the LightGBM baseline).
# Readers take a spec's `FeatureSpec.matched`: these, then its declared attribute sequences.
MATCHED: Tuple[Tuple[SeqFeature, IdFeature], ...] = tuple(
    (s, next(f for f in BUILTIN_ID_FEATURES if f.name == s.shares_with)) for s in SEQ_FEATURES if s.shares_with)
# channel -> its item id sequence: the other sequences of an item channel are aligned with it
ITEMS_OF: Dict[str, SeqFeature] = {s.channel: s for s in SEQ_FEATURES if s.shares_with == "item_id"}
# The click channel's aligned sequences, in the order DIN concatenates them.
CLICK_SEQUENCE: Tuple[SeqFeature, ...] = (CLICK_ITEMS, CLICK_CATEGORIES, CLICK_REGIONS)
VIEW_SEQUENCE: Tuple[SeqFeature, ...] = (VIEW_ITEMS, VIEW_CATEGORIES, VIEW_REGIONS)
CONVERSION_SEQUENCE: Tuple[SeqFeature, ...] = (CONV_ITEMS, CONV_CATEGORIES)

# --------------------------------------------------------------------------
# Dense features
# --------------------------------------------------------------------------
PRICE = DenseFeature("price", "candidate", default=0.0, log1p=True, min_value=0.0)
ITEM_HIST_IMPRESSIONS = DenseFeature("item_hist_impressions", "candidate", log1p=True, min_value=0.0)
ITEM_HIST_CLICKS = DenseFeature("item_hist_clicks", "candidate", log1p=True, min_value=0.0)
# Smoothed CTR: (clicks + CTR_PRIOR_CLICKS) / (impressions + CTR_PRIOR_IMPRESSIONS).
ITEM_HIST_CTR = DenseFeature("item_hist_ctr", "candidate", min_value=0.0, max_value=1.0)
CTR_PRIOR_CLICKS = 1.0
CTR_PRIOR_IMPRESSIONS = 20.0


def smoothed_ctr(clicks, impressions):
    """`ITEM_HIST_CTR` from the counts (floats or numpy arrays); the example
    generator and the online transformer both compute it here."""
    return (clicks + CTR_PRIOR_CLICKS) / (impressions + CTR_PRIOR_IMPRESSIONS)


# Crosses: computed by the example generator and, for serving, by
# `feedrank.transform.crosses` from the raw sequences (a test checks they agree).
REGION_MATCH = DenseFeature("region_match", "cross", min_value=0.0, max_value=1.0)
INTEREST_CATEGORY_SHARE = DenseFeature("interest_cat_share", "cross", min_value=0.0, max_value=1.0)

# Names of the crosses serving computes in-graph from the raw request; every
# other "cross" is sent by the online service once per candidate.
IN_GRAPH_CROSSES: Tuple[str, ...] = (REGION_MATCH.name, INTEREST_CATEGORY_SHARE.name)

# --------------------------------------------------------------------------
# User counters, user x category counters and session / recency features.
# Computed by `feedrank.examples.user_counters` offline and from the Redis
# user state online (`serving.features.user_state`); docs/examples.md has the
# exact definitions.  All use the user's events strictly before the
# impression; an event's category is its post's category at the event's time.
# --------------------------------------------------------------------------
USER_HIST_IMPRESSIONS = DenseFeature("user_hist_impressions", "user", log1p=True, min_value=0.0)
USER_HIST_CLICKS = DenseFeature("user_hist_clicks", "user", log1p=True, min_value=0.0)
USER_HIST_CTR = DenseFeature("user_hist_ctr", "user", min_value=0.0, max_value=1.0)
USER_CAT_IMPRESSIONS = DenseFeature("user_cat_impressions", "cross", log1p=True, min_value=0.0)
USER_CAT_CLICKS = DenseFeature("user_cat_clicks", "cross", log1p=True, min_value=0.0)
USER_CAT_CTR = DenseFeature("user_cat_ctr", "cross", min_value=0.0, max_value=1.0)
SESSION_GAP_S = 1800            # a gap > this between consecutive user events starts a session
SESSION_CATEGORY_SHARE = DenseFeature("session_cat_share", "cross", min_value=0.0, max_value=1.0)
RECENCY_CAP_H = 720.0           # 30 days: the value with no (or an older) event in the category
CATEGORY_RECENCY_H = DenseFeature("cat_recency_h", "cross", default=RECENCY_CAP_H, log1p=True,
                                  min_value=0.0, max_value=RECENCY_CAP_H)
USER_COUNTER_FEATURES: Tuple[DenseFeature, ...] = (
    USER_HIST_IMPRESSIONS, USER_HIST_CLICKS, USER_HIST_CTR,
    USER_CAT_IMPRESSIONS, USER_CAT_CLICKS, USER_CAT_CTR,
    SESSION_CATEGORY_SHARE, CATEGORY_RECENCY_H,
)

# The user's own past impressions of the candidate post ("seen before, how long ago"):
# per impression at ``T`` of post ``i`` to user ``u``, ``u``'s impressions of ``i`` strictly
# before ``T`` and the hours since the latest of them (`RECENCY_CAP_H` when none).  Offline
# `feedrank.examples.user_counters.seen_before`, online the ``p:ui:<user>`` hash
# (`serving.features.user_state`).  A model's contract has them with `FeatureSpec.seen_before`.
USER_ITEM_IMPRESSIONS = DenseFeature("user_item_impressions", "cross", log1p=True, min_value=0.0)
ITEM_SEEN_RECENCY_H = DenseFeature("item_seen_recency_h", "cross", default=RECENCY_CAP_H, log1p=True,
                                   min_value=0.0, max_value=RECENCY_CAP_H)
SEEN_FEATURES: Tuple[DenseFeature, ...] = (USER_ITEM_IMPRESSIONS, ITEM_SEEN_RECENCY_H)

BUILTIN_DENSE_FEATURES: Tuple[DenseFeature, ...] = (
    PRICE, ITEM_HIST_IMPRESSIONS, ITEM_HIST_CLICKS, ITEM_HIST_CTR,
    REGION_MATCH, INTEREST_CATEGORY_SHARE,
) + USER_COUNTER_FEATURES

# --------------------------------------------------------------------------
# Derived names and specs
# --------------------------------------------------------------------------
PAD_ID = 0  # transformed id of padding in every sequence


def idx(name: str) -> str:
    """Transformed name of a vocabulary-looked-up feature."""
    return f"{name}_idx"


def dense(name: str) -> str:
    """Transformed name of a normalised dense feature."""
    return f"{name}_x"


# --------------------------------------------------------------------------
# Declared features: extra columns of the items / users tables named by the
# run config's ``features:`` section (docs/features.md).
# --------------------------------------------------------------------------
DECLARED_TABLES: Dict[str, str] = {"items": "item", "users": "user"}   # table -> feature-name prefix
DECLARED_SIDES: Dict[str, str] = {"items": "candidate", "users": "user"}
DECLARED_KINDS: Tuple[str, ...] = ("categorical", "numeric", "tokens")
# Columns the tables already carry (never declarable).
BUILTIN_COLUMNS: Tuple[str, ...] = ("item_id", "category_id", "region_id", "price", "user_id", "valid_from")
DECLARED_FILE = "declared_features.json"   # the declaration, next to an exported model


@dataclasses.dataclass(frozen=True)
class Declared:
    """One declared column of the ``items`` or ``users`` table."""

    table: str            # "items" or "users"
    column: str
    kind: str             # "categorical", "numeric" or "tokens"
    default: float = 0.0  # numeric: the value of a missing cell
    log1p: bool = False   # numeric: log1p before z-scoring
    max_tokens: int = 16  # tokens: at most this many per row
    oov_buckets: int = 2  # categorical / tokens: OOV buckets after the vocabulary
    frequency_threshold: int = 1

    @property
    def feature_name(self) -> str:
        """The raw tf.Example feature name: ``item_<column>`` or ``user_<column>``."""
        return f"{DECLARED_TABLES[self.table]}_{self.column}"

    @property
    def side(self) -> str:
        return DECLARED_SIDES[self.table]

    @property
    def vocab(self) -> Vocab:
        """The declared column's own vocabulary (categorical and tokens)."""
        return Vocab(f"attr_{self.feature_name}", self.oov_buckets, self.frequency_threshold)

    @property
    def missing(self):
        """The value for an id absent from its table (or a missing cell): "" for a
        categorical, ``default`` for a number, no tokens for a bag.  The example
        generator and the online service both encode it from here."""
        return {"categorical": "", "numeric": float(self.default), "tokens": ()}[self.kind]

    @property
    def on_history(self) -> bool:
        """Whether the histories carry this column (`history_sequences`): a categorical
        column of the ``items`` table.  Numbers and token bags stay candidate-only."""
        return self.table == "items" and self.kind == "categorical"


def history_sequences(c: Declared) -> Tuple[SeqFeature, ...]:
    """The history side of a declared categorical item column: per item channel (click,
    view, conversion) one sequence ``<channel prefix>_<feature>`` (``click_item_seller``)
    holding the column's value for each post of the channel's history as of the impression,
    aligned entry by entry with the channel's item ids and as long; it shares the candidate
    feature's vocabulary (``shares_with``), so an id means the same on both sides."""
    return tuple(SeqFeature(f"{items.name.removesuffix('_item_ids')}_{c.feature_name}", c.vocab, channel,
                            items.max_len, c.feature_name)
                 for channel, items in ITEMS_OF.items())


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """The whole feature contract of one run or one model: the built-in features
    plus the declared columns.  Immutable; built once (`from_config`), passed by
    value, serialised with `to_json` and restored with `from_json` / `read`.

    Invariants (tests/unit/test_feature_spec.py): built-ins come first, in their
    fixed order; every declared column adds exactly one feature of its kind on
    its side; feature names are unique; a JSON round trip is the identity.

    ``event_ages`` (default on): the histories carry their events' ages
    (`AGE_FEATURES`).  A model exported before ages existed wrote its contract
    as a bare list of declared columns; `from_json` reads that as
    ``event_ages=False``, so such a model keeps being served the inputs it has.

    ``history_attributes`` (default on): every declared categorical item column also
    reaches the histories (`history_sequences`, listed in `attribute_sequences`, after
    the built-in and age sequences, and matched with the candidate's value).  A contract
    written before history attributes has no such key and is read without them; without
    a categorical item column the setting changes nothing and reads True, so equal
    contracts compare equal.

    ``seen_before`` (default on): the candidates carry the user's own earlier impressions
    of them (`SEEN_FEATURES`, after the built-in dense features).  A contract written
    before them has no such key and is read without them.
    """

    declared: Tuple[Declared, ...] = ()
    event_ages: bool = True
    history_attributes: bool = True
    seen_before: bool = True
    vocabs: Tuple[Vocab, ...] = dataclasses.field(init=False, repr=False, compare=False)
    id_features: Tuple[IdFeature, ...] = dataclasses.field(init=False, repr=False, compare=False)
    dense_features: Tuple[DenseFeature, ...] = dataclasses.field(init=False, repr=False, compare=False)
    bag_features: Tuple[BagFeature, ...] = dataclasses.field(init=False, repr=False, compare=False)
    # the declared categorical item columns' history sequences (`history_sequences`), by channel
    attribute_sequences: Tuple[SeqFeature, ...] = dataclasses.field(init=False, repr=False, compare=False)
    # (history, candidate feature) pairs the match features compare: `MATCHED`, then one per attribute sequence
    matched: Tuple[Tuple[SeqFeature, IdFeature], ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        columns = tuple(self.declared)
        vocabs, ids = list(BUILTIN_VOCABS), list(BUILTIN_ID_FEATURES)
        if self.event_ages:
            vocabs.append(AGE_VOCAB)
        denses = list(BUILTIN_DENSE_FEATURES) + list(SEEN_FEATURES if self.seen_before else ())
        bags: List[BagFeature] = []
        for c in columns:
            if not isinstance(c, Declared):
                raise TypeError(f"FeatureSpec.declared holds Declared columns, got {type(c).__name__}")
            if c.table not in DECLARED_TABLES:
                raise ValueError(f"declared column {c.table}.{c.column}: unknown table {c.table!r}; "
                                 f"expected one of {list(DECLARED_TABLES)}")
            if c.kind == "categorical":
                vocabs.append(c.vocab)
                ids.append(IdFeature(c.feature_name, c.vocab, c.side))
            elif c.kind == "numeric":
                denses.append(DenseFeature(c.feature_name, c.side, default=float(c.default), log1p=bool(c.log1p)))
            elif c.kind == "tokens":
                vocabs.append(c.vocab)
                bags.append(BagFeature(c.feature_name, c.vocab, c.side, int(c.max_tokens)))
            else:
                raise ValueError(f"declared column {c.table}.{c.column}: unknown kind {c.kind!r}; "
                                 f"expected one of {list(DECLARED_KINDS)}")
        on_history = [c for c in columns if c.on_history]
        history = bool(self.history_attributes) or not on_history
        attributes = tuple(s for channel in ITEMS_OF for c in (on_history if history else ())
                           for s in history_sequences(c) if s.channel == channel)
        names = [f.name for f in ids] + [s.name for s in SEQ_FEATURES + AGE_FEATURES + attributes]
        names += [d.name for d in denses] + [b.name for b in bags]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"declared columns clash with other features: {dupes}")
        by_name = {f.name: f for f in ids}
        object.__setattr__(self, "declared", columns)
        object.__setattr__(self, "event_ages", bool(self.event_ages))
        object.__setattr__(self, "history_attributes", history)
        object.__setattr__(self, "seen_before", bool(self.seen_before))
        object.__setattr__(self, "attribute_sequences", attributes)
        object.__setattr__(self, "matched", MATCHED + tuple((s, by_name[s.shares_with]) for s in attributes))
        object.__setattr__(self, "vocabs", tuple(vocabs))
        object.__setattr__(self, "id_features", tuple(ids))
        object.__setattr__(self, "dense_features", tuple(denses))
        object.__setattr__(self, "bag_features", tuple(bags))

    # -- construction and serialisation ------------------------------------
    @classmethod
    def from_config(cls, section) -> "FeatureSpec":
        """The spec of a config's ``features`` section (`config.FeaturesConfig`
        or its mapping ``{"items": [...], "users": [...], "event_ages": bool,
        "history_attributes": bool, "seen_before": bool}``); the config validated it."""
        if section is None:
            return cls()

        def flag(key: str) -> bool:
            return bool(section.get(key, True) if isinstance(section, dict) else getattr(section, key, True))

        out = []
        for table in DECLARED_TABLES:
            rows = section.get(table) if isinstance(section, dict) else getattr(section, table, None)
            for row in rows or ():
                row = dict(row)
                if row.get("kind") == "tokens":
                    row.setdefault("oov_buckets", 10)
                out.append(Declared(table=table, column=row.pop("name"), kind=row.pop("kind"), **row))
        return cls(tuple(out), event_ages=flag("event_ages"), history_attributes=flag("history_attributes"),
                   seen_before=flag("seen_before"))

    def to_json(self) -> str:
        """The contract as a JSON string (exec properties, custom_config, a model asset):
        ``{"declared": [...], "event_ages": bool, "seen_before": bool}``, plus
        ``"history_attributes": bool`` when a declared categorical item column makes it matter."""
        doc = {"declared": [dataclasses.asdict(c) for c in self.declared], "event_ages": self.event_ages,
               "seen_before": self.seen_before}
        if any(c.on_history for c in self.declared):
            doc["history_attributes"] = self.history_attributes
        return json.dumps(doc, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> "FeatureSpec":
        """Inverse of `to_json`; an empty string or None is the built-in spec.  A bare list
        (the format before event ages) is that list of declared columns without ages or
        history attributes; a contract without ``history_attributes`` (written before them)
        has none, and one without ``seen_before`` (written before it) no `SEEN_FEATURES`."""
        if not text:
            return cls()
        doc = json.loads(text)
        if isinstance(doc, list):
            return cls(tuple(Declared(**row) for row in doc), event_ages=False, history_attributes=False,
                       seen_before=False)
        if not isinstance(doc, dict) or set(doc) - {"declared", "event_ages", "history_attributes", "seen_before"}:
            raise ValueError(f"not a feature contract: expected {{'declared': [...], 'event_ages': bool, "
                             f"'history_attributes': bool, 'seen_before': bool}}, got {text[:120]!r}")
        return cls(tuple(Declared(**row) for row in doc.get("declared", ())),
                   event_ages=bool(doc.get("event_ages", True)),
                   history_attributes=bool(doc.get("history_attributes", False)),
                   seen_before=bool(doc.get("seen_before", False)))

    @classmethod
    def read(cls, model_dir: str) -> "FeatureSpec":
        """The spec an exported model was built with (its `DECLARED_FILE`; built-ins when absent)."""
        path = f"{str(model_dir).rstrip('/')}/{DECLARED_FILE}"
        if "://" in path:
            import tensorflow as tf  # remote model dirs only: serving code need not import TF for this

            if not tf.io.gfile.exists(path):
                return cls()
            with tf.io.gfile.GFile(path) as f:
                return cls.from_json(f.read())
        try:
            with open(path) as f:
                return cls.from_json(f.read())
        except FileNotFoundError:
            return cls()

    def write(self, model_dir: str) -> str:
        """Writes `DECLARED_FILE` into ``model_dir`` (local or remote); returns its path."""
        path = f"{str(model_dir).rstrip('/')}/{DECLARED_FILE}"
        if "://" in path:
            import tensorflow as tf

            with tf.io.gfile.GFile(path, "w") as f:
                f.write(self.to_json())
        else:
            with open(path, "w") as f:
                f.write(self.to_json())
        return path

    # -- views ---------------------------------------------------------------
    @property
    def seq_features(self) -> Tuple[SeqFeature, ...]:
        """The behaviour sequences: `SEQ_FEATURES`, then with ``event_ages`` the
        `AGE_FEATURES`, then the declared item columns' `attribute_sequences`."""
        return SEQ_FEATURES + (AGE_FEATURES if self.event_ages else ()) + self.attribute_sequences

    def age_feature(self, channel: str) -> SeqFeature | None:
        """The age sequence of ``channel`` (None without ``event_ages``)."""
        return AGES_OF[channel] if self.event_ages else None

    @property
    def history_columns(self) -> Tuple[Declared, ...]:
        """The declared item columns the histories carry (one `attribute_sequences` entry per
        item channel each), in declaration order."""
        names = {s.shares_with for s in self.attribute_sequences}
        return tuple(c for c in self.declared if c.feature_name in names)

    def attributes_of(self, channel: str) -> Tuple[SeqFeature, ...]:
        """The declared attribute sequences of ``channel``, in `history_columns` order."""
        return tuple(s for s in self.attribute_sequences if s.channel == channel)

    def declared_of(self, table: str) -> Tuple[Declared, ...]:
        """The declared columns of ``table`` ("items" or "users")."""
        return tuple(c for c in self.declared if c.table == table)

    def declared_on_side(self, side: str) -> Tuple[Declared, ...]:
        """The declared columns of ``side`` ("candidate" or "user")."""
        return tuple(c for c in self.declared if c.side == side)

    def model_input_names(self) -> List[str]:
        """Names of every transformed feature a model may read (labels excluded)."""
        names = [idx(f.name) for f in self.id_features]
        names += [idx(f.name) for f in self.seq_features]
        names += [dense(f.name) for f in self.dense_features]
        names += [idx(b.name) for b in self.bag_features]
        return names

    def raw_feature_spec(self, include_labels: bool = True, include_metadata: bool = True) -> Dict[str, object]:
        """tf.io feature spec of the raw tf.Examples the example generator writes."""
        import tensorflow as tf  # local import: the simulator must not need TF

        spec: Dict[str, object] = {}
        for f in self.id_features:
            spec[f.name] = tf.io.FixedLenFeature([], tf.string)
        for s in self.seq_features:
            spec[s.name] = tf.io.VarLenFeature(tf.string)
        for d in self.dense_features:
            spec[d.name] = tf.io.FixedLenFeature([], tf.float32, default_value=d.default)
        for b in self.bag_features:
            spec[b.name] = tf.io.VarLenFeature(tf.string)
        if include_labels:
            for label in LABELS:
                spec[label] = tf.io.FixedLenFeature([], tf.int64)
        if include_metadata:
            spec[IMPRESSION_ID] = tf.io.FixedLenFeature([], tf.string)
            spec[USER_ID] = tf.io.FixedLenFeature([], tf.string)
            spec[TS] = tf.io.FixedLenFeature([], tf.int64)
        return spec

    def raw_names(self) -> List[str]:
        """Every raw example column: features, labels and metadata, in the writer's order."""
        names = [f.name for f in self.id_features] + [s.name for s in self.seq_features]
        names += [b.name for b in self.bag_features]
        names += [d.name for d in self.dense_features] + list(LABELS) + list(METADATA)
        return names

    def request_dense(self, side: str) -> List[DenseFeature]:
        """Dense features the online service sends once per request (``user``) or
        once per candidate (``candidate``: the candidate's own and every cross
        not computed in-graph, see `IN_GRAPH_CROSSES`)."""
        if side == "candidate":
            return [d for d in self.dense_features if d.side == "candidate"
                    or (d.side == "cross" and d.name not in IN_GRAPH_CROSSES)]
        return [d for d in self.dense_features if d.side == side]

    def features_of_side(self, side: str) -> List[str]:
        """Raw feature names the online service sends once per request (``user``)
        or once per candidate (``candidate``).  The `IN_GRAPH_CROSSES` are
        computed in-graph; the other crosses are candidate inputs."""
        names = [f.name for f in self.id_features if f.side == side]
        names += [d.name for d in self.request_dense(side)]
        names += [b.name for b in self.bag_features if b.side == side]
        if side == "user":
            names += [s.name for s in self.seq_features]
        return names

    def is_dense(self, name: str) -> bool:
        """Whether raw feature ``name`` is a float feature."""
        return any(d.name == name for d in self.dense_features)


BUILTIN = FeatureSpec()   # the contract of a run that declares no columns
