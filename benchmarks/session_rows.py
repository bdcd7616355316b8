"""The rows of the session Table II (`benchmarks.session_table2`): each model fitted and tuned
on the fit split, chosen on the validation split, with the same number of trials for every
learned model.

Every learned row gets ``trials`` configurations from the same search over its space
(`SPACES`, one seeded search per row; `benchmarks.session_search`: the GA tuner's operators by
default, ``--search random`` for random draws), the first its defaults, and keeps the one with
the best validation add-to-cart top-10:

* neural families (DRNN+FNN, GRU4Rec, SASRec): each configuration trained for at most
  ``epochs`` epochs, the validation top-10 checked ``checks_per_epoch`` times per epoch (the
  models peak within one or two epochs, so a check per epoch overshoots), with early stopping
  after ``patience`` epochs without a gain and the best check's weights kept (`BestTop10`);
* the DRNN's ablations reuse the DRNN+FNN's chosen configuration with one part changed
  (no repeat path, no FNN, no history state, add-to-carts only: ``next_weight`` 0);
* session item-kNN, the recently-viewed heuristic and ALS with and without the user's
  history: their hyperparameters drawn the same way;
* popularity: nothing to tune.

Every scorer is masked to the catalogue's items (`masked`), so no row gains or loses from
scoring a category page, the padding or the out-of-vocabulary id.
"""
from __future__ import annotations

import logging
import time
import zlib
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from benchmarks import session_search as S
from feedrank.sessions import drnn, gru4rec, metrics, sasrec
from feedrank.sessions.als import AlsSettings, SessionAls
from feedrank.sessions.baselines import Popularity
from feedrank.sessions.neighbours import ItemKnn, RecentlyViewed

log = logging.getLogger("session_table2")
Scorer = Callable[[Dict[str, np.ndarray]], np.ndarray]
Arrays = Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray], Dict[str, np.ndarray], np.ndarray]

BUILDERS = {"drnn": drnn.build, "gru4rec": gru4rec.build, "sasrec": sasrec.build}
NEURAL = {"DRNN+FNN": "drnn", "GRU4Rec": "gru4rec", "SASRec": "sasrec"}
ABLATIONS = {"DRNN+FNN without repeat path": {"repeat": False},
             "DRNN without FNN": {"use_fnn": False},
             "DRNN without history state": {"use_history": False},
             "DRNN+FNN, add-to-carts only": {"next_weight": 0.0}}
SPACES: Dict[str, Dict[str, Sequence[Any]]] = {
    "drnn": {"learning_rate": (0.001, 0.003, 0.01), "units": (32, 64, 128), "page_dim": (16, 32, 64),
             "dropout": (0.0, 0.2, 0.4)},
    "gru4rec": {"learning_rate": (0.001, 0.003, 0.01), "units": (50, 100, 200), "page_dim": (16, 32, 64),
                "dropout": (0.0, 0.2, 0.4)},
    "sasrec": {"learning_rate": (0.001, 0.003, 0.01), "page_dim": (32, 64), "blocks": (1, 2),
               "dropout": (0.1, 0.2, 0.4)},
    "knn": {"neighbours": (20, 50, 100, 200, 500), "decay": (0.5, 0.75, 0.9, 1.0), "alpha": (0.3, 0.5, 0.7)},
    "recent": {"decay": (0.5, 0.6, 0.75, 0.85, 0.95)},
    "als": {"factors": (16, 32, 64, 128), "regularization": (0.01, 0.05, 0.1, 0.5)},
}
DEFAULTS: Dict[str, Dict[str, Any]] = {
    "drnn": {"width": 5, "length": 2, "height": 1, "units": 64, "cell": "gru", "page_dim": 32, "fnn_units": [64],
             "learning_rate": 0.003, "dropout": 0.0},
    "gru4rec": {"units": 100, "page_dim": 32, "learning_rate": 0.003, "dropout": 0.0},
    "sasrec": {"page_dim": 32, "blocks": 2, "heads": 1, "dropout": 0.2, "learning_rate": 0.001},
    "knn": {"neighbours": 100, "decay": 0.75, "alpha": 0.5}, "recent": {"decay": 0.75},
    "als": {"factors": 32, "regularization": 0.05},
}


def search(space: str, trials: int, seed: int, kind: str) -> S.Search:
    """The row's search: ``trials`` configurations from its defaults and `SPACES` (`session_search`)."""
    return S.Search(DEFAULTS[space], SPACES[space], trials, seed, kind)


def masked(fn: Scorer, item_mask: np.ndarray) -> Scorer:
    """``fn``'s scores with every id that is not an item at -1e9."""
    off = ~np.asarray(item_mask, bool)

    def score(batch: Dict[str, np.ndarray]) -> np.ndarray:
        s = np.array(fn(batch), dtype=np.float64, copy=True)
        s[:, off] = -1e9
        return s
    return score


def keras_scorer(model) -> Scorer:
    used = model.input_names_used
    return lambda b: model({k: tf.constant(b[k]) for k in used}, training=False)[drnn.CART].numpy()


def val_top10(fn: Scorer, val: Arrays) -> float:
    x, y, w, _ = val
    keep = w[drnn.CART] > 0
    return metrics.top_k_accuracy(metrics.ranks(fn({k: v[keep] for k, v in x.items()}), y[drnn.CART][keep]), 10)


