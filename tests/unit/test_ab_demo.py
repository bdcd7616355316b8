"""`make ab-demo`'s driver (serving/ab/demo.py): its refusals before any work starts.

The whole loop (two pipeline runs, the serving stack, the online simulator, the report and
the decision) is exercised piece by piece by test_online_sim (the closed loop against the
real stack), test_ab_decision (report, promote --from-ab, rollback against a real MLflow
server) and test_gbdt_family; the demo only chains their documented commands.
"""
from __future__ import annotations

import os

import yaml

from serving.ab import demo
from tests.helpers.config import ROOT


def test_an_existing_run_directory_is_refused_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "ab"
    out.mkdir()
    rc = demo.main(["--out", str(out), "--skip-training"])
    assert rc == 2
    assert "exists; an A/B run directory holds one test" in capsys.readouterr().err


def test_configs_registering_different_models_are_refused(tmp_path, capsys):
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"base": os.path.join(ROOT, "configs", "gbdt.yaml"),
                                     "mlflow": {"registered_model": "another-model"}}))
    rc = demo.main(["--champion-config", str(other), "--out", str(tmp_path / "ab"), "--skip-training"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "register different models" in err and "another-model" in err
    assert not (tmp_path / "ab").exists()


def test_the_demo_configs_register_one_model():
    from feedrank.config import load
    from feedrank.tracking import registered_model_name

    champion = load(os.path.join(ROOT, "configs", "gbdt.yaml"))
    challenger = load(os.path.join(ROOT, "configs", "ab_challenger.yaml"))
    assert (champion.trainer.model, challenger.trainer.model) == ("gbdt", "din")
    assert registered_model_name(champion) == registered_model_name(challenger)
    assert challenger.evaluator.max_auc_regression > champion.evaluator.max_auc_regression


def test_the_demo_ends_with_the_next_commands():
    refused = demo.next_commands("configs/ab_challenger.yaml", promoted=False, previous="3", model="m")
    assert refused[0].split("#")[0].split() == ["python", "pipeline.py", "promote", "--alias", "challenger",
                                                "--config", "configs/ab_challenger.yaml"]
    promoted = demo.next_commands("configs/ab_challenger.yaml", promoted=True, previous="3", model="m")
    assert any(line.split("#")[0].split() == ["python", "pipeline.py", "rollback", "--previous", "--local",
                                              "--config", "configs/ab_challenger.yaml"] and "version 3" in line
               for line in promoted)
    assert not any("rollback" in line for line in demo.next_commands("c.yaml", True, None, "m"))
    # every command line is one the CLI accepts
    from feedrank.cli import build_parser

    for line in refused + promoted:
        words = line.split("#")[0].split()
        if words[:2] == ["python", "pipeline.py"]:
            build_parser().parse_args(words[2:])
