"""The CLI: help works, bad input gives one clear line, never a stack trace; no native
start-up noise without -v; its own flags never reach absl; heartbeat lines for long
components; the library never imports the pipeline script."""
import ast
import importlib.util
import logging
import os
import subprocess
import sys
import time

import pytest

from feedrank.runners.console import Heartbeat, format_elapsed
from tests.helpers.config import ROOT, TINY_CONFIG


def _cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "pipeline.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_help_lists_the_commands():
    out = _cli("--help")
    assert out.returncode == 0
    for command in ("run", "compile", "submit", "schedule", "promote", "compare"):
        assert command in out.stdout
    assert "--config" in _cli("run", "--help").stdout


def test_missing_config_and_missing_input_are_one_line_errors(tmp_path):
    out = _cli("run", "--config", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "does not exist" in out.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("examples: {negative_sampling_rate: 0}\n")
    out = _cli("run", "--config", str(bad))
    assert out.returncode == 2 and "negative_sampling_rate" in out.stderr and "Traceback" not in out.stderr
    typo = tmp_path / "typo.yaml"
    typo.write_text("examples: {label_windw_s: 10}\n")
    out = _cli("run", "--config", str(typo))
    assert out.returncode == 2 and "label_windw_s" in out.stderr
    out = _cli("run", "--config", os.path.join(ROOT, "configs", "tiny.yaml"), "--input", str(tmp_path / "absent"))
    assert out.returncode == 2 and "does not exist" in out.stderr and "Traceback" not in out.stderr


# --- the package structure: the library never imports the pipeline script ----------------------

def _imported_modules(path):
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def test_library_never_imports_the_pipeline_script():
    offenders = []
    for package in ("feedrank", "components"):
        for dirpath, _, filenames in os.walk(os.path.join(ROOT, package)):
            for name in filenames:
                if name.endswith(".py"):
                    path = os.path.join(dirpath, name)
                    if any(m == "pipeline" or m.startswith("pipeline.") for m in _imported_modules(path)):
                        offenders.append(os.path.relpath(path, ROOT))
    assert offenders == []
    # and at run time: the runners load without it (a fresh interpreter, outside the repository)
    code = ("import sys; import feedrank.cli, feedrank.runners.cli, feedrank.runners.kubeflow, feedrank.runners.local, "
            "feedrank.runners.session_pipeline, feedrank.runners.stages; print('pipeline' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# --- TensorFlow's native start-up noise ----------------------------------------------------------

NOISE = ("Unable to register", "oneDNN", "absl::InitializeLog", "cuda_")


def test_native_logs_are_quiet_unless_verbose():
    code = ("import os, sys; from feedrank.runners.console import quiet_native_logs; "
            "quiet_native_logs(sys.argv[1] == 'verbose'); print(os.environ.get('TF_CPP_MIN_LOG_LEVEL')); "
            "import tensorflow")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY")}
    quiet = subprocess.run([sys.executable, "-c", code, "quiet"], capture_output=True, text=True, env=env,
                           timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "3"
    assert not [line for line in quiet.stderr.splitlines() if any(n in line for n in NOISE)], quiet.stderr
    verbose = subprocess.run([sys.executable, "-c", code, "verbose"], capture_output=True, text=True, env=env,
                             timeout=300)
    assert verbose.returncode == 0 and verbose.stdout.strip() == "None"  # TensorFlow's own default


# --- heartbeat lines for long components ----------------------------------------------------------

def test_tfx_still_logs_the_component_lines_the_heartbeat_reads():
    spec = importlib.util.find_spec("tfx")
    path = os.path.join(spec.submodule_search_locations[0], "orchestration", "local", "local_dag_runner.py")
    with open(path) as f:
        source = f.read()
    assert "'Component %s is running.'" in source and "'Component %s is finished.'" in source


def test_heartbeat_every_interval_with_elapsed_time(caplog):
    now = [100.0]
    beat = Heartbeat(interval=30, clock=lambda: now[0])
    absl = logging.getLogger("absl")
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="absl")  # a SavedModel save in an earlier test may lower it
    absl.addHandler(beat)
    try:
        absl.info("Component %s is running.", "Transform")

        def lines_at(t):
            now[0] = 100.0 + t
            caplog.clear()
            beat.beat()
            return [r.getMessage() for r in caplog.records if r.name == "feedrank.runners.console"]

        assert lines_at(29.9) == []
        assert lines_at(30.0) == ["Transform still running (30s elapsed)"]
        assert lines_at(45.0) == []
        assert lines_at(61.0) == ["Transform still running (1m01s elapsed)"]
        assert lines_at(155.0) == ["Transform still running (2m35s elapsed)"]  # missed beats: one line
        assert lines_at(179.0) == []
        assert lines_at(180.0) == ["Transform still running (3m00s elapsed)"]
        absl.info("Component %s is finished.", "Transform")
        assert lines_at(400.0) == []
        absl.info("Component %s is running.", "Evaluator")
        assert lines_at(429.0) == [] and lines_at(430.0) == ["Evaluator still running (30s elapsed)"]
        # one component at a time: a start without the previous finish line ends its beats
        absl.info("Component %s is running.", "Pusher")
        assert lines_at(460.0) == ["Pusher still running (30s elapsed)"]
    finally:
        absl.removeHandler(beat)


def test_heartbeat_thread_beats_and_stops(caplog):
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="absl")  # a SavedModel save in an earlier test may lower it
    absl = logging.getLogger("absl")
    with Heartbeat(interval=0.2) as beat:
        assert beat in absl.handlers
        absl.info("Component %s is running.", "StatisticsGen")
        time.sleep(0.75)
        absl.info("Component %s is finished.", "StatisticsGen")
        beats = [r.getMessage() for r in caplog.records if "still running" in r.getMessage()]
        time.sleep(0.4)
    assert len(beats) >= 2 and all(b.startswith("StatisticsGen still running (") for b in beats), beats
    assert len([r for r in caplog.records if "still running" in r.getMessage()]) == len(beats)  # none after
    assert beat not in absl.handlers


def test_format_elapsed():
    assert [format_elapsed(s) for s in (0, 42.9, 60, 95.2, 3725)] == ["0s", "42s", "1m00s", "1m35s", "62m05s"]


# --- the CLI's own flags never reach absl (TFX's executors parse sys.argv) ------------------------

def test_run_verbose_flag_never_reaches_absl(tmp_path, monkeypatch):
    """``run -v``: absl reads ``-v`` as its --verbosity, and TFX's Beam executors parse sys.argv
    with absl; the pipeline runs with sys.argv holding only the program's name."""
    from absl import flags
    from absl import logging as absl_logging  # noqa: F401 - defines -v (--verbosity)

    import pipeline
    from feedrank import cli
    from feedrank.runners import local

    def absl_parse(argv):  # what TFX's BaseBeamExecutor does, on a copy of absl's flags
        copy = flags.FlagValues()
        copy.append_flag_values(flags.FLAGS)
        copy(argv, known_only=True)

    seen = {}

    def fake_run_local(cfg, build):
        seen["argv"], seen["build"] = list(sys.argv), build
        absl_parse(sys.argv + list(cfg.beam_pipeline_args))
        return {"status": "succeeded"}

    argv = ["pipeline.py", "run", "--config", TINY_CONFIG, "--input", str(tmp_path), "-v"]
    assert cli.build_parser().parse_args(argv[1:]).verbose
    with pytest.raises(flags.Error, match="-v"):
        absl_parse(argv)  # the program's own argv would break absl
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(local, "run_local", fake_run_local)
    monkeypatch.setattr(cli, "configure_logging", lambda verbose: None)
    assert pipeline.main() == 0
    assert seen == {"argv": ["pipeline.py"], "build": pipeline.create_pipeline}
    assert sys.argv == argv
