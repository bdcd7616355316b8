"""The data schema, derived from `feedrank.features` (ImportSchemaGen reads it).

Inferring a schema from each run's own statistics would accept whatever the
data says; deriving it from the feature contract makes ExampleValidator flag
data that breaks the contract (a negative price, a CTR above 1, a label that
is not 0/1, a sequence longer than its channel allows, a missing feature).
"""
from __future__ import annotations

import hashlib
import os
from typing import List

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from feedrank import features as F


def make_schema() -> schema_pb2.Schema:
    """The schema of the example generator's raw tf.Examples."""
    schema = schema_pb2.Schema()

    def add(name: str, ftype, required: bool = True, max_count: int | None = 1):
        feat = schema.feature.add(name=name, type=ftype)
        if required:
            feat.presence.min_fraction = 1.0
            feat.presence.min_count = 1
        if max_count == 1:
            feat.shape.SetInParent()  # a fixed scalar: tf.Transform parses it as FixedLenFeature([])
        elif max_count is not None:
            feat.value_count.min = 0
            feat.value_count.max = max_count
        return feat

    for f in F.ID_FEATURES:
        add(f.name, schema_pb2.BYTES)
    for s in F.SEQ_FEATURES:
        add(s.name, schema_pb2.BYTES, required=False, max_count=s.max_len)
    for b in F.BAG_FEATURES:   # declared token bags (possibly empty)
        add(b.name, schema_pb2.BYTES, required=False, max_count=b.max_len)
    for d in F.DENSE_FEATURES:
        feat = add(d.name, schema_pb2.FLOAT)
        if d.min_value is not None:
            feat.float_domain.min = d.min_value
        if d.max_value is not None:
            feat.float_domain.max = d.max_value
    for label in F.LABELS:
        feat = add(label, schema_pb2.INT)
        feat.int_domain.min = 0
        feat.int_domain.max = 1
        feat.int_domain.is_categorical = True
    add(F.IMPRESSION_ID, schema_pb2.BYTES)
    add(F.USER_ID, schema_pb2.BYTES)
    add(F.TS, schema_pb2.INT)
    return schema


def write_config_schemas(root: str, config_dir: str) -> List[str]:
    """Writes the built-in schema and the schema of every run config in ``config_dir``
    (their declared columns differ, `features.declare`); files that are not run configs
    (e.g. a Kubeflow settings file) are skipped.  For images: a compiled pipeline names
    the schema of its config by content hash."""
    from feedrank import config as config_lib
    from feedrank.typed import ConfigError

    F.declare(())
    paths = [write_schema(root)]
    for name in sorted(os.listdir(config_dir)):
        if not name.endswith((".yaml", ".yml")):
            continue
        try:
            cfg = config_lib.load(os.path.join(config_dir, name))
        except ConfigError:
            continue
        if cfg.mode == "session":   # the session samples' schema (feedrank/sessions/schema.py)
            from feedrank.sessions.schema import write_schema as write_session_schema

            paths.append(write_session_schema(root))
            continue
        paths.append(write_schema(root))
    F.declare(())
    return sorted(set(paths))


def write_schema(root: str) -> str:
    """Writes schema.pbtxt under ``root/<content hash>/`` and returns its path.

    The hash in the path makes ImportSchemaGen's cache follow the content.
    """
    text = text_format.MessageToString(make_schema())
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = os.path.join(root, digest, "schema.pbtxt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(text)
    return path
