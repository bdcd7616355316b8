"""Content fingerprints that make TFX caching follow the data and the code.

The example generator reads a directory, not an upstream artifact, so TFX
cannot see when its files change; its cache key therefore includes a hash of
the files' contents.  Transform and the Trainer import code by name, so their
cache keys include a hash of the project's Python sources.
"""
from __future__ import annotations

import hashlib
import os

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _hash_tree(root: str, suffixes: tuple[str, ...] | None = None) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if suffixes and not name.endswith(suffixes):
                continue
            path = os.path.join(dirpath, name)
            h.update(os.path.relpath(path, root).encode() + b"\0")
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def data_fingerprint(input_base: str) -> str:
    """Hash of every file's name and bytes under the event-log directory."""
    return _hash_tree(input_base)


def code_fingerprint() -> str:
    """Hash of the Python sources of `feedrank/` and `components/`."""
    return _hash_tree(os.path.join(_ROOT, "feedrank"), (".py",))[:8] + \
        _hash_tree(os.path.join(_ROOT, "components"), (".py",))[:8]
