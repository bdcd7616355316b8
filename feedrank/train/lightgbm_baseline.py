"""The LightGBM baseline: a GBDT on static and aggregated features.

58.com's production ranker before its deep models (58.com reports GBDT
AUC 0.634 < DIN 0.643 < DIEN 0.651).  It reads the *raw* examples the
example generator writes (the same examples and split every deep family
trains on) and turns each behaviour sequence into hand-built aggregates, the
way such a feature pipeline is built in production:

* static: candidate category / region and the user's region (categorical),
  price, the post's historical impressions, clicks and smoothed CTR;
* crosses: region match and interest-category share (from the example gen);
* funnel: the category of the user's last conversion crossed with the
  candidate's category, one categorical pair code (``none|<category>``
  without a conversion), so the trees can learn "rented a flat -> furniture";
* aggregates per channel (click, view, conversion, search): sequence length,
  how often the candidate's category / region / post (and each declared
  categorical item column, ``spec.matched``) appears in it, and the
  same shares over the 10 most recent entries; with event ages, how long ago
  the youngest matching entry happened (`match_recency`);
* declared item/user columns (docs/features.md): numeric ones as columns,
  categorical ones as categoricals (`categorical_columns`); token bags are
  left out.

It is an offline baseline for the quality benchmark (`benchmarks/quality.py`):
it is not exported behind the serving contract (the servable TF-DF trees are
the ``gbdt`` family, `feedrank.train.families.gbdt`).  Every function takes
the feature contract of the examples (``spec``, a `features.FeatureSpec`).
"""
from __future__ import annotations

import glob
import logging
import os
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import pandas as pd

from feedrank import features as F

log = logging.getLogger(__name__)

FUNNEL = "last_conv_cat_x_cat"   # last conversion's category | candidate's category
NO_CONVERSION = "none"
CATEGORICAL = (F.CATEGORY_ID.name, F.REGION_ID.name, F.USER_REGION_ID.name, FUNNEL)
RECENT = 10  # as layers.MatchFeatures' default


def categorical_columns(spec: F.FeatureSpec) -> Tuple[str, ...]:
    """`CATEGORICAL` plus ``spec``'s declared categorical columns."""
    declared = {c.feature_name for c in spec.declared}
    return CATEGORICAL + tuple(f.name for f in spec.id_features if f.name in declared)


DEFAULT_PARAMS: Dict[str, object] = {
    "objective": "binary", "learning_rate": 0.05, "num_leaves": 63, "min_data_in_leaf": 50,
    "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
    # Regularised categorical splits: the funnel pair has hundreds of levels, and with
    # LightGBM's defaults its splits overfit (chosen on the quality benchmark's validation
    # users, benchmarks/README.md#model-zoo-quality).
    "min_data_per_group": 200, "cat_smooth": 50, "cat_l2": 10, "max_cat_threshold": 16,
    "num_threads": 2, "verbose": -1,
}


def read_raw(split_dir: str, batch_size: int = 8192, *, spec: F.FeatureSpec) -> Dict[str, object]:
    """Every raw example of one split (a ``Split-<name>`` dir of GZIP TFRecords) with the
    raw features of ``spec``: dense columns as arrays, sequences and token bags as (row
    ids, positions from the end, values)."""
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(split_dir, "*")))
    if not files:
        raise FileNotFoundError(f"no TFRecord files in {split_dir}")
    parse_spec = spec.raw_feature_spec()
    cols: Dict[str, list] = {}
    seqs: Dict[str, list] = {s.name: [] for s in (*spec.seq_features, *spec.bag_features)}
    offset = 0
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch_size):
        parsed = tf.io.parse_example(batch, parse_spec)
        n = int(batch.shape[0])
        for name, t in parsed.items():
            if isinstance(t, tf.SparseTensor):
                idx = t.indices.numpy()
                lengths = np.bincount(idx[:, 0], minlength=n)
                from_end = lengths[idx[:, 0]] - idx[:, 1]  # 1 = most recent
                seqs[name].append((idx[:, 0] + offset, from_end, t.values.numpy()))
            else:
                cols.setdefault(name, []).append(t.numpy())
        offset += n
    out: Dict[str, object] = {k: np.concatenate(v) for k, v in cols.items()}
    for name, parts in seqs.items():
        out[name] = tuple(np.concatenate([p[i] for p in parts]) if parts else np.array([]) for i in range(3))
    out["n"] = offset
    return out


def _share(rows: np.ndarray, hit: np.ndarray, n: int, lengths: np.ndarray) -> np.ndarray:
    counts = np.bincount(rows, weights=hit.astype(np.float64), minlength=n)
    return np.divide(counts, lengths, out=np.zeros(n), where=lengths > 0)


