"""`dropped`: the JSON paths a round trip lost or changed (standard library only, so both
the pipeline and the serving environment's helpers use it)."""
from typing import Any, List


def dropped(original: Any, back: Any, path: str = "") -> List[str]:
    """Paths in ``original`` whose value is missing or different in ``back``."""
    if isinstance(original, dict):
        if not isinstance(back, dict):
            return [path or "/"]
        out: List[str] = []
        for k, v in original.items():
            out += dropped(v, back[k], f"{path}.{k}") if k in back else [f"{path}.{k}"]
        return out
    if isinstance(original, list):
        if not isinstance(back, list) or len(back) != len(original):
            return [path]
        return [p for i, v in enumerate(original) for p in dropped(v, back[i], f"{path}[{i}]")]
    return [] if original == back else [path]
