"""The ranking request contract and its validation (every problem -> 400).

    {"user_id": "u00042", "candidates": ["i0001", "i0002", ...],
     "context": {"ts": 1709300000, "user_region_id": "r03", "request_id": "..."},
     "show": 10, "debug": {"arm": "challenger", "log": false}}

* ``user_id``: non-empty string;
* ``candidates``: non-empty list of non-empty post-id strings, at most
  ``max_candidates``;
* ``context`` (optional object): ``ts`` - the request time in unix seconds
  (default: now; the user's behaviour is read strictly before it, like the
  example generator's), ``user_region_id`` - used when Redis has no region
  for the user or is unavailable, ``request_id`` - the id the impressions
  are logged under (1..256 characters; default a fresh uuid4 hex).  Other
  context keys are ignored;
* ``show`` (optional): the number of top-ranked posts the app shows (the
  logged impressions), a positive integer; default the server's ``--show``,
  else all; more than the candidates means all of them;
* ``debug`` (optional object, counterfactual evaluation only): ``arm`` forces
  ``"champion"`` or ``"challenger"`` and ``log`` (default false) must stay
  false with a forced arm: a debug request is never logged, so it cannot
  bias the A/B test.
"""
from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any, List, Optional, Tuple

from feedrank.ab.assign import ARMS
from serving.common.errors import BadRequest

MAX_ID_CHARS = 256


@dataclasses.dataclass(frozen=True)
class RankRequest:
    """A validated ranking request."""

    user_id: str
    candidates: List[str]
    ts: int
    user_region_id: Optional[str]
    request_id: str = ""
    show: Optional[int] = None       # None: the server's default
    forced_arm: Optional[str] = None  # debug.arm
    log: bool = True                 # False for debug requests


def _id(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_ID_CHARS:
        raise BadRequest(f"{what} must be 1..{MAX_ID_CHARS} characters")
    return value


def _show(value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise BadRequest(f"'show' must be a positive integer (posts shown), got {value!r}"[:200])
    return value


def _debug(value: Any) -> Tuple[Optional[str], bool]:
    """``(forced arm, log)`` of the optional ``debug`` object."""
    if value is None:
        return None, True
    if not isinstance(value, dict):
        raise BadRequest(f"'debug' must be an object, got {type(value).__name__}")
    unknown = sorted(set(value) - {"arm", "log"})
    if unknown:
        raise BadRequest(f"'debug' has unknown field(s) {unknown}; allowed: 'arm', 'log'")
    arm = value.get("arm")
    if arm is not None and arm not in ARMS:
        raise BadRequest(f"'debug.arm' must be one of {list(ARMS)}, got {arm!r}"[:200])
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise BadRequest(f"'debug.log' must be true or false, got {type(log).__name__}")
    if log and arm is not None:
        raise BadRequest("'debug.log' cannot be true with a forced 'debug.arm': "
                         "a forced arm is never logged (it would bias the A/B test)")
    return arm, log


def peek(payload: Any) -> Tuple[str, str, bool]:
    """``(user_id, request_id, log)`` of a body that may be invalid, for the
    request record of a refused request (``""`` where unreadable)."""
    if not isinstance(payload, dict):
        return "", "", True
    user = payload.get("user_id")
    context = payload.get("context")
    rid = context.get("request_id") if isinstance(context, dict) else None
    return (user if isinstance(user, str) and len(user) <= MAX_ID_CHARS else "",
            rid if isinstance(rid, str) and 0 < len(rid) <= MAX_ID_CHARS else "",
            "debug" not in payload)


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
    rid = context.get("request_id")
    request_id = uuid.uuid4().hex if rid is None else _id(rid, "'context.request_id'")
    forced_arm, log = _debug(payload.get("debug"))
    return RankRequest(user_id, candidates, int(ts), region, request_id, _show(payload.get("show")),
                       forced_arm, log)
