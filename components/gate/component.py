"""AnomaliesGate: turn ExampleValidator's record of anomalies into a real gate.

TFX's ExampleValidator only records anomalies; training would go on.  This
component reads the anomalies of every split, writes a readable report, and
raises `DataAnomaliesError` (which halts the run before Transform and the
Trainer, wired with ``add_upstream_node``) when there is any.
"""

import os
from typing import Dict, List

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils
from tfx.utils import io_utils

ANOMALIES_FILE = "SchemaDiff.pb"


class DataAnomaliesError(RuntimeError):
    """ExampleValidator found anomalies; the message is the readable report."""


def read_anomalies(uri: str, split_names: List[str]) -> Dict[str, anomalies_pb2.Anomalies]:
    """Anomalies proto per split from an ExampleAnomalies artifact directory."""
    out: Dict[str, anomalies_pb2.Anomalies] = {}
    for split in split_names:
        path = os.path.join(uri, f"Split-{split}", ANOMALIES_FILE)
        anomalies = anomalies_pb2.Anomalies()
        anomalies.ParseFromString(io_utils.read_bytes_file(path))
        out[split] = anomalies
    return out


def report(per_split: Dict[str, anomalies_pb2.Anomalies]) -> str:
    """A readable, one-line-per-problem report; empty when there is nothing."""
    lines: List[str] = []
    for split, anomalies in sorted(per_split.items()):
        for feature, info in sorted(anomalies.anomaly_info.items()):
            detail = "; ".join(r.description or r.short_description for r in info.reason) or info.description
            lines.append(f"  [{split}] feature '{feature}': {info.short_description or 'anomaly'} - {detail}")
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            detail = "; ".join(r.description for r in info.reason)
            lines.append(f"  [{split}] dataset: {info.short_description} - {detail}")
    if not lines:
        return ""
    return (f"ExampleValidator found {len(lines)} anomaly(ies); the run stops before training:\n"
            + "\n".join(lines)
            + "\nFix the data (or, if the change is intended, update the schema in feedrank/features.py).")


@tfx.dsl.components.component
def AnomaliesGate(  # pylint: disable=invalid-name
        anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
        report_file: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.String]) -> None:
    """Raises DataAnomaliesError with a readable report if any split has anomalies."""
    splits = artifact_utils.decode_split_names(anomalies.split_names)
    text = report(read_anomalies(anomalies.uri, splits))
    report_file.value = text or "no anomalies"
    if text:
        raise DataAnomaliesError(text)
