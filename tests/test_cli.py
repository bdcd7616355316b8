"""The CLI: help works, and bad input gives one clear line, never a stack trace."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
