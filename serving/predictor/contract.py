"""The request contract of ``serving_default``, read from the SavedModel itself.

A request carries the user's side once and N candidates:

* user sequences (rank-2 inputs): one row, ``[1, L]`` (a flat list of L
  strings is accepted too), padded with ``""`` on either side or not at all;
* user scalars (e.g. ``user_region_id``): one value;
* candidate features: one value per candidate, N of each;
* candidate token bags (declared ``tokens`` item columns): one ""-padded row
  per candidate, ``[N, L]``.

Which side a rank-1 input or a rank-2 input is on comes from the served
model's feature contract (`feedrank.features.FeatureSpec`).

:func:`from_v1` and :func:`from_v2` turn a decoded request into numpy arrays,
or raise :class:`~serving.common.errors.BadRequest` naming what is wrong.
A number must be finite and inside its feature's ``[min_value, max_value]``
(`feedrank.features.DenseFeature`: a CTR or share in [0, 1], a count >= 0).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from feedrank import features as F
from serving.common.errors import BadRequest

log = logging.getLogger(__name__)

USER_SEQ, USER_SCALAR, CANDIDATE = "user_sequence", "user_scalar", "candidate"
CANDIDATE_BAG = "candidate_bag"   # a declared candidate-side token bag: [N, L] padded with ""


@dataclasses.dataclass(frozen=True)
class Input:
    """One input of ``serving_default``."""

    name: str
    kind: str          # USER_SEQ, USER_SCALAR, CANDIDATE or CANDIDATE_BAG
    is_string: bool

    @property
    def v2_datatype(self) -> str:
        return "BYTES" if self.is_string else "FP32"

    @property
    def v2_shape(self) -> List[int]:
        return {USER_SEQ: [1, -1], USER_SCALAR: [1], CANDIDATE: [-1], CANDIDATE_BAG: [-1, -1]}[self.kind]


@dataclasses.dataclass
class Batch:
    """A validated request: user arrays (leading dim 1) and candidate arrays [N]."""

    user: Dict[str, np.ndarray]
    candidates: Dict[str, np.ndarray]
    n: int


class Contract:
    """The inputs of a loaded ``serving_default`` (a model with feature contract
    ``spec``) and the request limits."""

    def __init__(self, signature_specs: Dict[str, Any], max_candidates: int, spec: F.FeatureSpec):
        self.spec = spec
        user_side = set(spec.features_of_side("user"))
        candidate_bags = {b.name for b in spec.bag_features if b.side == "candidate"}
        self.inputs: List[Input] = []
        for name, tensor_spec in sorted(signature_specs.items()):
            rank = len(tensor_spec.shape)
            is_string = tensor_spec.dtype.name == "string"
            if rank == 2 and name in candidate_bags:
                kind = CANDIDATE_BAG
            elif rank == 2:
                kind = USER_SEQ
            elif name in user_side:
                kind = USER_SCALAR
            else:
                kind = CANDIDATE
            self.inputs.append(Input(name, kind, is_string))
        self.by_name = {i.name: i for i in self.inputs}
        self.max_candidates = max_candidates
        # (min, max) of each numeric input whose feature declares a range
        self.ranges: Dict[str, Tuple[Optional[float], Optional[float]]] = {
            d.name: (d.min_value, d.max_value) for d in spec.dense_features
            if d.name in self.by_name and (d.min_value is not None or d.max_value is not None)}

    # ------------------------------------------------------------------ checks
    def _check_names(self, names: List[str]) -> None:
        missing = [i.name for i in self.inputs if i.name not in names]
        unknown = sorted(set(names) - set(self.by_name))
        if missing:
            raise BadRequest(f"missing input(s): {', '.join(missing)}")
        if unknown:
            raise BadRequest(f"unknown input(s): {', '.join(unknown)}; expected {sorted(self.by_name)}")

    def _array(self, inp: Input, value: Any) -> np.ndarray:
        """``value`` as a numpy array of the input's type, or BadRequest."""
        if isinstance(value, np.ndarray):
            arr = value
        else:
            arr = np.asarray(value, dtype=object)
        if inp.is_string:
            flat = arr.reshape(-1)
            for v in flat:
                if not isinstance(v, (str, bytes)):
                    raise BadRequest(f"input {inp.name!r} must hold strings, got {type(v).__name__} {v!r}")
            return arr.astype(object)
        flat = arr.reshape(-1)
        for v in flat:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise BadRequest(f"input {inp.name!r} must hold numbers, got {type(v).__name__} {v!r}")
        out = arr.astype(np.float32)
        if not np.all(np.isfinite(out)):
            raise BadRequest(f"input {inp.name!r} holds a non-finite number")
        if inp.name in self.ranges:
            self._check_range(inp.name, out)
        return out

    def _check_range(self, name: str, values: np.ndarray) -> None:
        """BadRequest naming the first value of ``name`` outside its feature's range."""
        lo, hi = self.ranges[name]
        bad = np.zeros(values.shape, bool)
        if lo is not None:
            bad |= values < np.float32(lo)
        if hi is not None:
            bad |= values > np.float32(hi)
        if bad.any():
            where = np.argwhere(bad)[0]
            at = f" at index {list(map(int, where))}" if values.ndim else ""
            allowed = (f"[{lo:g}, {hi:g}]" if lo is not None and hi is not None
                       else f">= {lo:g}" if lo is not None else f"<= {hi:g}")
            raise BadRequest(f"input {name!r} has {float(values[tuple(where)]):g}{at}, outside its "
                             f"allowed range {allowed} ({int(bad.sum())} value(s) out of range)")

    def _shape_user(self, inp: Input, arr: np.ndarray) -> np.ndarray:
        if inp.kind == USER_SEQ:
            if arr.ndim == 1:
                arr = arr.reshape(1, -1)
            if arr.ndim != 2 or arr.shape[0] != 1:
                raise BadRequest(f"user sequence {inp.name!r} must be one row of strings (shape [1, L] "
                                 f"or [L]), got shape {list(arr.shape)}")
            if arr.shape[1] == 0:
                arr = np.array([[""]], dtype=object)
            return arr
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.shape != (1,):
            raise BadRequest(f"user feature {inp.name!r} takes one value per request, got shape "
                             f"{list(arr.shape)}")
        return arr

    def _finish(self, arrays: Dict[str, np.ndarray]) -> Batch:
        user, cands, sizes = {}, {}, {}
        for inp in self.inputs:
            arr = arrays[inp.name]
            if inp.kind == CANDIDATE:
                if arr.ndim != 1:
                    raise BadRequest(f"candidate feature {inp.name!r} must be a list with one value per "
                                     f"candidate, got shape {list(arr.shape)}")
                cands[inp.name] = arr
                sizes[inp.name] = arr.shape[0]
            elif inp.kind == CANDIDATE_BAG:
                if arr.ndim != 2:
                    raise BadRequest(f"candidate token bag {inp.name!r} must be one row of tokens per "
                                     f"candidate, padded with \"\" (shape [N, L]), got shape {list(arr.shape)}")
                if arr.shape[1] == 0:
                    arr = np.full((arr.shape[0], 1), "", dtype=object)
                cands[inp.name] = arr
                sizes[inp.name] = arr.shape[0]
            else:
                user[inp.name] = self._shape_user(inp, arr)
        counts = set(sizes.values())
        if len(counts) != 1:
            raise BadRequest("candidate features disagree on the number of candidates: "
                             + ", ".join(f"{k}={v}" for k, v in sorted(sizes.items())))
        n = counts.pop()
        if n == 0:
            raise BadRequest("no candidates: candidate features are empty")
        if n > self.max_candidates:
            raise BadRequest(f"too many candidates: {n} (limit {self.max_candidates})")
        return Batch(user, cands, n)

    # --------------------------------------------------------------- protocols
    def from_v1(self, payload: Any) -> Batch:
        """``{"inputs": {name: value, ...}}`` (TF Serving's columnar form)."""
        if not isinstance(payload, dict) or "inputs" not in payload:
            raise BadRequest('request body must be a JSON object with an "inputs" object '
                             '(TF Serving columnar form: {"inputs": {"<feature>": value, ...}})')
        inputs = payload["inputs"]
        if not isinstance(inputs, dict):
            raise BadRequest(f'"inputs" must be an object of named features, got {type(inputs).__name__}')
        self._check_names(list(inputs))
        arrays = {}
        for inp in self.inputs:
            value = inputs[inp.name]
            if inp.kind in (CANDIDATE, CANDIDATE_BAG) and not isinstance(value, list):
                raise BadRequest(f"candidate feature {inp.name!r} must be a list, got {type(value).__name__}")
            try:
                arrays[inp.name] = self._array(inp, value)
            except BadRequest:
                raise
            except ValueError:
                raise BadRequest(f"input {inp.name!r} is a ragged nested list") from None
        return self._finish(arrays)

    def from_v2(self, request: Any) -> Batch:
        """A decoded Open Inference Protocol request (JSON or binary tensors)."""
        tensors = list(getattr(request, "inputs", None) or [])
        names = [t.name for t in tensors]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise BadRequest(f"input(s) given more than once: {', '.join(dupes)}")
        self._check_names(names)
        arrays = {}
        for t in tensors:
            inp = self.by_name[t.name]
            if t.datatype != inp.v2_datatype and not (not inp.is_string and t.datatype in
                                                      ("FP64", "FP16", "INT32", "INT64")):
                raise BadRequest(f"input {t.name!r} has datatype {t.datatype}; expected {inp.v2_datatype}")
            shape = [int(d) for d in t.shape]
            if any(d < 0 for d in shape):
                raise BadRequest(f"input {t.name!r} has a negative dimension in shape {shape}")
            expected = int(np.prod(shape)) if shape else 1
            if getattr(t, "_raw_data", None) is None:
                data = t.data if t.data is not None else []
                try:
                    flat = np.asarray(data, dtype=object).reshape(-1)
                except BadRequest:
                    raise
                except ValueError:
                    raise BadRequest(f"input {t.name!r}: data is a ragged nested list") from None
                if flat.size != expected:
                    raise BadRequest(f"input {t.name!r}: shape {shape} needs {expected} values, data has "
                                     f"{flat.size}")
                arrays[t.name] = self._array(inp, flat.reshape(shape))
            else:
                try:
                    arr = t.as_numpy()
                except (ValueError, TypeError) as e:
                    raise BadRequest(f"input {t.name!r}: binary data does not match shape {shape} "
                                     f"and datatype {t.datatype} ({e})") from None
                if arr.size != expected:
                    raise BadRequest(f"input {t.name!r}: shape {shape} needs {expected} values, binary "
                                     f"data has {arr.size}")
                arrays[t.name] = self._array(inp, arr.reshape(shape))
        return self._finish(arrays)

    def metadata(self) -> Tuple[List[Dict], List[Dict]]:
        """v2 model-metadata inputs and outputs."""
        ins = [{"name": i.name, "datatype": i.v2_datatype, "shape": i.v2_shape} for i in self.inputs]
        return ins, [{"name": "probabilities", "datatype": "FP32", "shape": [-1]}]
