"""The TFDV schema of the raw examples, derived from the feature contract
(ImportSchemaGen reads it).

Inferring a schema from each run's own statistics would accept whatever the
data says; deriving it from the feature contract (a `feedrank.features.FeatureSpec`)
makes ExampleValidator flag data that breaks the contract (a negative price, a
CTR above 1, a label that is not 0/1, a sequence longer than its channel
allows, a missing feature).
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import List

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from feedrank import features as F

log = logging.getLogger(__name__)


def make_schema(spec: F.FeatureSpec) -> schema_pb2.Schema:
    """The schema of the example generator's raw tf.Examples for the feature contract ``spec``."""
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

    for f in spec.id_features:
        add(f.name, schema_pb2.BYTES)
    for s in spec.seq_features:
        add(s.name, schema_pb2.BYTES, required=False, max_count=s.max_len)
    for b in spec.bag_features:   # declared token bags (possibly empty)
        add(b.name, schema_pb2.BYTES, required=False, max_count=b.max_len)
    for d in spec.dense_features:
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


def schema_text(spec: F.FeatureSpec) -> str:
    """`make_schema` as the text of ``schema.pbtxt``."""
    return text_format.MessageToString(make_schema(spec))


def schema_digest(spec: F.FeatureSpec) -> str:
    """The content hash naming ``spec``'s schema directory (`write_schema`)."""
    return hashlib.sha256(schema_text(spec).encode()).hexdigest()[:12]


def _kubeflow_settings_error(path: str) -> str | None:
    """None when ``path`` is a valid Kubeflow settings file, else why it is not one."""
    from feedrank.runners.kubeflow_config import load_kubeflow_config
    from feedrank.typed import ConfigError

    try:
        load_kubeflow_config(path)
    except ConfigError as e:
        return str(e)
    return None


def write_config_schemas(root: str, config_dir: str) -> List[str]:
    """Writes the built-in schema and the schema of every run config in ``config_dir``
    (their declared columns differ); Kubeflow settings files are skipped.  For images:
    a compiled pipeline names the schema of its config by content hash.

    Raises:
      ConfigError: a YAML file is neither a valid run config nor valid Kubeflow
        settings; the message names the file and the run config's problem.
    """
    from feedrank import config as config_lib
    from feedrank.typed import ConfigError

    paths = [write_schema(root, F.BUILTIN)]
    for name in sorted(os.listdir(config_dir)):
        if not name.endswith((".yaml", ".yml")):
            continue
        path = os.path.join(config_dir, name)
        try:
            cfg = config_lib.load(path)
        except ConfigError as e:
            kubeflow_error = _kubeflow_settings_error(path)
            if kubeflow_error is None:
                log.info("%s: Kubeflow settings, not a run config: no schema of its own", path)
                continue
            raise ConfigError(f"{path} is not a valid run config, so its schema cannot be written: {e} "
                              f"(nor is it valid Kubeflow settings: {kubeflow_error})") from e
        if cfg.mode == "session":   # the session samples' schema (feedrank/sessions/tfdv_schema.py)
            from feedrank.sessions.tfdv_schema import write_schema as write_session_schema

            paths.append(write_session_schema(root))
            continue
        paths.append(write_schema(root, cfg.features_spec))
    return sorted(set(paths))


def write_schema(root: str, spec: F.FeatureSpec) -> str:
    """Writes the schema of ``spec`` as schema.pbtxt under ``root/<content hash>/`` and
    returns its path.

    The hash in the path makes ImportSchemaGen's cache follow the content.
    """
    text = schema_text(spec)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = os.path.join(root, digest, "schema.pbtxt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(text)
    return path
