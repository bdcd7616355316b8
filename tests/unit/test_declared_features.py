"""Declared item/user columns (the config's ``features`` section, docs/features.md):
the feature contract they extend, the config's checks, the example generator's
snapshot semantics and errors, and a real Transform + Trainer + export whose
``serving_default`` takes them."""
from __future__ import annotations

import glob
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from feedrank import config as config_lib
from feedrank import features as F
from feedrank.events.io import ContractError
from feedrank.examples.build import crosses
from feedrank.typed import ConfigError
from tests.helpers import examplegen as H
from tests.helpers.config import TINY_CONFIG

DECL = (
    F.Declared("items", "headline", "tokens", max_tokens=3, oov_buckets=10),
    F.Declared("items", "floor_area", "numeric", default=-1.0, log1p=True),
    F.Declared("users", "tier", "categorical"),
    F.Declared("items", "seller", "categorical"),   # on the candidate's side and on the histories'
)
SPEC = F.FeatureSpec(DECL)
CHANGE_TS_OFFSET = 2 * 86_400   # the second attribute rows hold from two days into the log


# --- the feature contract ----------------------------------------------------------------------

def test_declared_columns_extend_the_builtin_contract():
    builtin = F.BUILTIN
    assert (builtin.vocabs, builtin.id_features, builtin.dense_features, builtin.bag_features) == (
        F.BUILTIN_VOCABS + (F.AGE_VOCAB,), F.BUILTIN_ID_FEATURES, F.BUILTIN_DENSE_FEATURES + F.SEEN_FEATURES, ())
    assert builtin.declared == ()
    assert [c.feature_name for c in DECL] == ["item_headline", "item_floor_area", "user_tier", "item_seller"]
    assert [c.side for c in DECL] == ["candidate", "candidate", "user", "candidate"]
    assert SPEC.id_features == F.BUILTIN_ID_FEATURES + (
        F.IdFeature("user_tier", F.Vocab("attr_user_tier", 2, 1), "user"),
        F.IdFeature("item_seller", F.Vocab("attr_item_seller", 2, 1), "candidate"))
    assert [s.name for s in SPEC.attribute_sequences] == ["click_item_seller", "view_item_seller", "conv_item_seller"]
    assert SPEC.dense_features == F.BUILTIN_DENSE_FEATURES + F.SEEN_FEATURES + (
        F.DenseFeature("item_floor_area", "candidate", default=-1.0, log1p=True),)
    assert SPEC.bag_features == (F.BagFeature("item_headline", F.Vocab("attr_item_headline", 10, 1), "candidate", 3),)
    assert [v.name for v in SPEC.vocabs[len(F.BUILTIN_VOCABS) + 1:]] == ["attr_item_headline", "attr_user_tier",
                                                                         "attr_item_seller"]
    raw = SPEC.raw_feature_spec()
    assert isinstance(raw["item_headline"], tf.io.VarLenFeature)
    assert raw["user_tier"] == tf.io.FixedLenFeature([], tf.string)
    assert raw["item_floor_area"] == tf.io.FixedLenFeature([], tf.float32, default_value=-1.0)
    names = SPEC.model_input_names()
    assert {"item_headline_idx", "item_floor_area_x", "user_tier_idx"} <= set(names) and len(set(names)) == len(names)
    assert "user_tier" in SPEC.features_of_side("user") and "item_headline" not in SPEC.features_of_side("user")
    assert {"item_headline", "item_floor_area", "item_seller"} <= set(SPEC.features_of_side("candidate"))
    assert "click_item_seller" in SPEC.features_of_side("user")
    assert F.FeatureSpec.from_json(SPEC.to_json()) == SPEC and SPEC.declared == DECL
    # the built-in contract is untouched by any other spec
    assert (builtin.vocabs, builtin.id_features) == (F.BUILTIN_VOCABS + (F.AGE_VOCAB,), F.BUILTIN_ID_FEATURES)
    assert F.FeatureSpec.from_json("") == F.BUILTIN and F.FeatureSpec.read("/nonexistent-model-dir") == F.BUILTIN


