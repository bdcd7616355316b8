"""RecBole's DIEN (torch, CPU) on the examples `benchmarks/dien_peer.py` wrote.

    .venv-peer/bin/python benchmarks/peer/recbole_dien.py --npz data/dien_peer/examples.npz \
        --out /tmp/peer.json [--epochs 3 --batch 1024 --lr 1e-3 --embedding-size 16 --mlp 200 80]

Runs in the peer environment (benchmarks/peer/requirements.txt), never in the
project's .venv; RecBole is used as an installed package, unmodified.

The model is ``recbole.model.sequential_recommender.dien.DIEN`` built from a
real RecBole ``Config`` and `ExamplesDataset`, a minimal stand-in for a RecBole
``Dataset`` exposing what DIEN (and RecBole's ``SeqSampler``) read from one:
field types, token counts, the item and user feature tables.  RecBole looks an
item's features up by item id, so every distinct (item_id_idx,
category_id_idx, region_id_idx) triple of the examples is one RecBole item
whose three token features are exactly those transformed ids; the "user" is
the example's user_region_id_idx.  Each example becomes one RecBole
interaction: ``item_id`` (candidate), ``item_id_list`` (click history,
right-padded, 0 = pad), ``neg_item_id_list`` (one negative per step, drawn
once by RecBole's ``SeqSampler`` as its ``DIENDataset`` does), ``item_length``
(clamped to >= 1: pack_padded_sequence rejects 0), ``user_id`` and ``label``.
Training is RecBole's own ``Trainer._train_epoch`` (its Adam) over shuffled
batches; eval AUC is sklearn's over ``DIEN.predict`` on the whole eval split.
Writes one JSON result.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from typing import Dict, Mapping, Tuple

import numpy as np

# transformed feature names (feedrank/features.py; not imported: this runs outside the project env)
ITEM, CATEGORY, REGION, USER_REGION = "item_id_idx", "category_id_idx", "region_id_idx", "user_region_id_idx"
CLICK_ITEMS, CLICK_CATEGORIES, CLICK_REGIONS = "click_item_ids_idx", "click_category_ids_idx", "click_region_ids_idx"
LABEL = "label"
ITEM_FEATURES = (ITEM, CATEGORY, REGION)   # RecBole item-table fields, in this order
VOCAB_OF = {ITEM: "item", CATEGORY: "category", REGION: "region", USER_REGION: "region"}


def load_npz(path: str) -> Tuple[Dict[str, Dict[str, np.ndarray]], Dict[str, int]]:
    with np.load(path) as z:
        splits: Dict[str, Dict[str, np.ndarray]] = {}
        vocab: Dict[str, int] = {}
        for key in z.files:
            group, name = key.split("/", 1)
            if group == "vocab":
                vocab[name] = int(z[key])
            else:
                splits.setdefault(group, {})[name] = z[key]
    return splits, vocab


def recbole_arrays(splits: Mapping[str, Mapping[str, np.ndarray]], vocab: Mapping[str, int]):
    """NumPy only (testable without torch): RecBole item ids for every
    (item, category, region) triple, the item table and per-split columns.

    Returns (item_table {field: [n_items]}, {split: {column: array}}); RecBole
    item 0 is the padding triple (0, 0, 0)."""
    c, r = vocab["category"], vocab["region"]

    def key(i, cat, reg):
        return (i.astype(np.int64) * c + cat) * r + reg

    cand = {s: key(a[ITEM], a[CATEGORY], a[REGION]) for s, a in splits.items()}
    hist = {s: key(a[CLICK_ITEMS], a[CLICK_CATEGORIES], a[CLICK_REGIONS]) for s, a in splits.items()}
    keys = np.unique(np.concatenate([np.zeros(1, np.int64)] + [cand[s].ravel() for s in splits]
                                    + [hist[s].ravel() for s in splits]))
    assert keys[0] == 0  # the padding triple is RecBole's padding item 0
    table = {ITEM: keys // (c * r), CATEGORY: (keys // r) % c, REGION: keys % r}
    columns = {}
    for s, a in splits.items():
        lengths = (a[CLICK_ITEMS] != 0).sum(axis=1)
        columns[s] = {
            "item_id": np.searchsorted(keys, cand[s]),
            "item_id_list": np.searchsorted(keys, hist[s]),
            "item_length": np.maximum(lengths, 1),
            "user_id": a[USER_REGION].astype(np.int64),
            "label": a[LABEL].astype(np.float32),
            "true_length": lengths,
        }
    return table, columns


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--npz", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--embedding-size", type=int, default=16)
    p.add_argument("--mlp", type=int, nargs="+", default=[200, 80])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.npz, args.out = os.path.abspath(args.npz), os.path.abspath(args.out)

    import recbole
    import torch
    from recbole.config import Config
    from recbole.data.interaction import Interaction
    from recbole.model.sequential_recommender.dien import DIEN
    from recbole.sampler import SeqSampler
    from recbole.trainer import Trainer
    from recbole.utils import FeatureType, init_seed
    from sklearn.metrics import roc_auc_score

    # Importing recbole.model.sequential_recommender runs sine.py, which switches autograd
    # anomaly detection on for the whole process (a debugging mode that records a stack trace
    # per op and slowed DIEN's training several-fold here); a fair peer runs without it.
    anomaly_default = torch.is_anomaly_enabled()
    torch.autograd.set_detect_anomaly(False)
    torch.set_num_threads(args.threads)
    workdir = tempfile.mkdtemp(prefix="recbole_dien_")
    os.chdir(workdir)  # RecBole's Trainer writes log_tensorboard/ and saved/ under the CWD

    splits, vocab = load_npz(args.npz)
    max_len = splits["train"][CLICK_ITEMS].shape[1]
    t0 = time.perf_counter()
    table, cols = recbole_arrays(splits, vocab)
    n_items = len(table[ITEM])

    argv, sys.argv = sys.argv, sys.argv[:1]  # RecBole's Config also parses `--key=value` from argv
    config = Config(model="DIEN", dataset="feedrank", config_dict={
        "embedding_size": args.embedding_size, "mlp_hidden_size": list(args.mlp),
        "dropout_prob": 0.0, "alpha": 1.0, "gru_type": "AUGRU", "pooling_mode": "mean",
        "learner": "adam", "learning_rate": args.lr, "weight_decay": 0.0,
        "train_batch_size": args.batch, "epochs": args.epochs, "seed": args.seed,
        "reproducibility": True, "use_gpu": False, "show_progress": False,
        "MAX_ITEM_LIST_LENGTH": max_len, "LABEL_FIELD": "label",
        "checkpoint_dir": os.path.join(workdir, "saved"), "data_path": workdir,
    })
    sys.argv = argv
    init_seed(args.seed, reproducibility=True)
    torch.set_num_threads(args.threads)  # init_seed leaves threads alone; set again to be sure

    class ExamplesDataset:
        """What DIEN, ContextSeqEmbLayer and SeqSampler read from a RecBole Dataset."""

        def __init__(self):
            self.config = config
            self.uid_field, self.iid_field = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
            self.user_num, self.item_num = vocab["region"], n_items
            self.field2type = {self.uid_field: FeatureType.TOKEN, self.iid_field: FeatureType.TOKEN,
                               USER_REGION: FeatureType.TOKEN,
                               **{f: FeatureType.TOKEN for f in ITEM_FEATURES}}
            self._num = {self.uid_field: self.user_num, self.iid_field: self.item_num,
                         **{f: vocab[VOCAB_OF[f]] for f in (*ITEM_FEATURES, USER_REGION)}}

        def num(self, field):
            return self._num[field]

        def get_item_feature(self):
            return Interaction({f: torch.from_numpy(table[f]) for f in ITEM_FEATURES})

        def get_user_feature(self):
            return Interaction({USER_REGION: torch.arange(self.user_num)})

    dataset = ExamplesDataset()
    sampler = SeqSampler(dataset)
    neg_field = config["NEG_PREFIX"] + config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    tensors = {}
    for s, c in cols.items():
        hist = c["item_id_list"]
        neg = sampler.sample_neg_sequence(torch.from_numpy(hist.ravel())).view(hist.shape)
        tensors[s] = {
            config["USER_ID_FIELD"]: torch.from_numpy(c["user_id"]),
            config["ITEM_ID_FIELD"]: torch.from_numpy(c["item_id"]),
            config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]: torch.from_numpy(hist),
            neg_field: neg,
            config["ITEM_LIST_LENGTH_FIELD"]: torch.from_numpy(c["item_length"]),
            "label": torch.from_numpy(c["label"]),
        }
    prep_s = time.perf_counter() - t0

    model = DIEN(config, dataset)
    trainer = Trainer(config, model)
    train, n_train = tensors["train"], len(cols["train"]["label"])
    gen = torch.Generator().manual_seed(args.seed)

    def batches():
        """Shuffled Interaction batches, as RecBole's training DataLoader yields them."""
        order = torch.randperm(n_train, generator=gen)
        for i in range(0, n_train, args.batch):
            idx = order[i:i + args.batch]
            yield Interaction({k: v[idx] for k, v in train.items()})

    def eval_auc() -> float:
        model.eval()
        ev = tensors["eval"]
        n = len(cols["eval"]["label"])
        scores = []
        with torch.no_grad():
            for i in range(0, n, 4096):
                scores.append(model.predict(Interaction({k: v[i:i + 4096] for k, v in ev.items()})).numpy())
        return float(roc_auc_score(cols["eval"]["label"], np.concatenate(scores)))

    rows = []
    start = time.perf_counter()
    for epoch in range(args.epochs):
        t = time.perf_counter()
        loss = trainer._train_epoch(batches(), epoch)  # RecBole's own train step (train mode, Adam)
        seconds = time.perf_counter() - t
        auc = eval_auc()
        rows.append({"epoch": epoch + 1, "train_s": round(seconds, 3),
                     "samples_per_s": round(n_train / seconds, 1),
                     "train_loss_sum": round(float(loss), 5), "eval_auc": auc})
        print(f"  peer epoch {epoch + 1}: {seconds:.1f} s, {n_train / seconds:,.0f} samples/s, "
              f"eval AUC {auc:.4f}", flush=True)
    wall = time.perf_counter() - start

    lengths = cols["train"]["true_length"]
    result = {
        "name": "peer (RecBole DIEN, torch CPU)", "params": int(sum(p.numel() for p in model.parameters())),
        "config": {k: config[k] for k in ("embedding_size", "mlp_hidden_size", "dropout_prob", "alpha",
                                          "gru_type", "pooling_mode", "learner", "learning_rate",
                                          "train_batch_size", "MAX_ITEM_LIST_LENGTH")},
        "recbole_items": n_items, "prep_s": round(prep_s, 2),
        "anomaly_detection_on_import": anomaly_default, "anomaly_detection": torch.is_anomaly_enabled(),
        "train_click_len_zero_clamped": int((lengths == 0).sum()),
        "epochs": rows, "wall_s": round(wall, 2),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "recbole": recbole.__version__, "numpy": np.__version__,
                     "torch_threads": torch.get_num_threads()},
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
