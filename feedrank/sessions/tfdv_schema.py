"""The session samples' schema, derived from `feedrank.sessions.features` (ImportSchemaGen reads it).

As for the rankers (`feedrank.examples.tfdv_schema`), the schema is derived from the feature contract, not
inferred from each run's statistics, so ExampleValidator (and the AnomaliesGate after it)
flags samples that break the contract: a missing feature, a scalar with several values,
an unknown page type.  It is written under a content hash (`write_schema`), which is how
a compiled Kubeflow package names the copy in its image.
"""
from __future__ import annotations

import hashlib
import logging
import os

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from feedrank.sessions import features as SF

log = logging.getLogger(__name__)

SUBDIR = "sessions"   # beside the rankers' schemas: <schema root>/sessions/<hash>/schema.pbtxt
_TYPES = {SF.BYTES: schema_pb2.BYTES, SF.INT: schema_pb2.INT, SF.FLOAT: schema_pb2.FLOAT}


def make_schema() -> schema_pb2.Schema:
    """The schema of SessionSampleGen's tf.Examples: every feature of `SF.SPEC` present in
    every sample; scalars fixed (tf.Transform parses them as FixedLenFeature([])), lists of
    any length (a sample may have no label item: a next-page one), page types from `SF.PAGE_TYPES`."""
    schema = schema_pb2.Schema()
    for name, (kind, scalar) in SF.SPEC.items():
        feat = schema.feature.add(name=name, type=_TYPES[kind])
        feat.presence.min_fraction = 1.0
        feat.presence.min_count = 1
        if scalar:
            feat.shape.SetInParent()
        else:
            feat.value_count.min = 0
        if name in (SF.RECENT_PAGE_TYPES, SF.HISTORY_PAGE_TYPES):
            feat.string_domain.name = name
            feat.string_domain.value.extend(SF.PAGE_TYPES)
        if name in (SF.FULL_PATH,):
            feat.int_domain.min, feat.int_domain.max = 0, 1
        if name == SF.PREFIX_LEN:
            feat.int_domain.min = 1
        if name in (SF.N_PAGES_BEFORE_PURCHASE, SF.PATH_START):
            feat.int_domain.min = 0
    return schema


def schema_path(root: str) -> str:
    """Where `write_schema` puts the schema under ``root``: ``<root>/sessions/<hash>/schema.pbtxt``."""
    text = text_format.MessageToString(make_schema())
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return os.path.join(root.rstrip("/"), SUBDIR, digest, "schema.pbtxt")


def write_schema(root: str) -> str:
    """Writes the schema under ``root`` (see `schema_path`); returns its path."""
    path = schema_path(root)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text_format.MessageToString(make_schema()))
    return path