def test_from_config_applies_the_kind_defaults():
    got = F.FeatureSpec.from_config({"items": [{"name": "title", "kind": "tokens"}],
                                     "users": [{"name": "age_band", "kind": "categorical", "oov_buckets": 3}]})
    assert got.declared == (F.Declared("items", "title", "tokens", oov_buckets=10),
                            F.Declared("users", "age_band", "categorical", oov_buckets=3))


# --- the config --------------------------------------------------------------------------------

def _config(tmp_path, features: str) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(f"base: {TINY_CONFIG}\n"
                    f"features:\n{features}")
    return str(path)


def test_a_valid_section_is_the_configs_feature_spec(tmp_path):
    cfg = config_lib.load(_config(tmp_path, "  items:\n    - {name: area_m2, kind: numeric, log1p: true}\n"
                                            "  users:\n    - {name: gender, kind: categorical}\n"))
    assert cfg.features_spec.declared == (F.Declared("items", "area_m2", "numeric", log1p=True),
                                          F.Declared("users", "gender", "categorical"))
    assert cfg.features_spec is cfg.features_spec   # built once per config


@pytest.mark.parametrize("section, message", [
    ("  items:\n    - {name: title, kind: text}\n", r"features.items.title.kind must be one of"),
    ("  users:\n    - {name: gender, kind: categorical}\n    - {name: gender, kind: numeric}\n",
     r"features.users.gender: declared twice"),
    ("  items:\n    - {name: price, kind: numeric}\n", r"features.items.price: 'price' is a built-in column"),
    ("  users:\n    - {name: user_id, kind: categorical}\n", r"'user_id' is a built-in column"),
    ("  items:\n    - {name: 2nd-title, kind: tokens}\n", r"features.items\[0\].name must be an identifier"),
    ("  items:\n    - {name: area, kind: numeric, max_tokens: 4}\n", r"features.items.area: unknown option"),
    ("  items:\n    - {name: title, kind: tokens, max_tokens: 0}\n",
     r"features.items.title.max_tokens must be an integer >= 1"),
    ("  posts:\n    - {name: title, kind: tokens}\n", r"features: unknown key\(s\) \['posts'\]"),
    ("  items:\n    - {name: hist_clicks, kind: numeric}\n",
     r"features: declared columns clash with other features: \['item_hist_clicks'\]"),
    # a categorical item column's history sequences would be the built-in item id sequences
    ("  items:\n    - {name: ids, kind: categorical}\n",
     r"features: declared columns clash with other features: \['click_item_ids', 'conv_item_ids', 'view_item_ids'\]"),
])
def test_config_errors_name_the_key(tmp_path, section, message):
    with pytest.raises(ConfigError, match=message):
        config_lib.load(_config(tmp_path, section))


# --- the example generator ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def declared_log(tmp_path_factory):
    """A small simulated log whose items/users tables carry three extra columns, with a
    second row (``valid_from``) for a third of the items and users."""
    d = H.make_log(str(tmp_path_factory.mktemp("declared_log")))
    ev, items, users = H.load(d), H.load(d, "items"), H.load(d, "users")
    change = int(ev.ts.min()) + CHANGE_TS_OFFSET
    rng = np.random.default_rng(3)
    items = items.drop(columns=[c for c in ("valid_from",) if c in items.columns])
    items["headline"] = [None if i % 7 == 0 else " ".join(f"w{rng.integers(30)}" for _ in range(rng.integers(1, 6)))
                         for i in range(len(items))]
    items["floor_area"] = np.where(np.arange(len(items)) % 5 == 0, np.nan, rng.uniform(10, 200, len(items)))
    items["seller"] = [None if i % 6 == 1 else f"s{i % 4}" for i in range(len(items))]   # i % 6 == 1: never changes
    items["valid_from"] = pd.array([pd.NA] * len(items), dtype="Int64")
    later = items.iloc[::3].copy()
    later["headline"] = "changed " + later["item_id"]
    later["floor_area"] = 1000.0
    later["seller"] = "moved"
    later["valid_from"] = change
    users = users.drop(columns=[c for c in ("valid_from",) if c in users.columns])
    users["tier"] = [None if i % 9 == 0 else f"t{i % 3}" for i in range(len(users))]
    users["valid_from"] = pd.array([pd.NA] * len(users), dtype="Int64")
    later_users = users.iloc[::3].copy()
    later_users["tier"] = "promoted"
    later_users["valid_from"] = change
    H.save(pd.concat([items, later], ignore_index=True), d, "items")
    H.save(pd.concat([users, later_users], ignore_index=True), d, "users")
    return d


