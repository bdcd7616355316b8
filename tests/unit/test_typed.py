"""The one config validator (`feedrank.typed`): field declarations, the messages that
name the key path, the inherited `from_mapping`, and its use by every section."""
import ast
import dataclasses
import os
from typing import Dict, List, Optional

import pytest

from feedrank import config as config_lib
from feedrank.examples.settings import ExampleSettings
from feedrank.typed import Checked, ConfigError, Section, build_typed, describe, setting
from tests.helpers.config import ROOT

DEMO = os.path.join(ROOT, "configs", "demo.yaml")


@dataclasses.dataclass
class Inner(Section):
    SECTION = "inner"
    rate: float = setting(0.5, above=0, max=1, doc="a share")
    mode: str = setting("a", choices=("a", "b"))

    def check(self, where: str) -> None:
        if self.mode == "b" and self.rate > 0.9:
            raise ConfigError(f"{where}.rate must be <= 0.9 with mode b, got {self.rate}")


@dataclasses.dataclass
class Outer(Section):
    SECTION = "outer"
    count: int = setting(3, min=1)
    sizes: List[int] = setting([8], min=1)
    limit: Optional[int] = setting(None, min=0)
    labels: Dict[str, str] = setting({})
    inner: Inner = dataclasses.field(default_factory=Inner)


@dataclasses.dataclass
class Strict(Checked):
    SECTION = "strict"
    width: int = setting(2, min=1)


@pytest.mark.parametrize("meta, words", [
    ({"min": 0}, "an integer >= 0"), ({"above": 0}, "an integer > 0"), ({"max": 9}, "an integer <= 9"),
    ({"below": 9}, "an integer < 9"), ({"min": 0, "max": 1}, "an integer in [0, 1]"),
    ({"above": 0, "max": 1}, "an integer in (0, 1]"), ({"min": 0, "below": 1}, "an integer in [0, 1)"),
    ({"choices": ("x", "y")}, "one of ['x', 'y']"), ({}, "an integer"),
])
def test_describe_names_the_type_and_the_open_or_closed_range(meta, words):
    assert describe(int, meta) == words


@pytest.mark.parametrize("values, message", [
    ({"count": 0}, "outer.count must be an integer >= 1, got 0"),
    ({"count": True}, "outer.count must be an integer >= 1, got True"),
    ({"sizes": [8, 0]}, "outer.sizes must be a list of integers >= 1, got [8, 0]"),
    ({"limit": -1}, "outer.limit must be an integer >= 0 (or null), got -1"),
    ({"labels": {"a": 1}}, "outer.labels.a must be a string, got 1"),
    ({"inner": {"rate": 0}}, "outer.inner.rate must be a number in (0, 1] (a share), got 0"),
    ({"inner": {"mode": "c"}}, "outer.inner.mode must be one of ['a', 'b'], got 'c'"),
    ({"inner": {"mode": "b", "rate": 1.0}}, "outer.inner.rate must be <= 0.9 with mode b, got 1.0"),
    ({"inner": 3}, "outer.inner must be a mapping with keys ['rate', 'mode'], got 3"),
    ({"cuont": 2}, "outer: unknown key(s) ['cuont']; allowed: ['count', 'inner', 'labels', 'limit', 'sizes']"),
])
def test_a_bad_key_or_value_is_one_line_naming_the_key_path(values, message):
    with pytest.raises(ConfigError) as err:
        Outer.from_mapping(values)
    assert str(err.value) == message


def test_from_mapping_is_inherited_converts_and_treats_null_as_the_defaults():
    out = Outer.from_mapping({"count": 2, "sizes": (4, 5), "inner": {"rate": 1}}, "x")
    assert (out.count, out.sizes, out.inner.rate) == (2, [4, 5], 1.0) and isinstance(out.inner.rate, float)
    assert Outer.from_mapping(None) == Outer() == build_typed(Outer, {"inner": None})
    with pytest.raises(ConfigError, match="^x must be a mapping, got list$"):
        Outer.from_mapping([1], "x")


def test_a_checked_section_checks_keyword_construction_too():
    with pytest.raises(ConfigError, match=r"^strict.width must be an integer >= 1, got 0$"):
        Strict(width=0)
    assert Strict(width=3).width == 3


def test_setting_copies_list_and_dict_defaults_per_instance():
    a, b = Outer(), Outer()
    a.sizes.append(9)
    a.labels["k"] = "v"
    assert b.sizes == [8] and b.labels == {}


def test_every_config_section_is_a_typed_section():
    for field in dataclasses.fields(config_lib.Config):
        default = getattr(config_lib.Config(), field.name)
        if dataclasses.is_dataclass(default):
            assert isinstance(default, Section), field.name


@pytest.mark.parametrize("text, message", [
    ("examples: {label_window_s: -5}", "examples.label_window_s must be an integer >= 0"),
    ("examples: {num_shards: -1}", "examples.num_shards must be an integer >= 0"),
    ("examples: {valid_split: random}", "examples.valid_split must be one of ['last_days', 'user_hash']"),
    ("examples: {max_bad_fraction: 2}", "examples.max_bad_fraction must be a number in [0, 1]"),
    ("simulate: {categories: 1}", "simulate.categories must be an integer >= 2"),
    ("simulate: {mode: shop}", "simulate.mode must be one of ['feed', 'ecommerce']"),
    ("word2vec: {negative: 0}", "word2vec.negative must be an integer >= 1"),
    ("mlflow: {port: 70000}", "mlflow.port must be an integer in [0, 65535]"),
    ("ab: {show: 0}", "ab.show must be an integer >= 1"),
    ("ab: {salt: ''}", "ab.salt must be a non-empty string"),
    ("transform: {statistics: 1}", "transform.statistics must be true or false"),
    ("tuner: {crossover_rate: 2}", "tuner.crossover_rate must be a number in [0.0, 1.0]"),
])
def test_config_load_rejects_out_of_range_values_in_one_line(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(f"base: {DEMO}\n{text}\n")
    with pytest.raises(ConfigError) as err:
        config_lib.load(str(path))
    text = str(err.value)
    assert text.startswith(f"run.yaml: {message}") and "\n" not in text


def test_the_example_generator_component_uses_the_same_validator(tmp_path):
    from components.example_gen.component import BehaviorExampleGen

    with pytest.raises(ConfigError, match=r"^BehaviorExampleGen.label_window_s must be an integer >= 0"):
        BehaviorExampleGen(input_base=str(tmp_path), label_window_s=-5)
    with pytest.raises(ConfigError, match=r"^BehaviorExampleGen.valid_user_share must be a number in \(0, 1\)"):
        BehaviorExampleGen(input_base=str(tmp_path), valid_user_share=1.0)
    assert ExampleSettings.from_mapping({"eval_days": 2}).eval_days == 2


def _imports(path: str):
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


@pytest.mark.parametrize("path", ["feedrank/sessions/settings.py", "feedrank/tune/settings.py",
                                  "feedrank/examples/settings.py"])
def test_the_settings_modules_do_not_import_the_train_stage(path):
    assert not [m for m in _imports(path) if m.startswith("feedrank.train")]