class BestTop10(keras.callbacks.Callback):
    """Keeps the weights of the check (a Keras epoch: a whole epoch or a part of one) with the best
    validation top-10; stops after ``patience`` checks without a gain."""

    def __init__(self, val: Arrays, patience: int):
        super().__init__()
        self.val, self.patience = val, patience
        self.history: List[float] = []
        self.best, self.weights, self.wait = -1.0, None, 0

    def on_epoch_end(self, epoch, logs=None):
        top10 = val_top10(keras_scorer(self.model), self.val)
        self.history.append(round(top10, 4))
        if top10 > self.best:
            self.best, self.weights, self.wait = top10, self.model.get_weights(), 0
        else:
            self.wait += 1
            self.model.stop_training = self.wait >= self.patience

    def on_train_end(self, logs=None):
        if self.weights is not None:
            self.model.set_weights(self.weights)


def train_neural(family: str, config: Mapping[str, Any], num_ids: int, mask: Sequence[bool], fit: Arrays,
                 val: Arrays, args, seed: int) -> Tuple[keras.Model, Dict[str, Any]]:
    """One configuration of a family, early-stopped on the validation top-10."""
    config = dict(config)
    next_weight = float(config.pop("next_weight", 1.0))
    keras.utils.set_random_seed(seed)
    model = BUILDERS[family]({**config, "num_pages": num_ids, "num_items": num_ids}, list(mask), next_weight)
    used = model.input_names_used
    checks = max(1, int(getattr(args, "checks_per_epoch", 1)))
    best = BestTop10(val, args.patience * checks)
    rows = len(fit[1][drnn.CART])
    steps = -(-rows // args.batch)
    data = tf.data.Dataset.from_tensor_slices(({k: fit[0][k] for k in used}, fit[1], fit[2]))
    data = data.shuffle(rows, seed=seed, reshuffle_each_iteration=True).batch(args.batch).repeat()
    t0 = time.perf_counter()
    model.fit(data, steps_per_epoch=-(-steps // checks), epochs=args.epochs * checks, callbacks=[best], verbose=0)
    info = {"config": {**config, "next_weight": next_weight}, "checks_run": len(best.history),
            "best_epoch": round((int(np.argmax(best.history)) + 1) / checks, 2), "checks_per_epoch": checks,
            "val_top10": best.history, "train_s": round(time.perf_counter() - t0, 1)}
    log.info("%s %s: %s", family, config, {k: v for k, v in info.items() if k != "config"})
    return model, info


def tuned_neural(name: str, family: str, num_ids: int, mask, fit, val, args, seed: int):
    """The best of ``args.trials`` configurations of ``family`` on the validation top-10."""
    trials = []
    best = None
    found = search(family, args.trials, seed + zlib.crc32(name.encode()) % 1000, args.search)
    while (config := found.ask()) is not None:
        model, info = train_neural(family, config, num_ids, mask, fit, val, args, seed)
        score = max(info["val_top10"])
        found.tell(config, score)
        trials.append(info)
        if best is None or score > best[2]:
            best = (model, config, score)
    return best[0], {"chosen": best[1], "val_top10": best[2], "trials": trials}


def tune(name: str, space: str, make: Callable[[Dict[str, Any]], Scorer], mask, val: Arrays, trials: int,
         seed: int, kind: str) -> Tuple[Scorer, Dict[str, Any]]:
    """The best of ``trials`` configurations of a non-neural row on the validation top-10."""
    results = []
    best = None
    found = search(space, trials, seed + zlib.crc32(name.encode()) % 1000, kind)
    while (config := found.ask()) is not None:
        fn = masked(make(config), mask)
        score = val_top10(fn, val)
        found.tell(config, score)
        results.append({"config": config, "val_top10": round(score, 4)})
        if best is None or score > best[2]:
            best = (fn, config, score)
    log.info("%s: chose %s (val top-10 %.4f)", name, best[1], best[2])
    return best[0], {"chosen": best[1], "val_top10": best[2], "trials": results}


def baselines(fit_samples: Sequence[Mapping[str, Any]], fit: Arrays, val: Arrays, mask: np.ndarray,
              sessions: Sequence[Sequence[int]], als_rows: Tuple, args, seed: int
              ) -> Tuple[Dict[str, Scorer], Dict[str, Any]]:
    """Popularity, the recently-viewed heuristic, session item-kNN and both ALS rows."""
    num_ids = len(mask)
    page_item = np.where(mask, np.arange(num_ids), 0)
    carts = fit[1][drnn.CART][fit[2][drnn.CART] > 0]
    pop = Popularity(num_ids).fit(carts)
    fallback = pop.item_scores()
    scorers: Dict[str, Scorer] = {"Popularity": masked(pop.scores, mask)}
    info: Dict[str, Any] = {"Popularity": {"carts": int(len(carts))}}
    scorers["Recently viewed"], info["Recently viewed"] = tune(
        "Recently viewed", "recent", lambda c: RecentlyViewed(page_item, num_ids, c["decay"], fallback).scores,
        mask, val, args.trials, seed, args.search)
    scorers["Session item-kNN"], info["Session item-kNN"] = tune(
        "Session item-kNN", "knn", lambda c: ItemKnn(page_item, num_ids, c["neighbours"], c["decay"], c["alpha"],
                                                     fallback).fit(sessions).scores,
        mask, val, args.trials, seed, args.search)
    fitted: Dict[Tuple, SessionAls] = {}

    def als(mode: str) -> Callable[[Dict[str, Any]], Scorer]:
        def make(c: Dict[str, Any]) -> Scorer:
            key = (c["factors"], c["regularization"])
            if key not in fitted:
                fitted[key] = SessionAls(num_ids, page_item, AlsSettings(factors=c["factors"],
                                                                         regularization=c["regularization"],
                                                                         seed=seed)).fit(*als_rows)
            return fitted[key].scorer(mode)
        return make
    for mode, name in (("session", "ALS without user history"), ("user", "ALS with user history")):
        scorers[name], info[name] = tune(name, "als", als(mode), mask, val, args.trials, seed, args.search)
    return scorers, info
