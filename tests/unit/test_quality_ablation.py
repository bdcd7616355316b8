"""`benchmarks.quality_ablation`: two runs' test scores paired on the same impressions."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks import quality_ablation as QA

IDS = np.array([b"i1", b"i2", b"i3", b"i4", b"i5", b"i6"])
LABELS = np.array([1, 0, 0, 1, 0, 1])
USERS = np.array([b"u1", b"u1", b"u2", b"u2", b"u3", b"u3"])


def _save(path, scores, ids=IDS, labels=LABELS, family="din"):
    np.savez(path, **{f"{family}/0/id": ids, f"{family}/0/score": np.asarray(scores, float),
                      f"{family}/0/label": labels, f"{family}/0/user": USERS})
    return str(path)


def test_a_better_run_is_ahead_by_the_hand_computed_auc_difference(tmp_path, capsys):
    # A ranks every positive first: AUC 1.  B: pairs (pos, neg) = 3 x 3 = 9, correct 5 -> 5/9.
    a = _save(tmp_path / "a.npz", [0.9, 0.1, 0.2, 0.8, 0.3, 0.7])
    b = _save(tmp_path / "b.npz", [0.2, 0.9, 0.1, 0.8, 0.3, 0.4])
    with np.load(a) as fa, np.load(b) as fb:
        rows = QA.compare(QA.rows_of(fa), QA.rows_of(fb), resamples=200)
    auc = next(r for r in rows if r["metric"] == "auc")
    assert auc["family"] == "din" and auc["seed"] == 0
    assert auc["a_value"] == pytest.approx(1.0)
    # B's scores: positives 0.2, 0.8, 0.4; negatives 0.9, 0.1, 0.3 -> wins: 0.2>{0.1}, 0.8>{0.1,0.3}, 0.4>{0.1,0.3}
    assert auc["b_value"] == pytest.approx(5 / 9)
    assert auc["diff"] == pytest.approx(1 - 5 / 9)
    assert QA.main(["--a", a, "--b", a]) == 0   # a run against itself: every difference 0
    assert "+0.0000" in capsys.readouterr().out


def test_runs_on_other_impressions_are_refused(tmp_path, capsys):
    a = _save(tmp_path / "a.npz", np.arange(6))
    other = _save(tmp_path / "b.npz", np.arange(6), ids=np.array([b"i1", b"i2", b"i3", b"i4", b"i5", b"x"]))
    assert QA.main(["--a", a, "--b", other]) == 2
    assert "scored different test impressions" in capsys.readouterr().err
    relabelled = _save(tmp_path / "c.npz", np.arange(6), labels=LABELS[::-1])
    assert QA.main(["--a", a, "--b", relabelled]) == 2
    assert "different labels or users" in capsys.readouterr().err
    gbdt = _save(tmp_path / "d.npz", np.arange(6), family="gbdt")
    assert QA.main(["--a", a, "--b", gbdt]) == 2
    assert "no family and seed to pair" in capsys.readouterr().err


def test_two_families_of_one_run_are_paired_seed_by_seed(tmp_path, capsys):
    path = tmp_path / "run.npz"
    np.savez(path, **{f"{fam}/0/{k}": v for fam, scores in (("dien", [0.9, 0.1, 0.2, 0.8, 0.3, 0.7]),
                                                            ("din", [0.2, 0.9, 0.1, 0.8, 0.3, 0.4]))
                      for k, v in (("id", IDS), ("score", np.asarray(scores)), ("label", LABELS), ("user", USERS))})
    assert QA.main(["--a", str(path), "--families", "dien", "din"]) == 0
    out = capsys.readouterr().out
    assert "| dien - din | 0 | AUC | 1.0000 | 0.5556 | +0.4444 |" in out
