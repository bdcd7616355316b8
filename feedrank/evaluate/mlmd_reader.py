"""Read one pipeline run back from the MLMD store: components, states, artifacts."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd_pb2

_STATES = {v: k for k, v in mlmd_pb2.Execution.State.items()}


@dataclasses.dataclass
class Artifact:
    """The parts of an MLMD artifact the summary needs."""

    uri: str
    custom_properties: Dict[str, Any]

    def get_int_custom_property(self, key: str) -> int:
        return int(self.custom_properties.get(key, 0) or 0)

    def get_string_custom_property(self, key: str) -> str:
        return str(self.custom_properties.get(key, "") or "")


def _value(v: mlmd_pb2.Value) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@dataclasses.dataclass
class Run:
    run_id: str
    components: Dict[str, Dict[str, Any]]
    outputs: Dict[str, Dict[str, List[Artifact]]]

    @property
    def failed(self) -> bool:
        return any(c["state"] == "FAILED" for c in self.components.values())

    @property
    def failed_component(self) -> Optional[str]:
        return next((n for n, c in self.components.items() if c["state"] == "FAILED"), None)

    def artifact(self, node: str, key: str) -> Optional[Artifact]:
        arts = self.outputs.get(node, {}).get(key, [])
        return arts[0] if arts else None

    def read_json(self, node: str, key: str, filename: str) -> Any:
        art = self.artifact(node, key)
        path = os.path.join(art.uri, filename) if art else None
        if not path or not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def baseline_version(self) -> Optional[str]:
        art = self.artifact("LatestBlessedModel", "model")
        return art.get_string_custom_property("pushed_version") if art else None


def _open(metadata_path: str) -> metadata_store.MetadataStore:
    """The SQLite store at ``metadata_path``, read-only."""
    cc = mlmd_pb2.ConnectionConfig()
    cc.sqlite.filename_uri = metadata_path
    cc.sqlite.connection_mode = mlmd_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(cc)


def artifact_uris(metadata_path: str, type_name: str) -> List[str]:
    """The URIs of every artifact of ``type_name`` (e.g. ``ModelRun``) in the store, oldest first."""
    return [a.uri for a in sorted(_open(metadata_path).get_artifacts_by_type(type_name), key=lambda a: a.id)]


def latest_run(metadata_path: str) -> Optional[Run]:
    """The newest pipeline run in the SQLite store, or None if there is none."""
    if not os.path.exists(metadata_path):
        return None
    store = _open(metadata_path)
    runs = store.get_contexts_by_type("pipeline_run")
    if not runs:
        return None
    run_ctx = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
    executions = sorted(store.get_executions_by_context(run_ctx.id), key=lambda e: e.id)
    node_type = store.get_context_type("node").id
    components: Dict[str, Dict[str, Any]] = {}
    outputs: Dict[str, Dict[str, List[Artifact]]] = {}
    for ex in executions:
        nodes = [c.name for c in store.get_contexts_by_execution(ex.id) if c.type_id == node_type]
        name = nodes[0].split(".", 1)[-1] if nodes else ex.type
        seconds = max(0, ex.last_update_time_since_epoch - ex.create_time_since_epoch) / 1000.0
        components[name] = {"state": _STATES.get(ex.last_known_state, "UNKNOWN"), "seconds": round(seconds, 2),
                            "start": ex.create_time_since_epoch / 1000.0,     # epoch seconds
                            "end": ex.last_update_time_since_epoch / 1000.0}
        events = [e for e in store.get_events_by_execution_ids([ex.id]) if e.type == mlmd_pb2.Event.OUTPUT]
        arts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
        for e in events:
            key = e.path.steps[0].key if e.path.steps else "output"
            a = arts[e.artifact_id]
            outputs.setdefault(name, {}).setdefault(key, []).append(
                Artifact(a.uri, {k: _value(v) for k, v in a.custom_properties.items()}))
    return Run(run_ctx.name, components, outputs)
