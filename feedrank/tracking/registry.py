"""The registry's aliases: ``challenger`` (set by the pipeline), ``champion`` (set by `promote`).

  promote(client, "feedrank-demo-ranker", alias="challenger")
  promote(client, "feedrank-demo-ranker", version=3)
  set_challenger(client, "feedrank-demo-ranker", 4); clear_alias(client, "feedrank-demo-ranker", "challenger")

``champion`` moves only to a blessed version: the version's tag
``blessed=true`` or, failing that, its run's tag ``blessed=true``, and so does a
``challenger`` set by hand.  Anything else is refused with the reason.
"""
from __future__ import annotations

import dataclasses
import datetime
from typing import Dict, Optional

from feedrank.tracking import BLESSED_TAG, CHALLENGER, CHAMPION, TrackingError, error_code, not_found

# The registry's answer to a missing alias (a missing model or version is RESOURCE_DOES_NOT_EXIST).
NO_SUCH_ALIAS = "INVALID_PARAMETER_VALUE"


@dataclasses.dataclass
class Promotion:
    model: str
    version: str
    previous: Optional[str]
    run_id: Optional[str]
    source: str

    def __str__(self) -> str:
        prev = f" (was version {self.previous})" if self.previous else " (no previous champion)"
        return f"{self.model}: alias '{CHAMPION}' -> version {self.version}{prev}; source {self.source}"


def resolve_version(client, model: str, version: Optional[int] = None, alias: Optional[str] = None):
    """The ModelVersion named by number or alias; TrackingError if there is none."""
    if (version is None) == (alias is None):
        raise TrackingError("give exactly one of --version N or --alias NAME")
    try:
        client.get_registered_model(model)
    except Exception as e:  # noqa: BLE001
        if not_found(e):
            raise TrackingError(f"registered model {model!r} does not exist (no blessed, pushed "
                                f"candidate has been logged yet)") from None
        raise
    try:
        if alias is not None:
            return client.get_model_version_by_alias(model, alias)
        return client.get_model_version(model, str(int(version)))
    except Exception as e:  # noqa: BLE001
        if not_found(e) or (alias is not None and error_code(e) == NO_SUCH_ALIAS):
            what = f"alias {alias!r}" if alias is not None else f"version {version}"
            raise TrackingError(f"{model!r} has no {what}") from None
        raise


def is_blessed(client, mv) -> tuple:
    """(blessed, where the verdict came from) for a model version."""
    tag = (mv.tags or {}).get(BLESSED_TAG)
    if tag is not None:
        return tag.lower() == "true", f"version tag {BLESSED_TAG}={tag}"
    if mv.run_id:
        try:
            run_tag = client.get_run(mv.run_id).data.tags.get(BLESSED_TAG)
        except Exception as e:  # noqa: BLE001 - a deleted run: no verdict
            if not not_found(e):
                raise
            run_tag = None
        if run_tag is not None:
            return run_tag.lower() == "true", f"run {mv.run_id} tag {BLESSED_TAG}={run_tag}"
    return False, f"no {BLESSED_TAG} tag on the version or its run"


def promote(client, model: str, version: Optional[int] = None, alias: Optional[str] = None) -> Promotion:
    """Moves ``champion`` to the version (by number or alias) if it is blessed; else TrackingError."""
    mv = resolve_version(client, model, version, alias)
    ok, why = is_blessed(client, mv)
    named = f"version {mv.version}" + (f" (alias {alias!r})" if alias else "")
    if not ok:
        raise TrackingError(f"refusing to promote {model!r} {named} to {CHAMPION!r}: it is not blessed "
                            f"({why}); only a version the Evaluator blessed can be champion")
    try:
        previous = client.get_model_version_by_alias(model, CHAMPION).version
    except Exception as e:  # noqa: BLE001 - no champion yet
        if error_code(e) != NO_SUCH_ALIAS:
            raise
        previous = None
    client.set_registered_model_alias(model, CHAMPION, mv.version)
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    client.set_model_version_tag(model, mv.version, "promoted_to_champion_at", stamp)
    if previous and str(previous) != str(mv.version):
        client.set_model_version_tag(model, mv.version, "previous_champion", str(previous))
    return Promotion(model, str(mv.version), str(previous) if previous else None, mv.run_id, mv.source)


def set_challenger(client, model: str, version: int) -> str:
    """Points ``challenger`` at a blessed version by hand; TrackingError otherwise. Returns a line to print."""
    mv = resolve_version(client, model, version=version)
    ok, why = is_blessed(client, mv)
    if not ok:
        raise TrackingError(f"refusing to make {model!r} version {mv.version} the {CHALLENGER!r}: it is not "
                            f"blessed ({why})")
    client.set_registered_model_alias(model, CHALLENGER, mv.version)
    return f"{model}: alias {CHALLENGER!r} -> version {mv.version}"


def clear_alias(client, model: str, alias: str) -> str:
    """Removes ``alias`` from ``model``; a line to print (also when it was not set)."""
    current = aliases(client, model).get(alias)
    if current is None:
        return f"{model}: alias {alias!r} was not set"
    client.delete_registered_model_alias(model, alias)
    return f"{model}: alias {alias!r} cleared (it named version {current})"


def aliases(client, model: str) -> Dict[str, str]:
    """``{"champion": version, "challenger": version}`` of ``model``, the set ones only;
    TrackingError when the model is not registered."""
    try:
        registered = client.get_registered_model(model)
    except Exception as e:  # noqa: BLE001
        if not_found(e):
            raise TrackingError(f"registered model {model!r} does not exist (no blessed, pushed run "
                                f"registered it yet)") from None
        raise
    return {str(k): str(v) for k, v in (registered.aliases or {}).items()}
