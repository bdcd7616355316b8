"""Invariants of the built-in feature contract (`features.BUILTIN`) and what derives from it."""
import pytest

from feedrank import features as F
from feedrank.examples.tfdv_schema import make_schema


def test_names_are_unique_and_sides_valid():
    names = [f.name for f in F.BUILTIN.id_features] + [s.name for s in F.BUILTIN.seq_features] + \
        [d.name for d in F.BUILTIN.dense_features] + list(F.LABELS) + list(F.METADATA)
    assert len(names) == len(set(names))
    assert {f.side for f in F.BUILTIN.id_features} <= {"candidate", "user"}
    assert {d.side for d in F.BUILTIN.dense_features} <= {"candidate", "user", "cross"}
    assert {s.channel for s in F.BUILTIN.seq_features} == {"click", "view", "conversion", "search"}


def test_history_shares_the_candidate_vocabulary():
    by_name = {f.name: f for f in F.BUILTIN.id_features}
    for s in F.BUILTIN.seq_features:
        if s.shares_with is not None:
            assert by_name[s.shares_with].vocab == s.vocab, s.name
            assert by_name[s.shares_with].side == "candidate"
    # DIN's aligned click sequence mirrors the candidate's id features, in order.
    assert [s.shares_with for s in F.CLICK_SEQUENCE] == ["item_id", "category_id", "region_id"]
    assert len({s.max_len for s in F.CLICK_SEQUENCE}) == 1
    assert [s.shares_with for s in F.VIEW_SEQUENCE] == ["item_id", "category_id", "region_id"]
    assert len({s.max_len for s in F.VIEW_SEQUENCE}) == 1
    assert len({s.max_len for s in F.CONVERSION_SEQUENCE}) == 1


def test_every_vocab_is_used_and_has_oov_buckets():
    used = {f.vocab for f in F.BUILTIN.id_features} | {s.vocab for s in F.BUILTIN.seq_features}
    assert used == set(F.BUILTIN.vocabs)
    assert all(v.num_oov_buckets >= 1 for v in F.BUILTIN.vocabs)
    assert F.PAD_ID == 0


def test_schema_and_feature_spec_cover_the_same_features():
    spec = F.BUILTIN.raw_feature_spec()
    schema_names = {f.name for f in make_schema(F.BUILTIN).feature}
    assert schema_names == set(spec)


def test_serving_request_sides_partition_the_model_features():
    user, cand = set(F.BUILTIN.features_of_side("user")), set(F.BUILTIN.features_of_side("candidate"))
    assert not user & cand
    crosses = {d.name for d in F.BUILTIN.dense_features if d.side == "cross"}
    raw_inputs = set(F.BUILTIN.raw_feature_spec(include_labels=False, include_metadata=False))
    assert user | cand | crosses == raw_inputs


@pytest.mark.parametrize("dense", F.BUILTIN.dense_features, ids=lambda d: d.name)
def test_bounded_dense_features_have_schema_domains(dense):
    feat = next(f for f in make_schema(F.BUILTIN).feature if f.name == dense.name)
    if dense.min_value is not None:
        assert feat.float_domain.min == dense.min_value
    if dense.max_value is not None:
        assert feat.float_domain.max == dense.max_value


# --- the schemas of the run configs (the Dockerfile writes them into the image) -------------------
def test_write_config_schemas_skips_kubeflow_settings_and_names_a_broken_run_config(tmp_path):
    import shutil

    from feedrank.examples.tfdv_schema import schema_digest, write_config_schemas
    from feedrank.typed import ConfigError
    from tests.helpers.config import ROOT

    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.copy(f"{ROOT}/configs/kubeflow.yaml", configs / "kubeflow.yaml")
    (configs / "run.yaml").write_text("features:\n  users:\n    - {name: tier, kind: categorical}\n")
    (configs / "notes.txt").write_text("not a config")
    declared = F.FeatureSpec((F.Declared("users", "tier", "categorical"),))
    paths = write_config_schemas(str(tmp_path / "schema"), str(configs))
    assert paths == sorted(f"{tmp_path}/schema/{schema_digest(s)}/schema.pbtxt" for s in (F.BUILTIN, declared))
    (configs / "broken.yaml").write_text("trainer: {epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"configs/broken.yaml is not a valid run config, so its schema cannot "
                                          r"be written: .*epoch"):
        write_config_schemas(str(tmp_path / "schema"), str(configs))