def match_recency(rows: np.ndarray, hit: np.ndarray, age_labels: np.ndarray, n: int) -> np.ndarray:
    """Per row, ``(buckets - b) / buckets`` of the youngest matching entry's age bucket b
    (0.0 without a match): `layers.MatchRecency` on the raw age labels (bytes), which are
    aligned entry by entry with the history's ``rows``."""
    buckets = len(F.AGE_LABELS)
    code = {label.encode(): i for i, label in enumerate(F.AGE_LABELS)}
    b = np.array([code.get(v, buckets) for v in age_labels], dtype=np.float64)
    score = np.where(hit & (b < buckets), (buckets - b) / buckets, 0.0)
    out = np.zeros(n)
    np.maximum.at(out, rows, score)
    return out


def features(raw: Mapping[str, object], *, spec: F.FeatureSpec) -> pd.DataFrame:
    """The GBDT's feature frame from `read_raw`'s output (read with the same ``spec``)."""
    n = int(raw["n"])
    frame: Dict[str, np.ndarray] = {d.name: np.asarray(raw[d.name], np.float64) for d in spec.dense_features}
    for s in (F.CLICK_ITEMS, F.VIEW_ITEMS, F.CONV_ITEMS, F.SEARCH_TOKENS):  # one per channel
        rows, _, _ = raw[s.name]
        frame[f"n_{s.channel}"] = np.bincount(rows, minlength=n).astype(np.float64)
    for seq, cand in spec.matched:
        rows, from_end, values = raw[seq.name]
        hit = values == np.asarray(raw[cand.name])[rows]
        lengths = np.bincount(rows, minlength=n).astype(np.float64)
        recent = from_end <= RECENT
        recent_len = np.bincount(rows[recent], minlength=n).astype(np.float64)
        frame[f"{seq.name}_match_share"] = _share(rows, hit, n, lengths)
        frame[f"{seq.name}_match_recent_share"] = _share(rows[recent], hit[recent], n, recent_len)
        frame[f"{seq.name}_match_last"] = np.bincount(rows[from_end == 1], weights=hit[from_end == 1],
                                                      minlength=n)
        if spec.event_ages:   # as `layers.MatchRecency`: the youngest matching entry's age
            frame[f"{seq.name}_match_recency"] = match_recency(rows, hit, raw[spec.age_feature(seq.channel).name][2], n)
    df = pd.DataFrame(frame)
    for c in categorical_columns(spec):
        if c != FUNNEL:
            df[c] = pd.Series(np.asarray(raw[c])).str.decode("utf-8")
    df[FUNNEL] = funnel_pairs(raw, n)
    return df


def funnel_pairs(raw: Mapping[str, object], n: int) -> pd.Series:
    """``<last conversion's category>|<candidate's category>`` per row, from the
    raw ``conv_category_ids`` (most recent last) and ``category_id``."""
    rows, from_end, values = raw[F.CONV_CATEGORIES.name]
    last = np.full(n, NO_CONVERSION.encode(), dtype=object)
    newest = from_end == 1
    last[rows[newest].astype(np.int64)] = values[newest]
    cand = np.asarray(raw[F.CATEGORY_ID.name], dtype=object)
    return pd.Series(last + b"|" + cand).str.decode("utf-8")


def _categorical(train: pd.DataFrame, other: pd.DataFrame, spec: F.FeatureSpec
                 ) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Category dtypes with the train split's levels (unseen levels become NaN)."""
    train, other = train.copy(), other.copy()
    for c in categorical_columns(spec):
        levels = pd.Index(sorted(train[c].unique()))
        train[c] = pd.Categorical(train[c], categories=levels)
        other[c] = pd.Categorical(other[c], categories=levels)
    return train, other


def fit(x_train: pd.DataFrame, y_train: np.ndarray, x_val: pd.DataFrame, y_val: np.ndarray,
        seed: int = 0, params: Optional[Mapping[str, object]] = None, max_rounds: int = 2000,
        patience: int = 50, *, spec: F.FeatureSpec):
    """LightGBM with early stopping on the validation split (never the test split);
    the frames are `features` of ``spec``."""
    import lightgbm as lgb

    x_train, x_val = _categorical(x_train, x_val, spec)
    p = {**DEFAULT_PARAMS, **(params or {}), "seed": seed}
    train_set = lgb.Dataset(x_train, y_train, categorical_feature=list(categorical_columns(spec)))
    val_set = lgb.Dataset(x_val, y_val, reference=train_set)
    booster = lgb.train(p, train_set, max_rounds, valid_sets=[val_set], valid_names=["val"],
                        callbacks=[lgb.early_stopping(patience, verbose=False)])
    log.info("GBDT: %d rounds (best %d)", booster.current_iteration(), booster.best_iteration)
    return booster


def predict(booster, x_train: pd.DataFrame, x: pd.DataFrame, *, spec: F.FeatureSpec) -> np.ndarray:
    """Scores of ``x`` with the categorical levels the booster was trained on."""
    _, x = _categorical(x_train, x, spec)
    return booster.predict(x, num_iteration=booster.best_iteration)
