"""Invariants of `feedrank.features.FeatureSpec`, the feature contract passed by value:
built-ins first and in their order, one feature per declared column on its side and of
its kind, unique names, a JSON round trip, the file beside a model, and equality and
hashing by the declaration.  Every expectation is written out by hand."""
from __future__ import annotations

import dataclasses

import pytest

from feedrank import features as F

BUILTIN_IDS = ["item_id", "category_id", "region_id", "user_region_id"]
BUILTIN_DENSE = ["price", "item_hist_impressions", "item_hist_clicks", "item_hist_ctr", "region_match",
                 "interest_cat_share", "user_hist_impressions", "user_hist_clicks", "user_hist_ctr",
                 "user_cat_impressions", "user_cat_clicks", "user_cat_ctr", "session_cat_share", "cat_recency_h",
                 "user_item_impressions", "item_seen_recency_h"]
BUILTIN_VOCABS = ["item", "category", "region", "token", "age"]
SEQUENCES = ["click_item_ids", "click_category_ids", "click_region_ids", "view_item_ids", "view_category_ids",
             "view_region_ids", "conv_item_ids", "conv_category_ids", "search_tokens"]
AGES = ["click_ages", "view_ages", "conv_ages", "search_ages"]
HISTORY = ["click_item_seller", "view_item_seller", "conv_item_seller"]   # SPEC's declared item categorical

# one column of every kind on each table, in an order that mixes tables and kinds
COLUMNS = (
    F.Declared("users", "tier", "categorical"),
    F.Declared("items", "headline", "tokens", max_tokens=3, oov_buckets=10),
    F.Declared("items", "floor_area", "numeric", default=-1.0, log1p=True),
    F.Declared("items", "seller", "categorical", oov_buckets=3, frequency_threshold=2),
    F.Declared("users", "age", "numeric", default=30.0),
    F.Declared("users", "interests", "tokens", max_tokens=4, oov_buckets=5),
)
SPEC = F.FeatureSpec(COLUMNS)


def _names(features) -> list:
    return [f.name for f in features]


def test_the_builtin_spec_is_the_builtin_features_in_their_order():
    assert F.BUILTIN == F.FeatureSpec() and F.BUILTIN.declared == ()
    assert _names(F.BUILTIN.id_features) == BUILTIN_IDS
    assert _names(F.BUILTIN.dense_features) == BUILTIN_DENSE
    assert _names(F.BUILTIN.vocabs) == BUILTIN_VOCABS
    assert F.BUILTIN.bag_features == ()
    assert _names(F.BUILTIN.seq_features) == SEQUENCES + AGES
    assert [(s.name, c.name) for s, c in F.BUILTIN.matched] == [
        ("click_item_ids", "item_id"), ("click_category_ids", "category_id"), ("click_region_ids", "region_id"),
        ("view_item_ids", "item_id"), ("view_category_ids", "category_id"), ("view_region_ids", "region_id"),
        ("conv_item_ids", "item_id"), ("conv_category_ids", "category_id")]
    assert F.BUILTIN.features_of_side("candidate") == [
        "item_id", "category_id", "region_id", "price", "item_hist_impressions", "item_hist_clicks",
        "item_hist_ctr", "user_cat_impressions", "user_cat_clicks", "user_cat_ctr", "session_cat_share",
        "cat_recency_h", "user_item_impressions", "item_seen_recency_h"]
    assert F.BUILTIN.features_of_side("user") == (
        ["user_region_id", "user_hist_impressions", "user_hist_clicks", "user_hist_ctr"] + SEQUENCES + AGES)


