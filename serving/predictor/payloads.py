"""Build predictor requests: v1 JSON, v2 JSON and v2 binary tensors.

Standard library plus ``feedrank.features`` only, so tests, benchmarks and
clients in any environment can use it.  ``user`` maps user features to a
string (scalars) or a list of strings (sequences, most recent last);
``candidates`` maps candidate features to lists of N values.  `synthetic`
draws the inputs of a model with a given `feedrank.features.FeatureSpec`.
"""
from __future__ import annotations

import json
import random
import struct
from typing import Dict, List, Tuple, Union

from feedrank import features as F

Value = Union[str, List[str]]


_CATEGORIES = ("goods/appliances", "goods/furniture", "services/moving", "services/cleaning",
               "jobs/sales", "jobs/driver", "housing/rent", "housing/sale", "cars/used", "pets/dogs")
_TOKENS = ("second_hand", "fridge", "discount", "local", "salary", "commission", "rent", "sofa",
           "today", "good_condition", "moving", "driver")


def _id(vocab: str, rng: random.Random) -> str:
    if vocab == "item":
        return f"i{rng.randrange(10**6):07d}"
    if vocab == "category":
        return rng.choice(_CATEGORIES)
    if vocab == "region":
        return f"r{rng.randrange(60)}"
    if vocab == F.AGE_VOCAB.name:
        return rng.choice(F.AGE_LABELS)
    return rng.choice(_TOKENS)


def synthetic(n: int, history_len: int = 50, seed: int = 0,
              spec: F.FeatureSpec = F.BUILTIN) -> Tuple[Dict[str, Value], Dict[str, list]]:
    """A request of ``n`` candidates with ``history_len``-step histories (capped
    at each sequence's max_len), ids shaped like the simulator's, for a model
    with the feature contract ``spec`` (its declared columns included)."""
    rng = random.Random(seed)
    user: Dict[str, Value] = {f.name: _id(f.vocab.name, rng) for f in spec.id_features if f.side == "user"}
    for d in spec.request_dense("user"):
        user[d.name] = float(rng.randrange(100)) / (100.0 if d.max_value == 1.0 else 1.0)   # within its range
    for s in spec.seq_features:
        user[s.name] = [_id(s.vocab.name, rng) for _ in range(min(history_len, s.max_len))]
    cands: Dict[str, list] = {}
    for f in spec.id_features:
        if f.side == "candidate":
            cands[f.name] = [_id(f.vocab.name, rng) for _ in range(n)]
    for d in spec.request_dense("candidate"):
        cands[d.name] = [round(rng.random(), 4) if d.max_value == 1.0
                         else float(rng.randrange(int(min(d.max_value or 4999, 4999)) + 1))
                         for _ in range(n)]
    for b in spec.bag_features:   # declared token bags: a row for the user, a ""-padded row per candidate
        rows = [[_id("token", rng) for _ in range(rng.randrange(1, b.max_len + 1))]
                for _ in range(n if b.side == "candidate" else 1)]
        if b.side == "user":
            user[b.name] = rows[0]
        else:
            width = max(len(r) for r in rows)
            cands[b.name] = [r + [""] * (width - len(r)) for r in rows]
    return user, cands


def v1_body(user: Dict[str, Value], candidates: Dict[str, list]) -> dict:
    """TF Serving columnar form: user sequences as one row, scalars once."""
    inputs: Dict[str, object] = {}
    for k, v in user.items():
        inputs[k] = [v] if isinstance(v, list) else v
    inputs.update(candidates)
    return {"inputs": inputs}


def _tensors(user: Dict[str, Value], candidates: Dict[str, list]):
    for k, v in user.items():
        if isinstance(v, list):
            yield k, [1, len(v)], "BYTES", v
        elif isinstance(v, (int, float)):   # a user-side number (counters, declared numeric columns)
            yield k, [1], "FP32", [float(v)]
        else:
            yield k, [1], "BYTES", [v]
    for k, vals in candidates.items():
        if vals and isinstance(vals[0], list):   # a token bag: [N, L] strings
            yield k, [len(vals), len(vals[0])], "BYTES", [t for row in vals for t in row]
            continue
        dtype = "BYTES" if vals and isinstance(vals[0], str) else "FP32"
        yield k, [len(vals)], dtype, vals


def v2_json_body(user: Dict[str, Value], candidates: Dict[str, list]) -> dict:
    """Open Inference Protocol JSON tensors, one per input."""
    return {"inputs": [{"name": k, "shape": s, "datatype": t, "data": d} for k, s, t, d in _tensors(user, candidates)]}


def _raw(dtype: str, data: list) -> bytes:
    if dtype == "BYTES":
        parts = []
        for v in data:
            b = v.encode() if isinstance(v, str) else v
            parts.append(struct.pack("<I", len(b)) + b)
        return b"".join(parts)
    return struct.pack(f"<{len(data)}f", *data)


def v2_binary_body(user: Dict[str, Value], candidates: Dict[str, list],
                   binary_output: bool = False) -> Tuple[bytes, int]:
    """(body, JSON header length) for the binary tensor extension: send the
    length as ``Inference-Header-Content-Length`` and the body as
    ``application/octet-stream``.  With ``binary_output`` the response's
    ``probabilities`` come back binary too (:func:`read_binary_output`)."""
    header_inputs, blobs = [], []
    for k, s, t, d in _tensors(user, candidates):
        raw = _raw(t, d)
        header_inputs.append({"name": k, "shape": s, "datatype": t, "parameters": {"binary_data_size": len(raw)}})
        blobs.append(raw)
    request: Dict[str, object] = {"inputs": header_inputs}
    if binary_output:
        request["parameters"] = {"binary_data_output": True}
    header = json.dumps(request).encode()
    return header + b"".join(blobs), len(header)


def read_binary_output(body: bytes, header_length: int) -> Tuple[dict, List[float]]:
    """(JSON header, probabilities) of a v2 response with a binary FP32 output."""
    header = json.loads(body[:header_length])
    n = header["outputs"][0]["shape"][0]
    return header, list(struct.unpack(f"<{n}f", body[header_length:header_length + 4 * n]))
