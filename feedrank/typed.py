"""Typed settings: dataclasses built from YAML or JSON mappings, every key and value checked.

A field's type hint gives its type (``int``, ``float``, ``bool``, ``str``,
``List[...]``, ``Dict[str, ...]``, ``Optional[...]``, a nested dataclass or
``Any``); its ``metadata`` may narrow the allowed values:

* ``choices``: the allowed values;
* ``min`` / ``max``: inclusive bounds (for a list, of every element);
* ``above`` / ``below``: exclusive bounds.

An unknown key, a wrong type or a value out of range is a `ConfigError` that
names the key and what it allows, so a typo never falls back to a default.
"""
from __future__ import annotations

import dataclasses
import numbers
import typing
from typing import Any, Dict, Mapping

_NONE = type(None)


class ConfigError(ValueError):
    """A configuration file is missing, unparsable or has a bad key/value."""


def _is_optional(hint: Any) -> bool:
    return typing.get_origin(hint) is typing.Union and _NONE in typing.get_args(hint)


def _inner(hint: Any) -> Any:
    """``X`` of ``Optional[X]``."""
    return next(a for a in typing.get_args(hint) if a is not _NONE)


def _bounds(meta: Mapping[str, Any]) -> str:
    parts = [f"{op} {meta[key]}" for key, op in (("min", ">="), ("above", ">"), ("max", "<="), ("below", "<"))
             if key in meta]
    return " " + " and ".join(parts) if parts else ""


def describe(hint: Any, meta: Mapping[str, Any]) -> str:
    """What a field allows, in words: 'an integer >= 1', "one of ['a', 'b']"."""
    if "choices" in meta:
        return f"one of {list(meta['choices'])}"
    if _is_optional(hint):
        return describe(_inner(hint), meta) + " (or null)"
    origin = typing.get_origin(hint)
    if origin in (list, typing.List):
        item = describe(typing.get_args(hint)[0], {}) if typing.get_args(hint) else "values"
        return f"a list of {item.split(' ', 1)[-1]}s{_bounds(meta)}"
    if origin in (dict, typing.Dict):
        return "a mapping"
    if dataclasses.is_dataclass(hint):
        return f"a mapping with keys {[f.name for f in dataclasses.fields(hint)]}"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return words.get(hint, "a value") + _bounds(meta)


def _in_range(value: Any, meta: Mapping[str, Any]) -> bool:
    return (("min" not in meta or value >= meta["min"]) and ("max" not in meta or value <= meta["max"])
            and ("above" not in meta or value > meta["above"]) and ("below" not in meta or value < meta["below"]))


def check_value(where: str, value: Any, hint: Any, meta: Mapping[str, Any] | None = None) -> Any:
    """``value`` checked against ``hint`` and ``meta``; tuples become lists and
    integers become floats where a number is expected.  Raises ConfigError."""
    meta = meta or {}

    def bad() -> ConfigError:
        return ConfigError(f"{where} must be {describe(hint, meta)}, got {value!r}")

    if hint is Any:
        return value
    if _is_optional(hint):
        return None if value is None else check_value(where, value, _inner(hint), meta)
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise bad()
        return build_typed(hint, value, where)
    if origin in (list, typing.List):
        if not isinstance(value, (list, tuple)):
            raise bad()
        (item,) = typing.get_args(hint) or (Any,)
        try:
            return [check_value(f"{where}[{i}]", v, item, meta) for i, v in enumerate(value)]
        except ConfigError:
            raise bad() from None
    if origin in (dict, typing.Dict):
        if not isinstance(value, Mapping):
            raise bad()
        _, item = typing.get_args(hint) or (str, Any)
        return {str(k): check_value(f"{where}.{k}", v, item) for k, v in value.items()}
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        value = int(value) if ok else value
    elif hint is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, hint)
    if not ok or ("choices" in meta and value not in meta["choices"]) or (
            isinstance(value, numbers.Real) and not isinstance(value, bool) and not _in_range(value, meta)):
        raise bad()
    return value


def build_typed(cls: type, values: Mapping[str, Any], where: str):
    """``cls(**values)`` with every value checked (`check_value`); an unknown key
    is a ConfigError listing the allowed ones."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: check_value(f"{where}.{k}", v, hints[k], fields[k].metadata) for k, v in values.items()})


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