def test_declared_columns_come_after_the_builtins_one_feature_each_on_its_side():
    assert _names(SPEC.id_features) == BUILTIN_IDS + ["user_tier", "item_seller"]
    assert SPEC.id_features[len(BUILTIN_IDS):] == (
        F.IdFeature("user_tier", F.Vocab("attr_user_tier", 2, 1), "user"),
        F.IdFeature("item_seller", F.Vocab("attr_item_seller", 3, 2), "candidate"))
    assert SPEC.dense_features[len(BUILTIN_DENSE):] == (
        F.DenseFeature("item_floor_area", "candidate", default=-1.0, log1p=True),
        F.DenseFeature("user_age", "user", default=30.0))
    assert SPEC.bag_features == (
        F.BagFeature("item_headline", F.Vocab("attr_item_headline", 10, 1), "candidate", 3),
        F.BagFeature("user_interests", F.Vocab("attr_user_interests", 5, 1), "user", 4))
    assert _names(SPEC.vocabs) == BUILTIN_VOCABS + ["attr_user_tier", "attr_item_headline", "attr_item_seller",
                                                    "attr_user_interests"]
    # the categorical item column reaches every item channel's history; the other kinds do not
    assert _names(SPEC.seq_features) == SEQUENCES + AGES + HISTORY
    seller = F.Vocab("attr_item_seller", 3, 2)
    assert SPEC.attribute_sequences == (
        F.SeqFeature("click_item_seller", seller, "click", F.CLICK_LEN, "item_seller"),
        F.SeqFeature("view_item_seller", seller, "view", F.VIEW_LEN, "item_seller"),
        F.SeqFeature("conv_item_seller", seller, "conversion", F.CONVERSION_LEN, "item_seller"))
    assert SPEC.history_columns == (COLUMNS[3],) and SPEC.attributes_of("view") == SPEC.attribute_sequences[1:2]
    assert [(s.name, c.name) for s, c in SPEC.matched[len(F.MATCHED):]] == [
        ("click_item_seller", "item_seller"), ("view_item_seller", "item_seller"), ("conv_item_seller", "item_seller")]
    assert SPEC.matched[:len(F.MATCHED)] == F.BUILTIN.matched == F.MATCHED
    # the built-in prefix is exactly the built-in spec's
    assert SPEC.id_features[:len(BUILTIN_IDS)] == F.BUILTIN.id_features
    assert SPEC.dense_features[:len(BUILTIN_DENSE)] == F.BUILTIN.dense_features
    assert SPEC.vocabs[:len(BUILTIN_VOCABS)] == F.BUILTIN.vocabs


def test_the_views_of_a_declared_spec():
    assert SPEC.declared_of("items") == (COLUMNS[1], COLUMNS[2], COLUMNS[3])
    assert SPEC.declared_on_side("user") == (COLUMNS[0], COLUMNS[4], COLUMNS[5])
    names = SPEC.model_input_names()
    assert names[:6] == ["item_id_idx", "category_id_idx", "region_id_idx", "user_region_id_idx",
                         "user_tier_idx", "item_seller_idx"]
    assert names[-4:] == ["item_floor_area_x", "user_age_x", "item_headline_idx", "user_interests_idx"]
    assert len(names) == len(set(names)) == 6 + 9 + 4 + 3 + 18 + 2   # ids, sequences, ages, attributes, numbers, bags
    assert SPEC.raw_names()[-7:] == ["item_floor_area", "user_age", "label", "conversion", "impression_id",
                                     "user_id", "ts"]
    assert SPEC.features_of_side("user")[:6] == ["user_region_id", "user_tier", "user_hist_impressions",
                                                 "user_hist_clicks", "user_hist_ctr", "user_age"]
    assert "user_interests" in SPEC.features_of_side("user")
    assert SPEC.features_of_side("candidate")[-3:] == ["item_seen_recency_h", "item_floor_area", "item_headline"]
    assert [d.name for d in SPEC.request_dense("user")] == ["user_hist_impressions", "user_hist_clicks",
                                                            "user_hist_ctr", "user_age"]
    assert SPEC.is_dense("user_age") and SPEC.is_dense("price") and not SPEC.is_dense("user_tier")
    assert not F.BUILTIN.is_dense("user_age")


@pytest.mark.parametrize("columns, message", [
    ((F.Declared("items", "hist_clicks", "numeric"),), r"clash with other features: \['item_hist_clicks'\]"),
    ((F.Declared("users", "region_id", "categorical"),), r"clash with other features: \['user_region_id'\]"),
    ((F.Declared("items", "size", "numeric"), F.Declared("items", "size", "tokens")),
     r"clash with other features: \['item_size'\]"),
    ((F.Declared("items", "size", "text"),), r"declared column items.size: unknown kind 'text'"),
    ((F.Declared("posts", "size", "numeric"),), r"declared column posts.size: unknown table 'posts'"),
    # its history sequences would be the built-in item id sequences
    ((F.Declared("items", "ids", "categorical"),),
     r"clash with other features: \['click_item_ids', 'conv_item_ids', 'view_item_ids'\]"),
])
def test_a_clash_or_an_unknown_kind_or_table_is_refused_naming_it(columns, message):
    with pytest.raises(ValueError, match=message):
        F.FeatureSpec(columns)


