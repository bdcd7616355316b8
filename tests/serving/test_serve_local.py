"""``make serve``'s launcher (serving.stack): which pushed model it
serves, the one-line errors when there is no model or no redis-server, the
A/B flags it passes on, and ``--sink-dir`` logging what a real stack serves."""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest

from serving import stack
from serving.common import procs
from tests.helpers import examplegen as H
from tests.helpers.redis_stack import FeaturePredictor


def _version(store, model: str, version: str, complete: bool = True) -> str:
    path = os.path.join(store, model, version)
    os.makedirs(path)
    if complete:
        open(os.path.join(path, "saved_model.pb"), "wb").close()
    return path


def test_newest_model_dir_picks_the_newest_complete_version_across_models(tmp_path):
    _version(tmp_path, "din", "1700000000")
    _version(tmp_path, "dien", "1700000500")
    _version(tmp_path, "din", "1800000000", complete=False)  # a push still being written
    os.makedirs(tmp_path / "din" / "tmp-export")
    (tmp_path / "README").write_text("not a model")
    assert stack.newest_model_dir(str(tmp_path)) == os.path.join(str(tmp_path), "dien")
    _version(tmp_path, "din", "1700000900")
    assert stack.newest_model_dir(str(tmp_path)) == os.path.join(str(tmp_path), "din")


def test_predictor_source_for_a_directory_polls_it(tmp_path):
    _version(tmp_path, "din", "1700000000")
    assert stack.predictor_source("newest", str(tmp_path), "") == [
        "--model-dir", os.path.join(str(tmp_path), "din"), "--poll-s", "10"]
    assert stack.predictor_source("models:/feedrank-demo-ranker@champion", str(tmp_path), "http://127.0.0.1:1") == [
        "--model-uri", "models:/feedrank-demo-ranker@champion", "--tracking-uri", "http://127.0.0.1:1"]


def test_no_pushed_model_is_one_line_naming_make_demo(tmp_path, capsys):
    rc = stack.main(["--log", str(tmp_path), "--model", "newest", "--model-store", str(tmp_path / "store"),
                     "--workdir", str(tmp_path / "w"), "--redis-port", str(procs.free_port())])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: no pushed model under") and "make demo" in err and "\n" not in err


def test_missing_redis_server_prints_the_install_hint(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server to find
    rc = stack.main(["--log", str(tmp_path), "--workdir", str(tmp_path / "w"),
                     "--redis-port", str(procs.free_port())])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err == f"error: {stack.INSTALL_HINT}"


def test_the_transformer_reads_the_declared_columns_of_the_served_version(tmp_path):
    _version(tmp_path, "din", "1700000000")
    newest = _version(tmp_path, "din", "1700000500")
    model_dir = os.path.join(str(tmp_path), "din")
    assert stack.declaration_for("newest", ["--model-dir", model_dir, "--poll-s", "10"], str(tmp_path)) == newest
    assert stack.declaration_for(newest, ["--model-dir", newest, "--poll-s", "10"], str(tmp_path)) == newest
    args = stack.argparse.Namespace(model_name="feedrank", predictor_url="http://127.0.0.1:8080",
                                    transformer_port=8081, challenger_share=0.5, ab_salt="", declaration=newest,
                                    redis_timeout_ms=200.0)
    assert stack.transformer_args(args, "redis://h:1/0", "")[-4:] == ["--model", newest, "--redis-timeout-ms", "200.0"]


def test_transformer_args_without_ab_flags_are_unchanged_and_with_a_challenger_name_it():
    args = stack.argparse.Namespace(model_name="feedrank", predictor_url="http://127.0.0.1:8080",
                                    transformer_port=8081, challenger_share=0.3, ab_salt="")
    base = ["--model-name", "feedrank", "--predictor-url", "http://127.0.0.1:8080",
            "--redis", "redis://127.0.0.1:6379/0", "--http-port", "8081"]
    assert stack.transformer_args(args, "redis://127.0.0.1:6379/0", "") == base
    args.ab_salt = "exp2"
    assert stack.transformer_args(args, "redis://127.0.0.1:6379/0", "http://127.0.0.1:8082") == base + [
        "--challenger-url", "http://127.0.0.1:8082", "--challenger-share", "0.3", "--ab-salt", "exp2"]
    assert stack.sink_command("redis://h:1/0", "runs/ab")[1:] == [
        "-m", "serving.features.sink", "--redis", "redis://h:1/0", "--events-dir", os.path.join("runs/ab", "events"),
        "--requests-dir", os.path.join("runs/ab", "requests")]


def test_missing_challenger_model_and_bad_share_are_one_line_errors(tmp_path, capsys):
    rc = stack.main(["--log", str(tmp_path), "--predictor-url", "http://127.0.0.1:1", "--challenger-model",
                     str(tmp_path / "nope"), "--workdir", str(tmp_path / "w"), "--redis-port", str(procs.free_port())])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == f"error: model directory {tmp_path / 'nope'} does not exist"
    for bad in (["--challenger-share", "1.5"], ["--challenger-model", "newest"]):
        with pytest.raises(SystemExit) as e:
            stack.main(["--log", str(tmp_path), *bad])
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--challenger-share: must be in [0, 1], got 1.5" in err and "--challenger-model needs a champion" in err


@pytest.mark.usefixtures("serving_venv")
def test_sink_dir_logs_what_the_stack_serves(tmp_path):
    log_dir = H.make_log(str(tmp_path / "log"))
    predictor = FeaturePredictor("feedrank", version="5")
    port, w = procs.free_port(), tmp_path / "w"
    proc = subprocess.Popen([sys.executable, "-m", "serving.stack", "--log", log_dir,
                             "--predictor-url", predictor.url, "--redis-port", str(procs.free_port()),
                             "--transformer-port", str(port), "--workdir", str(w), "--sink-dir", str(tmp_path / "ab")],
                            cwd=procs.REPO_ROOT, env=procs.serving_env(), stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "stack.log", "wb"))
    try:
        url = f"http://127.0.0.1:{port}"
        procs.wait_ready(f"{url}/v1/models/feedrank", 180, proc, str(tmp_path / "stack.log"))
        body = json.dumps({"user_id": "u1", "candidates": ["a", "b", "c"], "show": 2}).encode()
        req = urllib.request.Request(f"{url}/v1/models/feedrank:predict", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            out = json.loads(r.read())
        assert out["arm"] == "champion" and out["shown"] == 2
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not glob.glob(str(tmp_path / "ab" / "requests" / "part-*.parquet")):
            time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGINT)           # Ctrl-C: the launcher stops what it started
        proc.wait(60)
        predictor.stop()
    events = pd.concat(pd.read_parquet(p) for p in glob.glob(str(tmp_path / "ab" / "events" / "part-*.parquet")))
    assert sorted(events.event_id) == [f"{out['request_id']}:0", f"{out['request_id']}:1"]
    assert list(events.arm) == ["champion"] * 2 and list(events.model_version) == ["5"] * 2
    assert proc.returncode == 0
