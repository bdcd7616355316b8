"""The served model: the registry version that carries the ``champion`` alias, and its SavedModel.

  champ = find_champion("http://127.0.0.1:5050", "feedrank-demo-ranker")   # None: no champion
  fetch_saved_model(champ, "http://127.0.0.1:5050", "/tmp/baseline/Format-Serving")

`find_champion` answers None when the registered model or its alias does not
exist, and raises `RegistryUnavailable` when the registry cannot answer (a
server that does not pass its health check, or any other error), so the
caller can fall back and say why.  `fetch_saved_model` copies the version's
``pushed_dir`` (the serving path) when it is readable from here, and
otherwise downloads the version's source artifact (`register` logs a local
push under the run's ``pushed_model/``).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import urllib.parse
from typing import Optional

import tensorflow as tf

from feedrank.tracking import CHAMPION, error_code

log = logging.getLogger(__name__)
SAVED_MODEL = "saved_model.pb"
# The registry's answers for "no such model" and "no such alias": no champion, not an outage.
_ABSENT = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


class RegistryUnavailable(RuntimeError):
    """The registry could not say which version is the champion (one line)."""


class ChampionUnreadable(RuntimeError):
    """The champion's SavedModel is readable neither at its pushed_dir nor from its source."""


@dataclasses.dataclass(frozen=True)
class Champion:
    """One registry version that carries the ``champion`` alias."""

    registered_model: str
    version: str
    family: str
    pushed_dir: str
    pushed_version: str
    source: str


def find_champion(uri: str, model: str, timeout_s: float = 5.0) -> Optional[Champion]:
    """The version of ``model`` that carries ``champion``; None if there is none."""
    from feedrank.tracking.candidate import client_for
    from feedrank.tracking.server import healthy

    if urllib.parse.urlparse(uri).scheme in ("http", "https") and not healthy(uri, timeout_s):
        # Checked first: MLflow's client retries a refused connection for minutes.
        raise RegistryUnavailable(f"MLflow tracking server {uri} is not reachable (GET /health failed)")
    try:
        mv = client_for(uri).get_model_version_by_alias(model, CHAMPION)
    except Exception as e:  # noqa: BLE001 - any registry failure becomes a fallback with a warning
        if error_code(e) in _ABSENT:
            return None
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise RegistryUnavailable(f"the registry at {uri} failed to answer: {type(e).__name__}: {first}") from None
    tags = mv.tags or {}
    return Champion(registered_model=model, version=str(mv.version), family=tags.get("model_family", "unknown"),
                    pushed_dir=tags.get("pushed_dir", ""), pushed_version=tags.get("pushed_version", ""),
                    source=mv.source or "")


def champion_key(uri: str, model: str) -> str:
    """The champion's version for a cache key, failing soft: ``"<model>@champion=v3"``,
    ``"none"`` when there is no champion, ``"unknown"`` when the registry cannot answer."""
    if not uri or not model:
        return "none"
    try:
        champ = find_champion(uri, model, timeout_s=2.0)
    except RegistryUnavailable as e:
        log.info("champion not looked up at build time (%s); the baseline looks again when it runs", e)
        return "unknown"
    return f"{model}@{CHAMPION}=v{champ.version}" if champ else "none"


def copy_tree(src: str, dst: str) -> None:
    """Copies the directory ``src`` into ``dst`` (any filesystem tf.io.gfile reads)."""
    for root, _, files in tf.io.gfile.walk(src):
        rel = os.path.relpath(root, src)
        tf.io.gfile.makedirs(os.path.join(dst, rel))
        for name in files:
            tf.io.gfile.copy(os.path.join(root, name), os.path.join(dst, rel, name), overwrite=True)


def _saved_model_dir(root: str) -> Optional[str]:
    """``root`` or the one directory below it that holds ``saved_model.pb``."""
    for base, _, files in os.walk(root):
        if SAVED_MODEL in files:
            return base
    return None


def fetch_saved_model(champ: Champion, uri: str, dst: str) -> str:
    """Copies the champion's SavedModel into ``dst``; returns where it was read from."""
    if champ.pushed_dir and tf.io.gfile.exists(os.path.join(champ.pushed_dir, SAVED_MODEL)):
        copy_tree(champ.pushed_dir, dst)
        return champ.pushed_dir
    if not champ.source:
        raise ChampionUnreadable(f"{champ.registered_model} v{champ.version}: pushed_dir {champ.pushed_dir!r} "
                                 f"holds no {SAVED_MODEL} and the version has no source")
    import mlflow

    tmp = tempfile.mkdtemp(prefix="champion-")
    try:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=champ.source, dst_path=tmp, tracking_uri=uri)
        except Exception as e:  # noqa: BLE001 - reported as one line, the caller falls back
            first = (str(e).strip().splitlines() or [""])[0][:300]
            raise ChampionUnreadable(f"{champ.registered_model} v{champ.version}: pushed_dir "
                                     f"{champ.pushed_dir!r} is not readable here and downloading its source "
                                     f"{champ.source} failed: {type(e).__name__}: {first}") from None
        found = _saved_model_dir(local)
        if found is None:
            raise ChampionUnreadable(f"{champ.registered_model} v{champ.version}: its source {champ.source} "
                                     f"holds no {SAVED_MODEL}")
        copy_tree(found, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("champion %s v%s: pushed_dir %s not readable here; downloaded its source %s",
             champ.registered_model, champ.version, champ.pushed_dir, champ.source)
    return champ.source