@pytest.fixture(scope="module")
def declared_run(declared_log, tmp_path_factory):
    return H.run(declared_log, str(tmp_path_factory.mktemp("declared_run")), spec=SPEC, num_shards=1)


def _as_of(table: pd.DataFrame, key: str, ident: str, ts: int) -> pd.Series:
    rows = table[table[key] == ident]
    vf = rows["valid_from"].astype("float64").fillna(-np.inf)
    valid = rows[vf.to_numpy() <= ts]
    return valid.iloc[int(np.argmax(vf[vf <= ts].to_numpy()))] if len(valid) else rows.iloc[int(np.argmin(vf))]


def test_declared_columns_are_written_as_of_the_impression(declared_log, declared_run):
    items, users = H.load(declared_log, "items"), H.load(declared_log, "users")
    examples = [H.to_dict(r) for split in ("train", "valid", "eval")
                for r in H.read_records(declared_run["output_dir"], split)]
    change = int(H.load(declared_log).ts.min()) + CHANGE_TS_OFFSET
    seen_change = seen_missing = 0
    sellers = set()
    for ex in examples[::7]:
        ts = ex["ts"][0]
        item = _as_of(items, "item_id", ex["item_id"][0], ts)
        user = _as_of(users, "user_id", ex["user_id"][0], ts)
        headline = item["headline"].split()[:3] if isinstance(item["headline"], str) else []
        area = -1.0 if np.isnan(item["floor_area"]) else float(np.float32(item["floor_area"]))
        assert ex["item_headline"] == headline
        assert ex["item_floor_area"] == [pytest.approx(area)]
        assert ex["user_tier"] == [user["tier"] or ""]
        seen_change += ts >= change and ex["user_tier"] == ["promoted"]
        seen_missing += ex["item_headline"] == []
        assert ex["item_seller"] == [item["seller"] or ""]
        for seq in SPEC.attribute_sequences:   # each history post's seller as of the impression
            posts = ex[F.ITEMS_OF[seq.channel].name]
            assert ex[seq.name] == [_as_of(items, "item_id", p, ts)["seller"] or "" for p in posts], seq.name
            sellers.update(ex[seq.name])
    assert seen_change > 0 and seen_missing > 0 and {"", "moved", "s1"} <= sellers


def _broken_log(src: str, dst: str, table: str, column: str, values) -> str:
    H.copy_log(src, dst)
    df = H.load(dst, table)
    if values is None:
        df = df.drop(columns=[column])
    else:
        df[column] = values(len(df))
    H.save(df, dst, table)
    return dst


@pytest.mark.parametrize("table, column, values, message", [
    ("items", "headline", None, r"table 'items' column 'headline' \(declared in features.items as tokens\) is missing"),
    ("items", "floor_area", lambda n: ["big"] * n, r"table 'items' column 'floor_area' .* has type 'string', "
                                                   r"expected numbers"),
    ("users", "tier", lambda n: np.arange(n), r"table 'users' column 'tier' .* has type 'int', expected text"),
])
def test_a_bad_declared_column_is_a_contract_error_naming_it(declared_log, tmp_path, table, column, values,
                                                            message):
    log_dir = _broken_log(declared_log, str(tmp_path / "log"), table, column, values)
    with pytest.raises(ContractError, match=message):
        H.run(log_dir, str(tmp_path / "out"), spec=SPEC, num_shards=1)