def test_only_declared_columns_make_a_spec():
    with pytest.raises(TypeError, match="FeatureSpec.declared holds Declared columns, got dict"):
        F.FeatureSpec(({"table": "items", "column": "size", "kind": "numeric"},))


def test_json_round_trip_is_the_identity():
    one = F.FeatureSpec((F.Declared("users", "tier", "categorical"),))
    assert one.to_json() == ('{"declared": [{"column": "tier", "default": 0.0, "frequency_threshold": 1, '
                             '"kind": "categorical", "log1p": false, "max_tokens": 16, "oov_buckets": 2, '
                             '"table": "users"}], "event_ages": true, "seen_before": true}')
    assert F.FeatureSpec.from_json(one.to_json()) == one
    no_ages = F.FeatureSpec(one.declared, event_ages=False)
    assert F.FeatureSpec.from_json(no_ages.to_json()) == no_ages != one
    assert F.FeatureSpec.from_json(SPEC.to_json()) == SPEC
    assert F.FeatureSpec.from_json(SPEC.to_json()).bag_features == SPEC.bag_features
    assert F.BUILTIN.to_json() == '{"declared": [], "event_ages": true, "seen_before": true}'
    for empty in ("", None):
        assert F.FeatureSpec.from_json(empty) == F.BUILTIN
    assert F.FeatureSpec.from_json('{"declared": []}') == F.FeatureSpec(seen_before=False)


def test_from_config_applies_the_kind_defaults_in_table_order():
    got = F.FeatureSpec.from_config({"users": [{"name": "age_band", "kind": "categorical", "oov_buckets": 3}],
                                     "items": [{"name": "title", "kind": "tokens"}]})
    assert got.declared == (F.Declared("items", "title", "tokens", oov_buckets=10),
                            F.Declared("users", "age_band", "categorical", oov_buckets=3))
    assert F.FeatureSpec.from_config(None) == F.BUILTIN


def test_write_and_read_beside_a_model(tmp_path):
    assert F.DECLARED_FILE == "declared_features.json"
    assert F.FeatureSpec.read(str(tmp_path)) == F.BUILTIN   # no file: the built-in contract
    assert F.FeatureSpec.read(str(tmp_path / "missing")) == F.BUILTIN
    path = SPEC.write(str(tmp_path))
    assert path == f"{tmp_path}/declared_features.json"
    assert (tmp_path / "declared_features.json").read_text() == SPEC.to_json()
    assert F.FeatureSpec.read(str(tmp_path) + "/") == SPEC
    F.BUILTIN.write(str(tmp_path))
    assert (tmp_path / "declared_features.json").read_text() == (
        '{"declared": [], "event_ages": true, "seen_before": true}')
    assert F.FeatureSpec.read(str(tmp_path)) == F.BUILTIN


def test_a_model_exported_before_event_ages_keeps_its_inputs(tmp_path):
    """The former format, a bare list of declared columns, is that contract without ages."""
    (tmp_path / "declared_features.json").write_text(
        '[{"column": "tier", "default": 0.0, "frequency_threshold": 1, "kind": "categorical", '
        '"log1p": false, "max_tokens": 16, "oov_buckets": 2, "table": "users"}]')
    old = F.FeatureSpec.read(str(tmp_path))
    assert old.event_ages is False and [c.column for c in old.declared] == ["tier"]
    assert [s.name for s in old.seq_features] == SEQUENCES
    assert "age" not in _names(old.vocabs) and not any(n.endswith("_ages") for n in old.raw_names())
    assert F.FeatureSpec.from_json("[]") == F.FeatureSpec(event_ages=False, seen_before=False)
    with pytest.raises(ValueError, match="not a feature contract"):
        F.FeatureSpec.from_json('{"declared": [], "ages": true}')


