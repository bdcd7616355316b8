"""Typed settings: the one validator of every config section.

A section is a dataclass (usually a `Section`) whose fields declare, with
`setting`, their default, type, allowed values and meaning:

* the type hint gives the type (``int``, ``float``, ``bool``, ``str``,
  ``List[...]``, ``Dict[str, ...]``, ``Optional[...]``, a nested dataclass or
  ``Any``);
* ``choices``: the allowed values;
* ``min`` / ``max``: inclusive bounds, ``above`` / ``below``: exclusive bounds
  (for a list, of every element);
* ``doc``: what the value means, quoted in the error message.

`build_typed` builds a section from a YAML or JSON mapping: an unknown key, a
wrong type or a value out of range or not among the choices is a
`ConfigError` that names the key path and what it allows
(``examples.label_window_s must be an integer >= 0, got -5``), so a typo
never falls back to a default.  `Section.from_mapping` is the same for one
section class; `Section.check` holds a section's rules across its fields, and
`Checked` sections also check themselves when built from Python keywords.
"""
from __future__ import annotations

import dataclasses
import numbers
import typing
from typing import Any, ClassVar, Dict, Mapping, Sequence, TypeVar

_NONE = type(None)
_BOUNDS = ("min", "max", "above", "below")
S = TypeVar("S", bound="Section")


class ConfigError(ValueError):
    """A configuration file is missing, unparsable or has a bad key/value."""


def setting(default: Any, *, choices: Sequence[Any] | None = None, min: Any = None, max: Any = None,
            above: Any = None, below: Any = None, doc: str = "") -> Any:
    """A dataclass field with ``default`` (a list or dict is copied per instance) and
    the checks of `check_value`: ``choices``, inclusive ``min``/``max``, exclusive
    ``above``/``below``; ``doc`` says what the value means (quoted in errors)."""
    meta = {key: value for key, value in (("choices", choices), ("min", min), ("max", max),
                                          ("above", above), ("below", below)) if value is not None}
    if doc:
        meta["doc"] = doc
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _is_optional(hint: Any) -> bool:
    return typing.get_origin(hint) is typing.Union and _NONE in typing.get_args(hint)


def _inner(hint: Any) -> Any:
    """``X`` of ``Optional[X]``."""
    return next(a for a in typing.get_args(hint) if a is not _NONE)


def _bounds(meta: Mapping[str, Any]) -> str:
    """' >= 0', ' < 1', ' in (0, 1]' or ''."""
    low = ("[", meta["min"]) if "min" in meta else ("(", meta["above"]) if "above" in meta else None
    high = (meta["max"], "]") if "max" in meta else (meta["below"], ")") if "below" in meta else None
    if low and high:
        return f" in {low[0]}{low[1]}, {high[0]}{high[1]}"
    if low:
        return f" {'>=' if low[0] == '[' else '>'} {low[1]}"
    if high:
        return f" {'<=' if high[1] == ']' else '<'} {high[0]}"
    return ""


def describe(hint: Any, meta: Mapping[str, Any]) -> str:
    """What a field allows, in words: 'an integer >= 1', 'a number in (0, 1]', "one of ['a', 'b']"."""
    if _is_optional(hint):
        return describe(_inner(hint), meta) + " (or null)"
    origin = typing.get_origin(hint)
    if origin in (list, typing.List):
        if "choices" in meta:
            return f"a list of values from {list(meta['choices'])}"
        item = describe(typing.get_args(hint)[0], {}) if typing.get_args(hint) else "a value"
        return f"a list of {item.split(' ', 1)[-1]}s{_bounds(meta)}"
    if "choices" in meta:
        return f"one of {list(meta['choices'])}"
    if origin in (dict, typing.Dict):
        return "a mapping"
    if dataclasses.is_dataclass(hint):
        return f"a mapping with keys {[f.name for f in dataclasses.fields(hint)]}"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return words.get(hint, "a value") + _bounds(meta)


def _in_range(value: Any, meta: Mapping[str, Any]) -> bool:
    return (("min" not in meta or value >= meta["min"]) and ("max" not in meta or value <= meta["max"])
            and ("above" not in meta or value > meta["above"]) and ("below" not in meta or value < meta["below"]))


def _scalar(value: Any, hint: Any) -> tuple[bool, Any]:
    """(whether ``value`` has the scalar type ``hint``, the value as that type)."""
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return ok, int(value) if ok else value
    if hint is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    return isinstance(value, hint), value


