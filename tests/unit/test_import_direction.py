"""Imports go one way: ``serving`` imports ``feedrank``, ``feedrank`` never imports ``serving``.

``feedrank`` runs in the pipeline's environment and in the serving one; ``serving`` needs
kserve and its servers.  Statically, every module under ``feedrank/`` is parsed and any
``import serving...``, ``from serving... import`` or ``importlib.import_module("serving...")``
/ ``__import__("serving...")`` is reported with its file and line.  Dynamically, a fresh
interpreter imports a representative set of ``feedrank`` modules (those next to the
serving code: the A/B test, the online simulator, the event stream, tracking) and
``serving`` must not be in its ``sys.modules`` afterwards.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from typing import Iterator, List, Optional, Tuple

from tests.helpers.config import ROOT

FORBIDDEN = "serving"
FEEDRANK = os.path.join(ROOT, "feedrank")
# Calls that import the module named by their first argument.
DYNAMIC_IMPORTS = ("import_module", "__import__", "find_spec")
REPRESENTATIVE = (
    "feedrank.ab", "feedrank.ab.assign", "feedrank.ab.cli", "feedrank.ab.decision", "feedrank.ab.load",
    "feedrank.ab.pool", "feedrank.ab.report", "feedrank.ab.simulate", "feedrank.ab.stats",
    "feedrank.events.stream", "feedrank.events.contract", "feedrank.events.simulator.online",
    "feedrank.events.simulator.online_io", "feedrank.events.simulator.online_world",
    "feedrank.features", "feedrank.config", "feedrank.ports", "feedrank.tracking.server",
    "feedrank.deploy.render", "feedrank.sessions.sessionize",
)


def _is_forbidden(module: Optional[str]) -> bool:
    return bool(module) and (module == FORBIDDEN or module.startswith(FORBIDDEN + "."))


def _call_name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def forbidden_imports(source: str, filename: str = "<source>") -> List[Tuple[int, str]]:
    """``(line, what)`` for every import of ``serving`` in ``source`` (static or by a string)."""
    found: List[Tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if _is_forbidden(a.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and _is_forbidden(node.module):
                found.append((node.lineno, f"from {node.module} import ..."))
        elif isinstance(node, ast.Call) and _call_name(node.func) in DYNAMIC_IMPORTS and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and _is_forbidden(arg.value):
                found.append((node.lineno, f"{_call_name(node.func)}({arg.value!r})"))
    return sorted(found)


def feedrank_modules() -> Iterator[str]:
    """Every ``.py`` file under ``feedrank/``."""
    for dirpath, dirnames, filenames in os.walk(FEEDRANK):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def test_the_checker_sees_every_kind_of_import():
    source = textwrap.dedent("""
        import os, serving.common.procs
        import serving
        from serving.features import stream
        from serving import ab
        import importlib
        importlib.import_module("serving.transformer.assign")
        __import__("serving")
        importlib.util.find_spec("serving.ab")
        from . import serving_graph                 # a sibling module, not the package
        import servingx                             # another top-level name
        importlib.import_module("feedrank.serving")
        command = ["python", "-m", "serving.transformer"]   # a string, not an import
    """)
    assert [line for line, _ in forbidden_imports(source)] == [2, 3, 4, 5, 7, 8, 9]


def test_feedrank_never_imports_serving():
    offenders = []
    for path in feedrank_modules():
        with open(path, encoding="utf-8") as f:
            source = f.read()
        rel = os.path.relpath(path, ROOT)
        offenders += [f"{rel}:{line}: {what}" for line, what in forbidden_imports(source, rel)]
    assert len(list(feedrank_modules())) > 50, "feedrank/ was not found"
    assert not offenders, ("feedrank must not import serving (move what both need into feedrank):\n"
                           + "\n".join(offenders))


def test_importing_feedrank_loads_no_serving_module():
    code = textwrap.dedent(f"""
        import importlib, sys
        for name in {list(REPRESENTATIVE)!r}:
            importlib.import_module(name)
        print("\\n".join(sorted(m for m in sys.modules if m == "serving" or m.startswith("serving."))))
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    # From the repository root, where `serving` would import if anything asked for it.
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = out.stdout.split()
    assert not loaded, f"importing {', '.join(REPRESENTATIVE)} loaded {', '.join(loaded)}"
