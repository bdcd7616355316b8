"""``make serve``'s launcher (serving.features.local): which pushed model it
serves, and the one-line errors when there is no model or no redis-server."""
from __future__ import annotations

import os

from serving.common import procs
from serving.features import local


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
    assert local.newest_model_dir(str(tmp_path)) == os.path.join(str(tmp_path), "dien")
    _version(tmp_path, "din", "1700000900")
    assert local.newest_model_dir(str(tmp_path)) == os.path.join(str(tmp_path), "din")


def test_predictor_source_for_a_directory_polls_it(tmp_path):
    _version(tmp_path, "din", "1700000000")
    assert local.predictor_source("newest", str(tmp_path), "") == [
        "--model-dir", os.path.join(str(tmp_path), "din"), "--poll-s", "10"]
    assert local.predictor_source("models:/feedrank-demo-din@champion", str(tmp_path), "http://127.0.0.1:1") == [
        "--model-uri", "models:/feedrank-demo-din@champion", "--tracking-uri", "http://127.0.0.1:1"]


def test_no_pushed_model_is_one_line_naming_make_demo(tmp_path, capsys):
    rc = local.main(["--log", str(tmp_path), "--model", "newest", "--model-store", str(tmp_path / "store"),
                     "--workdir", str(tmp_path / "w"), "--redis-port", str(procs.free_port())])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: no pushed model under") and "make demo" in err and "\n" not in err


def test_missing_redis_server_prints_the_install_hint(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server to find
    rc = local.main(["--log", str(tmp_path), "--workdir", str(tmp_path / "w"),
                     "--redis-port", str(procs.free_port())])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err == f"error: {local.INSTALL_HINT}"
