"""The blessing gates of `feedrank.evaluate.eval_config`, each with its value and verdict.

  checks = gate_checks(evaluation_uri, cfg.evaluator)
  describe(checks)
  # "AUC 0.7605 >= floor 0.6000: pass; AUC change +0.0011 vs champion v3 (din) >= -0.0020: pass;
  #  calibration 1.021 in [0.90, 1.10]: pass"

The values are the overall slice's metrics in the Evaluator's output (the
candidate's AUC and calibration, and the AUC change against the baseline,
TFMA's diff metric); the thresholds are those the Evaluator applied (its
``eval_config.json``); the verdicts are TFMA's validation result (a check
fails when the result lists a failure for its metric), or computed from the
values when there is no validation result.  The baseline is named from the
``baseline.json`` that `components.baseline` writes beside the SavedModel
the Evaluator loaded (``modelLocations`` of ``eval_config.json``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from typing import Any, Dict, List, Optional, Set, Tuple

log = logging.getLogger(__name__)
EVAL_CONFIG_FILE = "eval_config.json"  # written by TFMA into the evaluation output
BASELINE_FILE = "baseline.json"        # written by components/baseline beside Format-Serving
DEFAULT_BAND = (0.9, 1.1)
AUC, CALIBRATION = "auc", "calibration"  # TFMA's metric names


@dataclasses.dataclass(frozen=True)
class Check:
    """One gate: its name, the measured value, and whether it passed (None: not applied)."""

    name: str
    value: Optional[float]
    passed: Optional[bool]
    text: str


def _read_json(path: str) -> Optional[Dict[str, Any]]:
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        return None
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            return json.loads(f.read())
    except (ValueError, tf.errors.OpError) as e:
        log.warning("ignoring unreadable %s: %s", path, e)
        return None


def overall_metrics(eval_uri: str) -> Dict[Tuple[str, bool], float]:
    """``{(metric name, is_diff): value}`` of the candidate on the overall slice."""
    import tensorflow_model_analysis as tfma

    out: Dict[Tuple[str, bool], float] = {}
    for m in tfma.load_metrics(eval_uri):
        if m.slice_key.single_slice_keys:
            continue
        for kv in m.metric_keys_and_values:
            if kv.key.model_name in ("", "candidate") and kv.value.HasField("double_value"):
                out[(kv.key.name, kv.key.is_diff)] = kv.value.double_value.value
    return out


def baseline_record(eval_uri: str) -> Optional[Dict[str, Any]]:
    """The baseline the Evaluator compared against (`components.baseline`'s record), {} when it
    compared against one that has no record, None when it had no baseline."""
    config = _read_json(os.path.join(eval_uri, EVAL_CONFIG_FILE)) or {}
    location = (config.get("modelLocations") or {}).get("baseline")
    if not location:
        return None
    return _read_json(os.path.join(os.path.dirname(location.rstrip("/")), BASELINE_FILE)) or {}


def baseline_label(record: Optional[Dict[str, Any]]) -> str:
    """``champion v3 (din)``, ``latest push v1732500000 (din)``, or ``the baseline``."""
    if not record or not record.get("version"):
        return "the baseline"
    source = "champion" if record.get("source") == "champion" else "latest push"
    family = f" ({record['family']})" if record.get("family") else ""
    return f"{source} v{record['version']}{family}"


def applied_thresholds(eval_uri: str) -> Dict[str, float]:
    """The thresholds the Evaluator applied (its ``eval_config.json``): ``auc_floor``,
    ``auc_change`` (the lowest AUC change allowed), ``calibration_lo`` / ``calibration_hi``."""
    config = _read_json(os.path.join(eval_uri, EVAL_CONFIG_FILE)) or {}
    out: Dict[str, float] = {}
    for spec in (config.get("evalConfig") or {}).get("metricsSpecs") or []:
        for metric in spec.get("metrics") or []:
            for per_slice in metric.get("perSliceThresholds") or []:
                value = (per_slice.get("threshold") or {}).get("valueThreshold") or {}
                change = (per_slice.get("threshold") or {}).get("changeThreshold") or {}
                if metric.get("className") == "AUC":
                    if "lowerBound" in value:
                        out["auc_floor"] = float(value["lowerBound"])
                    if "absolute" in change:
                        out["auc_change"] = float(change["absolute"])
                elif metric.get("className") == "Calibration":
                    if "lowerBound" in value:
                        out["calibration_lo"] = float(value["lowerBound"])
                    if "upperBound" in value:
                        out["calibration_hi"] = float(value["upperBound"])
    return out


def failed_metrics(validation) -> Set[Tuple[str, bool]]:
    """``{(metric name, is_diff)}`` that TFMA's validation result lists as failures."""
    return {(f.metric_key.name, f.metric_key.is_diff)
            for per_slice in getattr(validation, "metric_validations_per_slice", []) for f in per_slice.failures}


def _verdict(key: Tuple[str, bool], ok: bool, failed: Optional[Set[Tuple[str, bool]]]) -> bool:
    return ok if failed is None else key not in failed


def _word(passed: bool) -> str:
    return "pass" if passed else "FAIL"


def gate_checks(eval_uri: str, evaluator_cfg, validation=None) -> List[Check]:
    """The AUC floor, AUC change and calibration checks of one evaluation, with the thresholds
    the Evaluator applied (``evaluator_cfg``'s where its eval_config.json does not say)."""
    applied = applied_thresholds(eval_uri)
    band = getattr(evaluator_cfg, "calibration_band", None) or DEFAULT_BAND
    floor = applied.get("auc_floor", float(evaluator_cfg.auc_floor))
    limit = applied.get("auc_change", -float(evaluator_cfg.max_auc_regression)) + 0.0
    lo, hi = applied.get("calibration_lo", float(band[0])), applied.get("calibration_hi", float(band[1]))
    metrics = overall_metrics(eval_uri)
    failed = failed_metrics(validation) if validation is not None else None
    checks: List[Check] = []

    auc = metrics.get((AUC, False))
    ok = auc is not None and auc >= floor
    passed = _verdict((AUC, False), ok, failed)
    shown = "n/a" if auc is None else f"{auc:.4f}"
    checks.append(Check("auc_floor", auc, passed, f"AUC {shown} {'>=' if ok else '<'} floor {floor:.4f}: "
                                                  f"{_word(passed)}"))

    record = baseline_record(eval_uri)
    change = metrics.get((AUC, True))
    if record is None:
        checks.append(Check("auc_change", None, None, "AUC change: not applied (no baseline yet)"))
    else:
        ok = change is not None and change >= limit
        passed = _verdict((AUC, True), ok, failed)
        shown = "n/a" if change is None else f"{round(change, 4) + 0.0:+.4f}"  # no "-0.0000"
        checks.append(Check("auc_change", change, passed, f"AUC change {shown} vs {baseline_label(record)} "
                                                          f"{'>=' if ok else '<'} {limit:+.4f}: {_word(passed)}"))

    cal = metrics.get((CALIBRATION, False))
    ok = cal is not None and not math.isnan(cal) and lo <= cal <= hi
    passed = _verdict((CALIBRATION, False), ok, failed)
    shown = "n/a" if cal is None else f"{cal:.3f}"
    checks.append(Check("calibration", cal, passed, f"calibration {shown} {'in' if ok else 'outside'} "
                                                    f"[{lo:.2f}, {hi:.2f}]: {_word(passed)}"))
    return checks


def other_failures(validation, checks: List[Check]) -> List[str]:
    """Failures in the validation result that no gate check accounts for (e.g. a missing slice)."""
    known = {(AUC, False), (AUC, True), (CALIBRATION, False)}
    out = []
    for per_slice in getattr(validation, "metric_validations_per_slice", []):
        for f in per_slice.failures:
            if (f.metric_key.name, f.metric_key.is_diff) not in known:
                out.append(f"{f.metric_key.name}{' change' if f.metric_key.is_diff else ''} "
                           f"{f.metric_value.double_value.value:.4f}: FAIL"
                           + (f" ({f.message})" if f.message else ""))
    for spec in getattr(validation, "missing_slices", []):
        out.append(f"slice {spec} has no examples: FAIL")
    return out


def describe(checks: List[Check], extra: Optional[List[str]] = None) -> str:
    """The checks as one line, ``; ``-separated."""
    return "; ".join([c.text for c in checks] + list(extra or []))
