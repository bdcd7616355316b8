"""``benchmarks/serving.py`` end to end at a low rate, so the benchmark keeps working.

The benchmark runs as its documented command (``python -m benchmarks.serving``)
against the tiny exported model with declared columns of every kind
(`tests.serving.test_declared_serving`'s ``trained`` fixture) and its log:
``make serve``'s stack (``python -m serving.stack``: Redis seeded with the
declared columns, the updater, the predictor, the transformer), the naive
peer, and Redis killed under load (the stack brings it back).  The result
must have every field the README's tables are read from, no errors, and CPU
figures from the stack's processes; the README's tables render from it.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.helpers.config import ROOT
from tests.helpers.serving_env import require_redis
from tests.serving.test_declared_serving import trained  # noqa: F401 (fixture: the tiny model and its log)

pytestmark = pytest.mark.usefixtures("serving_venv")  # skipped, or failed under make test, without it
_spec = importlib.util.spec_from_file_location("serving_report", os.path.join(ROOT, "benchmarks", "serving_report.py"))
serving_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serving_report)
ROW_FIELDS = {"offered", "sent", "errors", "degraded", "achieved_rps", "p50_ms", "p99_ms", "cpu"}


def test_the_serving_benchmark_measures_make_serve_at_a_low_rate(trained, tmp_path):  # noqa: F811
    require_redis()
    log_dir, model_dir, _ = trained
    out = tmp_path / "serving.json"
    cmd = [sys.executable, "-m", "benchmarks.serving", "--model-dir", model_dir, "--log", log_dir,
           "--rates", "4", "--duration", "2", "--runs", "1", "--warmup-s", "0.5", "--drain-s", "0.3", "--idle-s", "0.5",
           "--users", "5", "--timeout", "10", "--slo-ms", "10000", "--faults", "redis_restart",
           "--disrupt-rate", "4", "--disrupt-duration", "2", "--workdir", str(tmp_path / "work"),
           "--out", str(out), "--plot", ""]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())

    assert set(result["targets"]) == {"predictor", "transformer", "naive"}
    assert {"predictor", "transformer", "redis", "updater", "launcher"} <= set(result["stack_processes"])
    assert result["stack_command"].startswith("python -m serving.stack --log ")
    seeded = result["declared_columns"]   # make serve seeds what the model declares
    assert seeded["items"] and seeded["users"], seeded
    assert seeded["posts_with_declared"] > 0 and seeded["users_with_declared"] > 0, seeded
    for target, res in result["targets"].items():
        (row,) = res["rates"]
        assert ROW_FIELDS <= set(row), (target, row)
        assert row["errors"] == 0 and row["sent"] == 8 and row["p99_ms"] > 0, (target, row)
        assert res["max_sustainable_rps"] in (0.0, 4.0), (target, res)
        assert row["cpu"]["server_ms_per_request"] > 0, (target, row["cpu"])
    roles = result["targets"]["transformer"]["rates"][0]["cpu"]["by_role_ms_per_request"]
    assert {"predictor", "transformer", "redis", "updater"} <= set(roles) and roles["predictor"] > 0, roles
    assert result["targets"]["transformer"]["rates"][0]["degraded_metric"] is not None
    assert {"predictor_vs_naive_rps_ratio", "transformer_vs_naive_rps_ratio"} <= set(result)

    restart = result["faults"]["redis_restart"]
    assert restart["disruption"]["signal"] == "SIGKILL" and restart["disruption"]["redis_back_s"] is not None
    assert sum(restart["errors"].values()) == 0 and restart["stack_exit_code"] is None, restart
    assert {"recover_s", "recovered", "degraded_metric", "updater_alive", "processes_after"} <= set(restart)
    for table in (serving_report.summary_table(result), serving_report.rates_table(result),
                  serving_report.faults_table(result)):
        assert table.startswith("| ") and "None" not in table, table
    assert result["stack_exit_code"] is not None
    shown = json.dumps(result)   # no machine paths: repository-relative or shortened
    assert str(tmp_path) not in shown and ROOT not in shown and os.path.dirname(model_dir) not in shown