def test_history_attributes_are_on_by_default_and_off_for_a_contract_written_before_them():
    assert SPEC.history_attributes and '"history_attributes": true' in SPEC.to_json()
    off = F.FeatureSpec(COLUMNS, history_attributes=False)
    assert off != SPEC and off.attribute_sequences == () and off.matched == F.MATCHED
    assert _names(off.seq_features) == SEQUENCES + AGES and F.FeatureSpec.from_json(off.to_json()) == off
    # written before history attributes: no key, so none (the model keeps being served its inputs)
    before = SPEC.to_json().replace(', "history_attributes": true', "")
    assert F.FeatureSpec.from_json(before) == off
    # no categorical item column: the setting changes nothing, is not written and reads True
    users_only = F.FeatureSpec(COLUMNS[:3], history_attributes=False)
    assert users_only == F.FeatureSpec(COLUMNS[:3]) and users_only.history_attributes
    assert "history_attributes" not in users_only.to_json() and "history_attributes" not in F.BUILTIN.to_json()
    assert F.FeatureSpec.from_config({"items": [{"name": "seller", "kind": "categorical"}],
                                      "history_attributes": False}).attribute_sequences == ()
    assert len(F.FeatureSpec.from_config({"items": [{"name": "seller", "kind": "categorical"}]}).matched) == 11


def test_seen_before_is_on_by_default_and_off_for_a_contract_written_before_it():
    """The user's earlier impressions of the candidate: two cross features after the built-in
    dense ones, sent once per candidate; a contract without the key (written before them) has none."""
    assert F.BUILTIN.seen_before and F.BUILTIN.dense_features[-2:] == F.SEEN_FEATURES
    assert [(d.name, d.side, d.default, d.log1p, d.max_value) for d in F.SEEN_FEATURES] == [
        ("user_item_impressions", "cross", 0.0, True, None), ("item_seen_recency_h", "cross", 720.0, True, 720.0)]
    off = F.FeatureSpec(COLUMNS, seen_before=False)
    assert off != SPEC and _names(off.dense_features) == BUILTIN_DENSE[:-2] + ["item_floor_area", "user_age"]
    assert "user_item_impressions" not in off.features_of_side("candidate")
    assert F.FeatureSpec.from_json(off.to_json()) == off
    assert F.FeatureSpec.from_json(SPEC.to_json().replace(', "seen_before": true', "")) == off
    assert F.FeatureSpec.from_config({"seen_before": False}) == F.FeatureSpec(seen_before=False)


def test_event_ages_follow_every_channel_and_label_by_the_bounds():
    ages = [s for s in F.BUILTIN.seq_features if s.ages]
    assert [(s.name, s.channel, s.max_len) for s in ages] == [
        ("click_ages", "click", F.CLICK_LEN), ("view_ages", "view", F.VIEW_LEN),
        ("conv_ages", "conversion", F.CONVERSION_LEN), ("search_ages", "search", F.SEARCH_LEN)]
    assert {F.AGES_OF[s.channel] for s in F.SEQ_FEATURES} == set(ages)
    # a second, a minute, 59 minutes, an hour, a day, 30 days, a year
    assert F.age_labels([1, 60, 3599, 3600, 86_400, 30 * 86_400, 365 * 86_400]) == [
        "age00", "age01", "age04", "age05", "age09", "age12", "age12"]
    assert F.FeatureSpec.from_config({"items": [], "users": [], "event_ages": False}).event_ages is False


def test_equality_and_hash_follow_the_declaration():
    same = F.FeatureSpec(list(COLUMNS))   # a list is kept as a tuple
    assert same == SPEC and hash(same) == hash(SPEC) and same.declared == COLUMNS
    assert {SPEC: "a"}[same] == "a"
    reordered = F.FeatureSpec(COLUMNS[::-1])
    assert reordered != SPEC   # the order of the declaration is the order of the features
    assert F.FeatureSpec((COLUMNS[0],)) != F.BUILTIN
    assert len({F.BUILTIN, F.FeatureSpec(), F.FeatureSpec.from_json('{"declared": [], "seen_before": true}')}) == 1


def test_a_spec_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SPEC.declared = ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        SPEC.id_features = ()
    assert isinstance(SPEC.id_features, tuple) and isinstance(SPEC.vocabs, tuple)
