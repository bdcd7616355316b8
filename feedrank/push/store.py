"""The push store ``<push_dir>/<version>/``: atomic pushes, deduplicated by fingerprint.

Layout (what the baseline lookup and the servers read):

  <push_dir>/<version>/saved_model.pb, variables/, assets/, push_meta.json
  <push_dir>/.push-<host>-<pid>-<unix time>-<random>/      a push in progress

A version is a numeric directory holding ``saved_model.pb``; its name is the
unix time of the push, or one more than the newest version if that is larger,
so a new push is always the newest.  ``push_meta.json`` records the model's
fingerprint (`feedrank.push.fingerprint`), where it came from and when.

`push` first removes stale staging directories (see `clean_stale`), then looks
for a complete version with the same fingerprint and, if there is one, pushes
nothing and returns it (``reused``).  Otherwise it copies the model into a
hidden staging directory beside the versions (``saved_model.pb`` last), writes
``push_meta.json``, and renames the directory to its version name.

On a local filesystem that rename is atomic: a version appears complete or not
at all, and a push killed half-way leaves only a hidden staging directory.
Object stores (gs://, s3://) have no directory rename: the files are moved one
by one with ``saved_model.pb`` last, so a reader that treats a version as
complete only once ``saved_model.pb`` exists (as every reader here does) never
sees a partial one; a move killed half-way leaves an incomplete numeric
directory, removed by a later push once it is older than ``stale_after_s``.
Two pushes of the same model running at the same moment can both push it.
"""
from __future__ import annotations

import dataclasses
import datetime
import errno
import json
import logging
import os
import re
import socket
import time
import uuid
from typing import Dict, List, Optional, Tuple

import tensorflow as tf

from feedrank.push.fingerprint import META_FILE, listing, model_fingerprint

log = logging.getLogger(__name__)

STAGING_PREFIX = ".push-"
SAVED_MODEL = "saved_model.pb"
DEFAULT_STALE_AFTER_S = 900
_STAGING = re.compile(r"^\.push-(?P<host>.+)-(?P<pid>\d+)-(?P<ts>\d+)-(?P<rand>[0-9a-f]+)$")


@dataclasses.dataclass(frozen=True)
class PushResult:
    version: str
    path: str
    fingerprint: str
    reused: bool


def _join(*parts: str) -> str:
    return "/".join([parts[0].rstrip("/"), *(p.strip("/") for p in parts[1:])])


def _is_local(path: str) -> bool:
    return "://" not in path


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", socket.gethostname()) or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _entries(push_dir: str) -> List[str]:
    if not tf.io.gfile.isdir(push_dir):
        return []
    return [e.rstrip("/") for e in tf.io.gfile.listdir(push_dir)]


def complete_versions(push_dir: str) -> List[str]:
    """Version names (numeric, holding ``saved_model.pb``) under ``push_dir``, oldest first."""
    names = [e for e in _entries(push_dir) if e.isdigit()]
    return sorted((v for v in names if tf.io.gfile.exists(_join(push_dir, v, SAVED_MODEL))), key=int)


def read_meta(version_dir: str) -> Dict[str, object]:
    """The version's ``push_meta.json``, or {} when it has none (or an unreadable one)."""
    path = _join(version_dir, META_FILE)
    if not tf.io.gfile.exists(path):
        return {}
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            return json.loads(f.read())
    except (ValueError, tf.errors.OpError) as e:
        log.warning("ignoring unreadable %s: %s", path, e)
        return {}


def find_version(push_dir: str, fingerprint: str,
                 files: Optional[List[Tuple[str, int]]] = None) -> Optional[str]:
    """The oldest complete version holding the model with ``fingerprint``, or None.

    Versions without ``push_meta.json`` (pushed by another tool) are hashed
    when their file names and sizes equal ``files`` (the candidate's listing).
    """
    for version in complete_versions(push_dir):
        vdir = _join(push_dir, version)
        recorded = read_meta(vdir).get("fingerprint")
        if recorded:
            if recorded == fingerprint:
                return version
            continue
        if files is not None and listing(vdir) == files and model_fingerprint(vdir) == fingerprint:
            return version
    return None


def _age_s(name: str, now: float) -> Optional[float]:
    m = _STAGING.match(name)
    if m:
        return now - int(m.group("ts"))
    if name.isdigit() and int(name) > 1_000_000_000:  # versions are named by unix time
        return now - int(name)
    return None


def _remove(path: str) -> bool:
    try:
        tf.io.gfile.rmtree(path)
        return True
    except tf.errors.NotFoundError:
        return True  # another push removed it first
    except tf.errors.OpError as e:
        log.warning("could not remove stale %s: %s", path, e)
        return False


