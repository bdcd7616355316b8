"""The ranking request contract and its validation (every problem -> 400).

    {"user_id": "u00042", "candidates": ["i0001", "i0002", ...],
     "context": {"ts": 1709300000, "user_region_id": "r03"}}

* ``user_id``: non-empty string;
* ``candidates``: non-empty list of non-empty post-id strings, at most
  ``max_candidates``;
* ``context`` (optional object): ``ts`` - the request time in unix seconds
  (default: now; the user's behaviour is read strictly before it, like the
  example generator's), ``user_region_id`` - used when Redis has no region
  for the user or is unavailable.  Other context keys are ignored.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, List, Optional

from serving.common.errors import BadRequest

MAX_ID_CHARS = 256


@dataclasses.dataclass(frozen=True)
class RankRequest:
    """A validated ranking request."""

    user_id: str
    candidates: List[str]
    ts: int
    user_region_id: Optional[str]


def _id(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_ID_CHARS:
        raise BadRequest(f"{what} must be 1..{MAX_ID_CHARS} characters")
    return value


def parse(payload: Any, max_candidates: int, now: Optional[float] = None) -> RankRequest:
    """Validates a decoded JSON body."""
    if not isinstance(payload, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(payload).__name__}")
    for name in ("user_id", "candidates"):
        if name not in payload:
            raise BadRequest(f"missing field '{name}'")
    user_id = _id(payload["user_id"], "'user_id'")
    cands = payload["candidates"]
    if not isinstance(cands, list):
        raise BadRequest(f"'candidates' must be a list of post ids, got {type(cands).__name__}")
    if not cands:
        raise BadRequest("'candidates' is empty")
    if len(cands) > max_candidates:
        raise BadRequest(f"too many candidates: {len(cands)} > the limit of {max_candidates}")
    candidates = [_id(c, f"'candidates[{i}]'") for i, c in enumerate(cands)]
    context = payload.get("context") or {}
    if not isinstance(context, dict):
        raise BadRequest(f"'context' must be an object, got {type(context).__name__}")
    ts = context.get("ts")
    if ts is None:
        ts = int(time.time() if now is None else now)
    elif isinstance(ts, bool) or not isinstance(ts, (int, float)) or not 0 <= ts < 2 ** 53:
        raise BadRequest("'context.ts' must be a non-negative number of unix seconds")
    region = context.get("user_region_id")
    if region is not None and not isinstance(region, str):
        raise BadRequest(f"'context.user_region_id' must be a string, got {type(region).__name__}")
    return RankRequest(user_id, candidates, int(ts), region)
