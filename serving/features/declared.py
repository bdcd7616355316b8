"""Declared item / user columns online (`feedrank.features.Declared`).

An exported model holds its run's declaration (`feedrank.features.DECLARED_FILE`
in the model directory); every serving process declares it before it builds
anything (`declare_from_model`), so the feature tuples of `feedrank.features`
match the model's ``serving_default``.

Stored values (JSON, per post in the ``items`` hash, per user in the
``uattrs`` hash, `serving.features.schema`): categorical -> a string, numeric
-> a number, tokens -> a list of strings (already cut to ``max_tokens``); the
example generator's conversions (`feedrank.examples.declared.row_values`)
make them.  An id without a stored value gets the example generator's
missing value: "" / the declared default / no tokens.

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


def declare_from_model(model_path: Optional[str]) -> Tuple[F.Declared, ...]:
    """Declares the columns of the model at ``model_path`` (a SavedModel directory or
    its declaration file; a directory without one declares none); returns them."""
    if not model_path:
        F.declare(())
        return ()
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"model path {model_path!r} does not exist")
    path = declaration_path(model_path)
    if path is None:
        log.info("%s declares no columns (no %s): built-in features only", model_path, F.DECLARED_FILE)
        F.declare(())
        return ()
    with open(path) as f:
        text = f.read()
    try:
        columns = F.from_json(text)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path} is not a feature declaration: {e}") from None
    F.declare(columns)
    log.info("declared from %s: %s", path, [c.feature_name for c in columns])
    return columns


def of_side(side: str) -> Tuple[F.Declared, ...]:
    """The declared columns the service sends once per request (``user``) or per candidate."""
    return tuple(c for c in F.DECLARED if c.side == side)


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


def stored_values(table: str, row_declared: Mapping[str, Sequence], rows: Sequence[int]) -> List[Dict[str, object]]:
    """Per row in ``rows`` (snapshot rows, -1: none) the stored JSON object of ``table``'s
    declared columns (``row_declared``: `ItemTable.row_declared` / `UserTable.row_declared`)."""
    cols = [c for c in F.DECLARED if c.table == table]
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


def user_features(stored: Optional[Mapping[str, object]]) -> Dict[str, list]:
    """The user's declared raw features: one value each, tokens as their list (one row,
    like a sequence)."""
    return {c.feature_name: value(c, stored) if c.kind == "tokens" else [value(c, stored)]
            for c in of_side("user")}


def parse_stored(raw) -> Dict[str, object]:
    """A stored JSON object ({} when absent)."""
    if raw is None:
        return {}
    if isinstance(raw, bytes):
        raw = raw.decode()
    return json.loads(raw)


def candidate_features(candidates: Sequence[str], stored: Mapping[str, Mapping[str, object]]) -> Dict[str, list]:
    """The candidates' declared raw features, one value (tokens: one list) per candidate."""
    return {c.feature_name: [value(c, stored.get(i)) for i in candidates] for c in of_side("candidate")}


def bag_names() -> Tuple[str, ...]:
    """Raw names of the declared token bags."""
    return tuple(b.name for b in F.BAG_FEATURES)


def pad_rows(rows: Sequence[Sequence[str]]) -> List[List[str]]:
    """Token lists as a rectangular matrix padded with "" (at least one column)."""
    width = max([len(r) for r in rows] + [1])
    return [list(r) + [""] * (width - len(r)) for r in rows]
