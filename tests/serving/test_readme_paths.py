"""The README's paths in the order a user may take them on one checkout:
``make demo`` -> ``pipeline.py promote`` -> ``make ab-demo`` -> ``make ab-demo``.

A tiny simulated log, a real `mlflow server`, the real pipeline (in process for the demo,
as subprocesses inside the A/B demo), the real serving stack and the online simulator
(`serving.ab.demo`, what ``make ab-demo`` runs).  The evaluator's gates are opened
wide so that every candidate is blessed: this checks that the paths chain, not what the
models learn.

The order matters: the demo registers the DIN first; the first A/B demo trains and
promotes a GBDT (a newer version), then re-runs the DIN, whose every component comes
from the cache and whose fingerprint is the demo's version.  That version must become
the challenger again (not the newest version, the GBDT champion), and nothing is
registered twice; the second A/B demo then finds its champion and its challenger as
they are.
"""
from __future__ import annotations

import os

import yaml

import pipeline
from feedrank.tracking import candidate as cand_lib
from feedrank.tracking import registry
from serving.ab import demo
from tests.helpers.config import ROOT

MODEL = "paths-ranker"


def _configs(tmp_path, mlflow_url):
    raw = yaml.safe_load(open(os.path.join(ROOT, "configs", "tiny.yaml")))
    raw.update(pipeline_name="feedrank-paths", input_base=str(tmp_path / "data"), run_root=str(tmp_path / "runs"),
               push_root=str(tmp_path / "model_store"))
    raw["evaluator"].update(auc_floor=0.0, max_auc_regression=1.0, calibration_band=[0.01, 100.0])
    raw["mlflow"] = {"tracking_uri": mlflow_url, "experiment": "feedrank-paths", "registered_model": MODEL}
    raw["ab"] = {"show": 5, "max_p99_ms": 5000.0}
    din = tmp_path / "din.yaml"
    din.write_text(yaml.safe_dump(raw))
    gbdt = tmp_path / "gbdt.yaml"
    gbdt.write_text(yaml.safe_dump({**raw, "trainer": {"model": "gbdt", "num_trees": 40, "max_depth": 4,
                                                        "min_examples": 5}}))
    return str(din), str(gbdt)


def _ab_demo(din: str, gbdt: str, out: str) -> int:
    return demo.main(["--champion-config", gbdt, "--challenger-config", din, "--out", out,
                      "--users", "40", "--requests", "400"])


def test_demo_promote_ab_demo_ab_demo_each_succeed(tmp_path, mlflow_url, capsys):
    din, gbdt = _configs(tmp_path, mlflow_url)
    client = cand_lib.client_for(mlflow_url)
    assert pipeline.main(["run", "--config", din, "--simulate-if-missing"]) == 0          # make demo
    assert registry.aliases(client, MODEL) == {"challenger": "1"}
    assert pipeline.main(["promote", "--config", din, "--alias", "challenger"]) == 0      # promote
    assert registry.aliases(client, MODEL) == {"challenger": "1", "champion": "1"}

    assert _ab_demo(din, gbdt, str(tmp_path / "ab1")) == 0                                # make ab-demo
    out = capsys.readouterr().out
    assert "3. serve champion and challenger" in out and "\nnext:\n" in out
    versions = {v.version: v.tags.get("model_family") for v in client.search_model_versions(f"name = '{MODEL}'")}
    assert versions == {"1": "din", "2": "gbdt"}                      # the cached DIN is not registered again
    first = registry.aliases(client, MODEL)
    assert os.path.exists(tmp_path / "ab1" / "ab_report.txt")

    assert _ab_demo(din, gbdt, str(tmp_path / "ab2")) == 0                                # make ab-demo again
    assert "\nnext:\n" in capsys.readouterr().out
    assert {v.version for v in client.search_model_versions(f"name = '{MODEL}'")} == {"1", "2"}
    second = registry.aliases(client, MODEL)
    # the DIN is the challenger each time; the champion is the GBDT unless an A/B test promoted the DIN
    assert first["challenger"] == second["challenger"] == "1"
    assert first["champion"] in ("1", "2") and second["champion"] in ("1", "2")
