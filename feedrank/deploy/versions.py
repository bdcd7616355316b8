"""Registry versions -> what KServe serves: version number, blessing, storage URI.

A registered version's tags say where its SavedModel was pushed
(``pushed_dir``) and whether the Evaluator blessed it (``blessed``, checked
with `feedrank.tracking.registry.is_blessed`, the check `promote` uses).
KServe's storage initializer downloads gs://, s3:// or pvc:// URIs; a local
push directory (``model_store/<model>/<version>``) is mapped onto the bucket
the push root is synced to (``--model-store-uri``), or refused.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import os
from typing import Optional, Tuple

from feedrank.deploy import DeployError
from feedrank.tracking import CHALLENGER, CHAMPION
from feedrank.tracking.registry import is_blessed, resolve_version

log = logging.getLogger(__name__)

REMOTE_SCHEMES = ("gs://", "s3://", "pvc://")
LOCAL = "local"   # model_store_uri for `--local`: the local push directory itself, for `make serve`
PREVIOUS_CHAMPION_TAG = "previous_champion"  # set by `promote` on the new champion


@dataclasses.dataclass(frozen=True)
class ServedVersion:
    """One registry version as KServe will serve it."""

    model: str
    version: str
    alias: str
    storage_uri: str
    pushed_dir: str


def storage_uri(pushed_dir: str, model_store_uri: Optional[str]) -> str:
    """The URI KServe downloads for a pushed directory.

    ``gs://b/model_store/din/17`` stays as is; a local ``.../model_store/din/17``
    with ``model_store_uri=s3://b/model_store`` becomes ``s3://b/model_store/din/17``,
    and with `LOCAL` stays the local directory (for ``make serve``, not a cluster).
    """
    if pushed_dir.startswith(REMOTE_SCHEMES):
        return pushed_dir.rstrip("/")
    if model_store_uri == LOCAL:
        return os.path.abspath(pushed_dir)
    if not model_store_uri:
        raise DeployError(f"pushed_dir {pushed_dir!r} is a local path the cluster cannot read; push to "
                          f"gs:// or s3://, give --model-store-uri (the bucket the push root is synced to), "
                          f"or pass --local to act on the registry only and serve with make serve")
    if not model_store_uri.startswith(REMOTE_SCHEMES):
        raise DeployError(f"--model-store-uri {model_store_uri!r} must start with one of {REMOTE_SCHEMES}")
    parts = os.path.normpath(pushed_dir).split(os.sep)
    if len(parts) < 2:
        raise DeployError(f"pushed_dir {pushed_dir!r} is not <push root>/<model>/<version>")
    return f"{model_store_uri.rstrip('/')}/{parts[-2]}/{parts[-1]}"


def served(client, model: str, *, alias: Optional[str] = None, version: Optional[int] = None,
           model_store_uri: Optional[str] = None) -> ServedVersion:
    """The blessed version named by alias or number; DeployError if it is unblessed or unpushed."""
    from feedrank.tracking import TrackingError

    try:
        mv = resolve_version(client, model, version=version, alias=alias)
        ok, why = is_blessed(client, mv)
    except TrackingError as e:
        raise DeployError(str(e)) from None
    named = f"{model!r} version {mv.version}" + (f" (alias {alias!r})" if alias else "")
    if not ok:
        raise DeployError(f"refusing to deploy {named}: it is not blessed ({why}); "
                          f"only a version the Evaluator blessed is served")
    pushed_dir = (mv.tags or {}).get("pushed_dir", "")
    if not pushed_dir:
        raise DeployError(f"{named} has no pushed_dir tag: nothing to serve")
    uri = storage_uri(pushed_dir, model_store_uri)
    log.info("%s -> %s", named, uri)
    return ServedVersion(model, str(mv.version), alias or "", uri, pushed_dir)


def canary_pair(client, model: str, model_store_uri: Optional[str] = None):
    """(champion, challenger), both blessed; DeployError when they are the same version."""
    champion = served(client, model, alias=CHAMPION, model_store_uri=model_store_uri)
    challenger = served(client, model, alias=CHALLENGER, model_store_uri=model_store_uri)
    if champion.version == challenger.version:
        raise DeployError(f"{model!r}: champion and challenger are both version {champion.version}; "
                          f"nothing to canary (use `rollback` to serve the champion alone)")
    return champion, challenger


def rollback_target(client, model: str, previous: bool = False,
                    model_store_uri: Optional[str] = None) -> ServedVersion:
    """The version that gets 100%: the champion, or with ``previous`` the version it replaced
    (DeployError when the champion has no ``previous_champion`` tag)."""
    if not previous:
        return served(client, model, alias=CHAMPION, model_store_uri=model_store_uri)
    from feedrank.tracking import TrackingError

    try:  # the champion itself need not be servable to be rolled back from
        mv = resolve_version(client, model, alias=CHAMPION)
    except TrackingError as e:
        raise DeployError(str(e)) from None
    current = mv
    before = (mv.tags or {}).get(PREVIOUS_CHAMPION_TAG)
    if before == str(current.version):
        before = None
    if not before:
        raise DeployError(f"{model!r} champion version {current.version} has no {PREVIOUS_CHAMPION_TAG} "
                          f"tag: there is no previous champion to roll back to")
    return served(client, model, version=int(before), model_store_uri=model_store_uri)


def restore_previous(client, model: str, model_store_uri: Optional[str] = None) -> Tuple[ServedVersion, str]:
    """Moves ``champion`` back to the version the current champion replaced; returns (it, the replaced one).

    The target must be servable (blessed, pushed) before the alias moves, so a
    refused rollback changes nothing. The restored version keeps its own
    ``previous_champion`` tag, so a second rollback goes one further step back;
    the demoted version is tagged ``rolled_back_at`` and ``rolled_back_to``.
    """
    target = rollback_target(client, model, previous=True, model_store_uri=model_store_uri)
    current = client.get_model_version_by_alias(model, CHAMPION).version
    client.set_registered_model_alias(model, CHAMPION, target.version)
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    client.set_model_version_tag(model, str(current), "rolled_back_at", stamp)
    client.set_model_version_tag(model, str(current), "rolled_back_to", target.version)
    client.set_model_version_tag(model, target.version, "restored_as_champion_at", stamp)
    log.info("%s: alias %r moved back from version %s to %s", model, CHAMPION, current, target.version)
    return dataclasses.replace(target, alias=CHAMPION), str(current)
