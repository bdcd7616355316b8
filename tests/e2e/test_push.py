"""The Pusher and its push store: fingerprints, reuse, atomic versions, leftovers of killed pushes.

Models are real SavedModels (a tiny tf.Module).  The Pusher runs as a TFX
component under LocalDagRunner, its inputs imported by `Importer` nodes, and
as its executor on hand-made artifacts for the blessing cases.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import tensorflow as tf
from tfx.types import standard_artifacts

from components.baseline.component import latest_version
from components.pusher.executor import Executor
from feedrank.push import store
from feedrank.push.fingerprint import META_FILE, model_fingerprint
from tests.helpers.config import ROOT


def _save_model(path, scale: float) -> str:
    """A real SavedModel whose variable (and so whose files) depend on ``scale``."""
    module = tf.Module()
    module.w = tf.Variable(scale)
    module.f = tf.function(lambda x: x * module.w, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(path))
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two Trainer-like Model artifacts (``<uri>/Format-Serving``) with different weights."""
    root = tmp_path_factory.mktemp("models")
    return {k: _save_model(root / k / "Format-Serving", s) for k, s in (("a", 1.0), ("b", 2.0))}


def _artifacts(tmp_path, serving_dir, blessed=True, current_model=None):
    model = standard_artifacts.Model()
    model.uri = os.path.dirname(serving_dir)
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / "blessing")
    os.makedirs(blessing.uri, exist_ok=True)
    blessing.set_int_custom_property("blessed", int(blessed))
    blessing.set_string_custom_property("current_model", current_model or model.uri)
    if blessed:
        open(os.path.join(blessing.uri, "BLESSED"), "w").close()
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed")
    return model, blessing, pushed


def _run_executor(model, blessing, pushed, push_dir):
    inputs = {"model": [model], "model_blessing": [blessing] if blessing is not None else []}
    Executor().Do(inputs, {"pushed_model": [pushed]}, {"push_dir": push_dir, "stale_after_s": 900})
    return pushed


def _versions(push_dir):
    return sorted(e for e in os.listdir(push_dir) if not e.startswith("."))


def test_fingerprint_follows_the_content_not_the_place(models, tmp_path):
    a = model_fingerprint(models["a"])
    assert a.startswith("sha256:") and a != model_fingerprint(models["b"])
    copy = tmp_path / "copy"
    store.copy_model(models["a"], str(copy))
    (copy / META_FILE).write_text("{}")  # the store's own file is not part of the model
    assert model_fingerprint(str(copy)) == a
    with open(copy / "variables" / "variables.index", "ab") as f:
        f.write(b"x")
    assert model_fingerprint(str(copy)) != a
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model_fingerprint(str(tmp_path / "missing"))


def test_same_model_is_pushed_once_and_a_new_one_is_newest(models, tmp_path):
    push_dir = str(tmp_path / "store")
    first = store.push(models["a"], push_dir)
    again = store.push(models["a"], push_dir)
    assert not first.reused and again.reused
    assert again.version == first.version and _versions(push_dir) == [first.version]
    meta = json.load(open(os.path.join(first.path, META_FILE)))
    assert meta["fingerprint"] == first.fingerprint == model_fingerprint(first.path)
    other = store.push(models["b"], push_dir)
    assert not other.reused and int(other.version) > int(first.version)
    assert latest_version(push_dir) == other.version
    assert store.push(models["a"], push_dir).version == first.version  # still found, not re-pushed
    assert len(_versions(push_dir)) == 2 and not [e for e in os.listdir(push_dir) if e.startswith(".")]


def test_a_version_pushed_without_metadata_is_recognised(models, tmp_path):
    push_dir = tmp_path / "store"
    store.copy_model(models["a"], str(push_dir / "1700000000"))  # as another pusher left it
    result = store.push(models["a"], str(push_dir))
    assert result.reused and result.version == "1700000000"


