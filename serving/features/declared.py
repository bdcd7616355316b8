"""Declared item / user columns online (`feedrank.features.Declared`).

An exported model holds its run's feature contract (`feedrank.features.DECLARED_FILE`
in the version directory or its ``assets/``); every serving process reads it
once (`spec_from_model`) and passes the resulting `feedrank.features.FeatureSpec`
to whatever builds stored values, features or requests, so what is sent
matches the model's ``serving_default``.

Stored values (JSON, per post in the ``items`` hash, per user in the
``uattrs`` hash, `serving.features.redis_layout`): categorical -> a string, numeric
-> a number, tokens -> a list of strings (already cut to ``max_tokens``); the
example generator's conversions (`feedrank.examples.declared.row_values`)
make them.  An id without a stored value gets the example generator's
missing value: "" / the declared default / no tokens.

What the store holds is recorded beside it: every load of an attribute table writes, in
the namespace's ``meta`` hash, the declared columns it stored (`seeded_record`, field
`seeded_field`) and a fresh `LOADED_FIELD`; `missing_columns` names what a model's
contract reads that the store lacks (the transformer is not ready while it lacks any).

Needs neither pandas nor TensorFlow (the transformer imports it).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from feedrank import features as F

log = logging.getLogger(__name__)


def declaration_path(model_path: str) -> Optional[str]:
    """The declaration file of a model: ``model_path`` itself when it is a file,
    else `F.DECLARED_FILE` in the directory or its ``assets/`` (None: none)."""
    if os.path.isfile(model_path):
        return model_path
    for sub in ("", "assets", "assets.extra"):
        p = os.path.join(model_path, sub, F.DECLARED_FILE)
        if os.path.isfile(p):
            return p
    return None


def spec_from_model(model_path: Optional[str]) -> F.FeatureSpec:
    """The feature contract of the model at ``model_path``: a SavedModel (version)
    directory, or its declaration file.  No path, or a directory without a
    declaration, is the built-in contract `F.BUILTIN`."""
    if not model_path:
        return F.BUILTIN
    if "://" in model_path:   # a remote model directory: its top-level declaration file
        return F.FeatureSpec.read(model_path)
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"model path {model_path!r} does not exist")
    path = declaration_path(model_path)
    if path is None:
        log.info("%s declares no columns (no %s): built-in features only", model_path, F.DECLARED_FILE)
        return F.BUILTIN
    with open(path) as f:
        text = f.read()
    try:
        spec = F.FeatureSpec.from_json(text)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path} is not a feature declaration: {e}") from None
    log.info("feature contract of %s: declared %s, event ages %s", path,
             [c.feature_name for c in spec.declared], "on" if spec.event_ages else "off")
    return spec


def table_columns(spec: F.FeatureSpec, table: str) -> List[str]:
    """The columns of ``table`` ("items" / "users") that ``spec`` declares: the extra
    columns to read with the table (`feedrank.events.io.read_table`'s ``extra``)."""
    return [c.column for c in spec.declared_of(table)]


def missing_value(c: F.Declared):
    """`features.Declared.missing` as the request sends it (a bag as a list)."""
    return list(c.missing) if c.kind == "tokens" else c.missing


def json_value(c: F.Declared, value) -> object:
    """A stored (JSON) value from an example-generator value (bytes / float32 / tuple of bytes)."""
    if c.kind == "numeric":
        return float(value)
    if c.kind == "categorical":
        return value.decode() if isinstance(value, bytes) else str(value)
    return [t.decode() if isinstance(t, bytes) else str(t) for t in value]


def stored_values(spec: F.FeatureSpec, table: str, row_declared: Mapping[str, Sequence],
                  rows: Sequence[int]) -> List[Dict[str, object]]:
    """Per row in ``rows`` (snapshot rows, -1: none) the stored JSON object of ``table``'s
    columns declared in ``spec`` (``row_declared``: `ItemTable.row_declared` /
    `UserTable.row_declared`, feature name -> value per snapshot row)."""
    cols = spec.declared_of(table)
    out = []
    for r in rows:
        out.append({c.feature_name: (json_value(c, row_declared[c.feature_name][r]) if r >= 0
                                     else missing_value(c)) for c in cols})
    return out


def value(c: F.Declared, stored: Optional[Mapping[str, object]]):
    """The raw feature value of ``c`` from a stored object (None: the id is unknown)."""
    if not stored or c.feature_name not in stored:
        return missing_value(c)
    v = stored[c.feature_name]
    if c.kind == "numeric":
        return float(v)
    if c.kind == "tokens":
        return [str(t) for t in v][:c.max_tokens]
    return str(v)


def user_features(spec: F.FeatureSpec, stored: Optional[Mapping[str, object]]) -> Dict[str, list]:
    """The user's declared raw features: one value each, tokens as their list (one row,
    like a sequence)."""
    return {c.feature_name: value(c, stored) if c.kind == "tokens" else [value(c, stored)]
            for c in spec.declared_on_side("user")}


def parse_stored(raw) -> Dict[str, object]:
    """A stored JSON object ({} when absent)."""
    if raw is None:
        return {}
    if isinstance(raw, bytes):
        raw = raw.decode()
    return json.loads(raw)


def candidate_features(spec: F.FeatureSpec, candidates: Sequence[str],
                       stored: Mapping[str, Mapping[str, object]]) -> Dict[str, list]:
    """The candidates' declared raw features, one value (tokens: one list) per candidate."""
    return {c.feature_name: [value(c, stored.get(i)) for i in candidates]
            for c in spec.declared_on_side("candidate")}


def bag_names(spec: F.FeatureSpec, side: Optional[str] = None) -> Tuple[str, ...]:
    """Raw names of the declared token bags (of ``side`` only, when given)."""
    return tuple(b.name for b in spec.bag_features if side is None or b.side == side)


def pad_rows(rows: Sequence[Sequence[str]]) -> List[List[str]]:
    """Token lists as a rectangular matrix padded with "" (at least one column)."""
    width = max([len(r) for r in rows] + [1])
    return [list(r) + [""] * (width - len(r)) for r in rows]


# -- what the store holds: the bulk load records it in the namespace's ``meta`` hash --------

LOADED_FIELD = "attributes_loaded"   # changes whenever the attribute tables are written


def seeded_field(table: str) -> str:
    """The ``meta`` field listing the declared columns of ``table`` the store holds."""
    return f"declared:{table}"


def meta_fields() -> List[str]:
    """The ``meta`` fields `missing_columns` and the transformer read."""
    return [seeded_field(t) for t in F.DECLARED_TABLES] + [LOADED_FIELD]


def stored_form(c: F.Declared) -> Dict[str, object]:
    """What decides a declared column's stored values: its name and kind, the default of a
    numeric column (a missing cell) and the ``max_tokens`` of a bag (values are cut to it)."""
    form: Dict[str, object] = {"column": c.column, "kind": c.kind}
    if c.kind == "numeric":
        form["default"] = float(c.default)
    elif c.kind == "tokens":
        form["max_tokens"] = int(c.max_tokens)
    return form


def seeded_record(spec: F.FeatureSpec, table: str) -> str:
    """The ``meta`` value recording that ``table`` was stored with ``spec``'s declared columns."""
    return json.dumps([stored_form(c) for c in spec.declared_of(table)], sort_keys=True)


def _describe(form: Mapping[str, object]) -> str:
    extra = "".join(f", {k}={v:g}" if isinstance(v, float) else f", {k}={v}"
                    for k, v in form.items() if k not in ("column", "kind"))
    return f"{form['kind']}{extra}"


def missing_columns(spec: F.FeatureSpec, meta: Mapping[str, Optional[str]]) -> List[str]:
    """The declared columns ``spec`` reads that a store whose ``meta`` hash is ``meta`` does not
    hold as ``spec`` stores them, each as ``"<table>.<column> (<why>)"``; [] when it holds them all.
    A table without a record (never loaded, or loaded without recording) holds none."""
    out: List[str] = []
    for table in F.DECLARED_TABLES:
        wanted = spec.declared_of(table)
        if not wanted:
            continue
        raw = meta.get(seeded_field(table))
        try:
            held = {f["column"]: f for f in json.loads(raw)} if raw else {}
        except (ValueError, TypeError, KeyError):
            log.warning("unreadable %s record in the store's meta: %r", seeded_field(table), raw)
            held = {}
        for c in wanted:
            want, have = stored_form(c), held.get(c.column)
            if have is None:
                out.append(f"{table}.{c.column} ({_describe(want)}: not stored)")
            elif have != want:
                out.append(f"{table}.{c.column} (stored as {_describe(have)}, the model reads {_describe(want)})")
    return out