def test_a_csv_numeric_column_with_text_is_a_contract_error(declared_log, tmp_path):
    log_dir = H.copy_log(declared_log, str(tmp_path / "log"))
    items = H.load(log_dir, "items")
    items["floor_area"] = items["floor_area"].astype(object)
    items.loc[3, "floor_area"] = "about 40"
    os.remove(os.path.join(log_dir, "items.parquet"))
    items.to_csv(os.path.join(log_dir, "items.csv"), index=False)
    with pytest.raises(ContractError, match=r"column 'floor_area' .* not numbers, e.g. 'about 40'"):
        H.run(log_dir, str(tmp_path / "out"), spec=SPEC, num_shards=1)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_an_infinite_declared_number_is_refused_before_any_beam_work(declared_log, tmp_path, fmt):
    log_dir = H.copy_log(declared_log, str(tmp_path / "log"))
    items = H.load(log_dir, "items")
    items.loc[[4, 8], "floor_area"] = [np.inf, -np.inf]
    if fmt == "csv":
        os.remove(os.path.join(log_dir, "items.parquet"))
        items.to_csv(os.path.join(log_dir, "items.csv"), index=False)
    else:
        H.save(items, log_dir, "items")
    with pytest.raises(ContractError, match=r"column 'floor_area' .* not finite, e.g. '?inf'? \(2 row\(s\)\)"):
        H.run(log_dir, str(tmp_path / "out"), spec=SPEC, num_shards=1)
    assert not os.path.exists(str(tmp_path / "out" / "examples"))


# --- Transform, families and export ------------------------------------------------------------

@pytest.fixture(scope="module")
def transformed(declared_run, tmp_path_factory):
    from tests.helpers.transform import analyze_and_transform

    raw = sorted(glob.glob(os.path.join(declared_run["output_dir"], "Split-train", "*")))
    out = tmp_path_factory.mktemp("tft")
    return analyze_and_transform(raw, str(out), SPEC)


def _request(records, spec: F.FeatureSpec):
    """``serving_default``'s request of ``spec``: the first example's user side once, every
    example a candidate."""
    exs = [H.to_dict(r) for r in records]
    matrices = {s.name for s in spec.seq_features} | {b.name for b in spec.bag_features}
    floats = {d.name for d in spec.dense_features}

    def column(rows, name):
        if name in matrices:
            width = max(1, max(len(r) for r in rows))
            return tf.constant([r + [""] * (width - len(r)) for r in rows])
        return tf.constant([r[0] for r in rows], tf.float32 if name in floats else tf.string)

    req = {n: column([exs[0][n]], n) for n in spec.features_of_side("user")}
    req.update({n: column([e[n] for e in exs], n) for n in spec.features_of_side("candidate")})
    paired = []
    for rec, e in zip(records, exs):   # the same pairs as tf.Examples, crosses as the generator writes them
        ex, user = tf.train.Example.FromString(rec), tf.train.Example.FromString(records[0])
        for name in spec.features_of_side("user"):
            ex.features.feature[name].CopyFrom(user.features.feature[name])
        match, share = crosses(exs[0]["user_region_id"][0], e["region_id"][0], exs[0]["click_category_ids"],
                               e["category_id"][0])
        ex.features.feature[F.REGION_MATCH.name].float_list.value[:] = [match]
        ex.features.feature[F.INTEREST_CATEGORY_SHARE.name].float_list.value[:] = [share]
        paired.append(ex.SerializeToString())
    return req, paired