def test_a_killed_push_leaves_no_version_and_the_next_push_cleans_up(models, tmp_path):
    """A real process stages a push and is SIGKILLed before its rename."""
    push_dir = str(tmp_path / "store")
    ready = tmp_path / "staged"
    script = textwrap.dedent(f"""
        import os, time
        from feedrank.push import store
        os.makedirs({push_dir!r}, exist_ok=True)
        staged = store.staging_dir({push_dir!r})
        store.copy_model({models['a']!r}, staged)
        open({str(ready)!r}, "w").write(staged)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready.exists(), "the pushing process never staged its copy"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    staged = ready.read_text()
    assert os.path.exists(os.path.join(staged, "saved_model.pb"))  # a full copy, never renamed
    assert _versions(push_dir) == [] and latest_version(push_dir) is None
    assert store.complete_versions(push_dir) == []
    result = store.push(models["a"], push_dir)
    assert not result.reused and not os.path.exists(staged)
    assert os.listdir(push_dir) == [result.version]


def test_clean_stale_keeps_live_pushes_and_removes_old_leftovers(models, tmp_path):
    push_dir = tmp_path / "store"
    now = time.time()
    live = store.staging_dir(str(push_dir), now)  # this process: alive
    other_recent = push_dir / f".push-otherhost-12-{int(now) - 60}-ab12"
    other_old = push_dir / f".push-otherhost-12-{int(now) - 3600}-cd34"
    incomplete_old = push_dir / str(int(now) - 3600)  # a numeric directory without saved_model.pb
    incomplete_new = push_dir / str(int(now) - 10)
    for d in (live, other_recent, other_old, incomplete_old / "variables", incomplete_new):
        os.makedirs(d)
    store.copy_model(models["b"], str(push_dir / "1700000000"))  # a complete version: never touched
    removed = store.clean_stale(str(push_dir), stale_after_s=900, now=now)
    assert sorted(removed) == sorted([other_old.name, incomplete_old.name])
    left = set(os.listdir(push_dir))
    assert {os.path.basename(live), other_recent.name, incomplete_new.name, "1700000000"} == left
    assert store.complete_versions(str(push_dir)) == ["1700000000"]


def test_the_pusher_refuses_without_a_blessing_of_this_model(models, tmp_path):
    push_dir = str(tmp_path / "store")
    cases = [("no blessing", None), ("did not bless", False), ("another model", "elsewhere")]
    for i, (why, how) in enumerate(cases):
        model, blessing, pushed = _artifacts(tmp_path / str(i), models["a"], blessed=how is not False,
                                             current_model=how if isinstance(how, str) else None)
        _run_executor(model, None if how is None else blessing, pushed, push_dir)
        assert pushed.get_int_custom_property("pushed") == 0, why
        assert why in pushed.get_string_custom_property("push_reason")
        assert not pushed.get_string_custom_property("pushed_destination")
    assert not os.path.exists(push_dir)


def test_the_pusher_pushes_once_then_reports_the_existing_version(models, tmp_path):
    push_dir = str(tmp_path / "store")
    outs = []
    for i in range(2):
        model, blessing, pushed = _artifacts(tmp_path / str(i), models["a"])
        outs.append(_run_executor(model, blessing, pushed, push_dir))
    first, second = outs
    for out in outs:
        assert out.get_int_custom_property("pushed") == 1
        assert os.path.exists(os.path.join(out.get_string_custom_property("pushed_destination"), "saved_model.pb"))
    assert [o.get_int_custom_property("push_reused") for o in outs] == [0, 1]
    assert second.get_string_custom_property("pushed_version") == first.get_string_custom_property("pushed_version")
    assert second.get_string_custom_property("model_fingerprint") == model_fingerprint(models["a"])
    assert json.load(open(os.path.join(second.uri, "push.json")))["reused"] is True
    assert len(_versions(push_dir)) == 1


def test_the_pusher_component_under_local_dag_runner(models, tmp_path):
    """The component in a real TFX pipeline: a blessed model pushed once across two runs, an
    unblessed one refused; the outputs read back from MLMD."""
    from tfx import v1 as tfx

    from components.pusher.component import Pusher
    from feedrank.evaluate.mlmd_reader import latest_run

    push_dir, db = str(tmp_path / "store"), str(tmp_path / "mlmd.sqlite")

    def run(serving_dir, blessed):
        model_uri = os.path.dirname(serving_dir)
        blessing_uri = tmp_path / f"blessing-{int(blessed)}"
        blessing_uri.mkdir(exist_ok=True)
        if blessed:
            (blessing_uri / "BLESSED").touch()
        model = tfx.dsl.Importer(source_uri=model_uri, artifact_type=standard_artifacts.Model,
                                 reimport=False).with_id("model")
        blessing = tfx.dsl.Importer(
            source_uri=str(blessing_uri), artifact_type=standard_artifacts.ModelBlessing, reimport=False,
            custom_properties={"blessed": int(blessed), "current_model": model_uri}).with_id("blessing")
        pusher = Pusher(model=model.outputs["result"], model_blessing=blessing.outputs["result"],
                        push_dir=push_dir)
        tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
            pipeline_name="push-test", pipeline_root=str(tmp_path / "root"),
            components=[model, blessing, pusher], enable_cache=True,
            metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(db)))
        return latest_run(db).artifact("Pusher", "pushed_model")

    first, second = run(models["a"], True), run(models["a"], True)
    assert first.get_int_custom_property("pushed") == second.get_int_custom_property("pushed") == 1
    assert (first.get_int_custom_property("push_reused"), second.get_int_custom_property("push_reused")) == (0, 1)
    assert second.get_string_custom_property("pushed_version") == first.get_string_custom_property("pushed_version")
    refused = run(models["b"], False)
    assert refused.get_int_custom_property("pushed") == 0
    assert _versions(push_dir) == [first.get_string_custom_property("pushed_version")]