def clean_stale(push_dir: str, stale_after_s: float = DEFAULT_STALE_AFTER_S,
                now: Optional[float] = None) -> List[str]:
    """Removes what killed pushes left behind; returns the removed names.

    * staging directories of a process on this host that no longer runs;
    * staging directories older than ``stale_after_s`` (any host);
    * numeric directories without ``saved_model.pb`` (a move to an object store
      killed half-way, or a push by a non-atomic pusher) older than ``stale_after_s``.
    """
    now = time.time() if now is None else now
    removed = []
    for name in _entries(push_dir):
        path = _join(push_dir, name)
        age = _age_s(name, now)
        if name.startswith(STAGING_PREFIX):
            m = _STAGING.match(name)
            dead = bool(m and m.group("host") == _host() and not _pid_alive(int(m.group("pid"))))
            stale = m is None or dead or (age is not None and age > stale_after_s)
        elif name.isdigit():
            stale = (age is not None and age > stale_after_s
                     and not tf.io.gfile.exists(_join(path, SAVED_MODEL)))
        else:
            stale = False
        if stale and _remove(path):
            removed.append(name)
    if removed:
        log.info("removed %d leftover push director%s under %s: %s", len(removed),
                 "y" if len(removed) == 1 else "ies", push_dir, ", ".join(sorted(removed)))
    return removed


def staging_dir(push_dir: str, now: Optional[float] = None) -> str:
    """A fresh hidden staging path beside the versions, named after this host, process and time."""
    ts = int(time.time() if now is None else now)
    return _join(push_dir, f"{STAGING_PREFIX}{_host()}-{os.getpid()}-{ts}-{uuid.uuid4().hex[:8]}")


def copy_model(src: str, dst: str) -> None:
    """Copies every file of ``src`` to ``dst``, ``saved_model.pb`` last."""
    files = [rel for rel, _ in listing(src)]
    for rel in sorted(files, key=lambda r: r == SAVED_MODEL):
        target = _join(dst, rel)
        tf.io.gfile.makedirs(target.rsplit("/", 1)[0])
        tf.io.gfile.copy(_join(src, rel), target, overwrite=True)


def _next_version(push_dir: str, now: float) -> str:
    numeric = [int(e) for e in _entries(push_dir) if e.isdigit()]
    return str(max([int(now), *(v + 1 for v in numeric)]))


def _move_files(src: str, dst: str) -> None:
    """Object-store 'rename': every file moved, ``saved_model.pb`` last, then ``src`` removed."""
    files = [rel for rel, _ in listing(src)]
    if tf.io.gfile.exists(_join(src, META_FILE)):
        files.append(META_FILE)
    for rel in sorted(files, key=lambda r: r == SAVED_MODEL):
        target = _join(dst, rel)
        tf.io.gfile.makedirs(target.rsplit("/", 1)[0])
        tf.io.gfile.rename(_join(src, rel), target, overwrite=False)
    _remove(src)


def publish(staged: str, push_dir: str, attempts: int = 20) -> str:
    """Renames the staged model to the next free version name; returns the version."""
    for _ in range(attempts):
        version = _next_version(push_dir, time.time())
        final = _join(push_dir, version)
        if _is_local(push_dir):
            try:
                os.rename(staged, final)  # atomic; refuses a non-empty existing directory
                return version
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        elif not tf.io.gfile.exists(final):
            _move_files(staged, final)
            return version
        time.sleep(0.05)  # another push took this version name
    raise RuntimeError(f"could not find a free version name under {push_dir} after {attempts} attempts")


def push(model_dir: str, push_dir: str, stale_after_s: float = DEFAULT_STALE_AFTER_S,
         source_uri: str = "") -> PushResult:
    """Pushes the SavedModel in ``model_dir`` to ``<push_dir>/<version>/``, or reuses the
    version that already holds the same fingerprint."""
    if not tf.io.gfile.exists(_join(model_dir, SAVED_MODEL)):
        raise FileNotFoundError(f"no {SAVED_MODEL} in {model_dir!r}: not an exported SavedModel")
    tf.io.gfile.makedirs(push_dir)
    clean_stale(push_dir, stale_after_s)
    files = listing(model_dir)
    fingerprint = model_fingerprint(model_dir)
    existing = find_version(push_dir, fingerprint, files)
    if existing is not None:
        log.info("model %s is already pushed as version %s: nothing pushed", fingerprint[:19], existing)
        return PushResult(existing, _join(push_dir, existing), fingerprint, True)
    staged = staging_dir(push_dir)
    try:
        copy_model(model_dir, staged)
        meta = {"fingerprint": fingerprint, "source": source_uri or model_dir,
                "files": len(files), "bytes": sum(size for _, size in files),
                "pushed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        with tf.io.gfile.GFile(_join(staged, META_FILE), "w") as f:
            f.write(json.dumps(meta, indent=1, sort_keys=True))
        version = publish(staged, push_dir)
    except BaseException:
        _remove(staged)
        raise
    log.info("model %s pushed as version %s", fingerprint[:19], version)
    return PushResult(version, _join(push_dir, version), fingerprint, False)