@pytest.mark.parametrize("family", ["dnn", "din"])
def test_a_family_trains_on_declared_columns_and_serves_them(family, declared_run, transformed, tmp_path):
    from feedrank.train import export, trainer
    from tests.helpers.model_harness import TINY

    transformed_file, tft_out = transformed
    out_spec = tft_out.transformed_feature_spec()
    assert list(out_spec["item_headline_idx"].shape) == [3] and "user_tier_idx" in out_spec
    assert "item_floor_area_x" in out_spec and tft_out.vocabulary_by_name("attr_user_tier_vocab")
    settings = {**TINY, "model": family, "epochs": 1, "batch_size": 128, "declared_features": SPEC.to_json()}
    spec = trainer.feature_spec(settings)   # the Trainer's contract comes from its settings, as in run_fn
    assert spec == SPEC
    model, _ = trainer.train([transformed_file], [transformed_file], tft_out, settings)
    assert {"item_headline_idx", "user_tier_idx", "item_floor_area_x", "item_seller_idx",
            "view_item_seller_idx"} <= {i.name.split(":")[0] for i in model.inputs}
    model_dir = export.export(model, tft_out, str(tmp_path / "model"), sampling_rate=0.5, spec=spec)
    assert F.FeatureSpec.read(model_dir) == SPEC   # serving reads the contract from the model dir

    loaded = tf.saved_model.load(model_dir)
    serving = loaded.signatures["serving_default"]
    assert {"item_headline", "item_floor_area", "user_tier"} <= set(serving.structured_input_signature[1])
    records = H.read_records(declared_run["output_dir"], "eval")
    # the user's side: a view history with a post without a seller (its "" stays beside its post)
    user = next(r for r in records if "" in H.to_dict(r)["view_item_seller"])
    records = [user] + records[:11]
    req, paired = _request(records, F.FeatureSpec.read(model_dir))
    got = serving(**req)["probabilities"].numpy()
    want = loaded.signatures["serving_tf_example"](examples=tf.constant(paired))["probabilities"].numpy()
    assert got.shape == (len(records),) and np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # the declared columns move the score: another headline changes a candidate's probability
    req["item_headline"] = tf.constant([["changed", "i0", "w1"]] * len(records))
    assert not np.allclose(serving(**req)["probabilities"].numpy(), got)
    # and so do the history posts' sellers (the trained projection and the match features)
    req["view_item_seller"] = tf.fill(tf.shape(req["view_item_seller"]), "moved")
    moved = serving(**req)["probabilities"].numpy()
    req["view_item_seller"] = tf.fill(tf.shape(req["view_item_seller"]), "s2")
    assert np.abs(serving(**req)["probabilities"].numpy() - moved).max() > 1e-6


def test_users_rows_sharded_with_their_events_give_the_one_shard_examples(declared_log, tmp_path):
    """The users table reaches each user shard as that shard's rows only: a table in two files,
    with a tie of equal ``valid_from`` (the first in file order wins) and users missing from it,
    gives the same examples on 1 shard as on 5."""
    log = H.copy_log(declared_log, str(tmp_path / "log"))
    users = H.load(log, "users")
    change = int(users["valid_from"].max())
    tie = users[users["valid_from"] == change].iloc[:40].assign(tier="second of a tie")   # loses: later in file
    users = pd.concat([users, tie], ignore_index=True)
    users = users[~users["user_id"].isin(users["user_id"].unique()[::11])]                # some users unknown
    os.remove(os.path.join(log, "users.parquet"))
    os.makedirs(os.path.join(log, "users"))
    half = len(users) // 2
    users.iloc[:half].to_parquet(os.path.join(log, "users", "part-0.parquet"), index=False)
    users.iloc[half:].to_parquet(os.path.join(log, "users", "part-1.parquet"), index=False)
    runs = [H.run(log, str(tmp_path / f"out{n}"), spec=SPEC, num_shards=n) for n in (1, 5)]
    got = [H.by_impression(r["output_dir"]) for r in runs]
    assert len(got[0]) > 1000 and got[0] == got[1]
    tiers = {t for ex in got[0].values() for t in H.to_dict(ex)["user_tier"]}
    assert "promoted" in tiers and "second of a tie" not in tiers and "" in tiers
