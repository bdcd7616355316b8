"""The run summary from a hand-made run record (`mlmd_reader.Run`, artifacts on disk): a run
that was not blessed names its candidate model's path, in the summary and the printed lines."""
from __future__ import annotations

import json
import os

from feedrank.config import Config
from feedrank.evaluate import summary as S
from feedrank.evaluate.mlmd_reader import Artifact, Run


def _session_run(tmp_path, blessed: bool) -> Run:
    """A session run: Trainer -> SessionEvaluator (session_metrics.json) -> Pusher."""
    model_uri = str(tmp_path / "Trainer" / "model" / "7")
    os.makedirs(os.path.join(model_uri, "Format-Serving"))
    eval_uri = tmp_path / "SessionEvaluator" / "evaluation" / "8"
    os.makedirs(eval_uri)
    reason = "top10 0.4100 >= floor 0.3000" if blessed else "top10 0.2000 < floor 0.3000"
    with open(eval_uri / "session_metrics.json", "w") as f:
        json.dump({"blessed": blessed, "reason": reason, "baseline_name": None,
                   "candidate": {"top1": 0.1, "top10": 0.2, "sessions": 3, "prefixes": 9}, "baseline": None}, f)
    pushed = {"pushed": int(blessed), "pushed_destination": "model_store/drnn/1750000000" if blessed else ""}
    components = {name: {"state": "COMPLETE", "seconds": 1.0, "start": 0.0, "end": 1.0}
                  for name in ("Trainer", "SessionEvaluator", "Pusher")}
    outputs = {"Trainer": {"model": [Artifact(model_uri, {})]},
               "SessionEvaluator": {"evaluation": [Artifact(str(eval_uri), {})],
                                    "blessing": [Artifact(str(tmp_path / "blessing"), {"blessed": int(blessed)})]},
               "Pusher": {"pushed_model": [Artifact(str(tmp_path / "pushed"), pushed)]}}
    return Run("run-42", components, outputs)


def test_a_run_that_is_not_blessed_names_its_candidate_model(tmp_path, capsys):
    run = _session_run(tmp_path, blessed=False)
    got = S.run_summary(Config(), run)
    candidate = os.path.join(str(tmp_path), "Trainer", "model", "7", "Format-Serving")
    assert got["status"] == "succeeded" and got["blessing"]["blessed"] is False
    assert got["candidate_model"] == candidate
    assert got["push"] == {"pushed": False, "path": None}
    S.print_summary(got, "runs/run-42/summary.json")
    lines = capsys.readouterr().out.splitlines()
    assert f"  not blessed; candidate model: {candidate}" in lines
    assert sum("candidate model" in line for line in lines) == 1


def test_a_blessed_run_names_the_pushed_model_and_no_candidate(tmp_path, capsys):
    got = S.run_summary(Config(), _session_run(tmp_path, blessed=True))
    assert got["blessing"]["blessed"] is True and "candidate_model" not in got
    assert got["push"] == {"pushed": True, "path": "model_store/drnn/1750000000"}
    S.print_summary(got, "runs/run-42/summary.json")
    out = capsys.readouterr().out
    assert "  pushed: model_store/drnn/1750000000" in out.splitlines() and "candidate model" not in out


def test_no_run_has_no_candidate():
    got = S.run_summary(Config(), None, failure={"error": "ValueError", "message": "bad config"})
    assert got["status"] == "failed" and got["run_id"] is None and "candidate_model" not in got