def check_value(where: str, value: Any, hint: Any, meta: Mapping[str, Any] | None = None) -> Any:
    """``value`` checked against ``hint`` and ``meta`` (see `setting`); tuples become lists,
    integers become floats where a number is expected, and a nested section given
    as null is its defaults.  Raises ConfigError naming ``where``."""
    meta = meta or {}

    def bad() -> ConfigError:
        doc = f" ({meta['doc']})" if meta.get("doc") else ""
        return ConfigError(f"{where} must be {describe(hint, meta)}{doc}, got {value!r}")

    if hint is Any:
        return value
    if _is_optional(hint):
        inner = _inner(hint)
        if value is None:
            return None
        if inner not in (bool, int, float, str):
            return check_value(where, value, inner, meta)
        try:
            return check_value(where, value, inner, meta)
        except ConfigError:
            raise bad() from None   # the message says that null is allowed too
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if value is not None and not isinstance(value, Mapping):
            raise bad()
        return build_section(hint, value, where)
    if origin in (list, typing.List):
        if not isinstance(value, (list, tuple)):
            raise bad()
        (item,) = typing.get_args(hint) or (Any,)
        if dataclasses.is_dataclass(item) or typing.get_origin(item) in (dict, typing.Dict):   # name the element
            doc = {"doc": meta["doc"]} if meta.get("doc") else {}
            return [check_value(f"{where}[{i}]", v, item, doc) for i, v in enumerate(value)]
        try:
            return [check_value(f"{where}[{i}]", v, item, meta) for i, v in enumerate(value)]
        except ConfigError:
            raise bad() from None
    if origin in (dict, typing.Dict):
        if not isinstance(value, Mapping):
            raise bad()
        _, item = typing.get_args(hint) or (str, Any)
        return {str(k): check_value(f"{where}.{k}", v, item) for k, v in value.items()}
    ok, checked = _scalar(value, hint)
    if not ok or ("choices" in meta and checked not in meta["choices"]) or (
            isinstance(checked, numbers.Real) and not isinstance(checked, bool) and not _in_range(checked, meta)):
        raise bad()
    return checked


def _key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def build_typed(cls: type, values: Mapping[str, Any], where: str = ""):
    """``cls(**values)`` with every value checked (`check_value`), then the section's
    `Section.check`; an unknown key is a ConfigError listing the allowed ones.
    ``where`` is the section's key path ('' at the top level)."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where or 'the config'} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where + ': ' if where else ''}unknown key(s) {unknown}; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    obj = cls(**{k: check_value(_key(where, k), v, hints[k], fields[k].metadata) for k, v in values.items()})
    if isinstance(obj, Section) and not isinstance(obj, Checked):   # a Checked section checked itself
        obj.check(where)
    return obj


def build_section(cls: type, values: Mapping[str, Any] | None, where: str):
    """A nested section: its own `Section.from_mapping` (a section may read its mapping
    its own way), else `build_typed`; None is the defaults."""
    if isinstance(cls, type) and issubclass(cls, Section):
        return cls.from_mapping(values, where)
    return build_typed(cls, {} if values is None else values, where)


class Section:
    """Base of a typed config section (a dataclass of `setting` fields)."""

    SECTION: ClassVar[str] = ""   # the section's key path when none is given

    @classmethod
    def from_mapping(cls: type[S], values: Mapping[str, Any] | None, where: str = "") -> S:
        """The section from a YAML/JSON mapping (None: the defaults), every key and value
        checked (`build_typed`); ``where`` names it in errors (default `SECTION`)."""
        return build_typed(cls, {} if values is None else values, where or cls.SECTION)

    def check(self, where: str) -> None:
        """Rules across the section's fields (none here); raises ConfigError naming the keys."""


class Checked(Section):
    """A section that checks its values (and `Section.check`) on construction, so that
    one built from Python keywords is checked like one built from a mapping."""

    def __post_init__(self) -> None:
        where = self.SECTION or type(self).__name__
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, check_value(_key(where, f.name), getattr(self, f.name), hints[f.name], f.metadata))
        self.check(where)


def to_plain(obj: Any, drop_none: bool = True) -> Dict[str, Any]:
    """A dataclass as a mapping of its fields (nested dataclasses too), sharing
    (not copying) any array values; with ``drop_none``, None values are left out."""
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            value = to_plain(value, drop_none)
        elif isinstance(value, list):
            value = list(value)
        if value is not None or not drop_none:
            out[f.name] = value
    return out
