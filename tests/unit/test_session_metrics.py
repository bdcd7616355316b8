"""Session metrics and the popularity baseline against hand-computed values."""
import numpy as np
import pytest

from feedrank.sessions import metrics as M
from feedrank.sessions.baselines import Popularity


def test_ranks_count_strictly_higher_scores():
    scores = np.array([[-9.0, 0.5, 0.3, 0.5], [-9.0, 0.1, 0.2, 0.3]])
    np.testing.assert_array_equal(M.ranks(scores, np.array([3, 1])), [1, 3])   # a tie counts for the item
    np.testing.assert_array_equal(M.ranks(scores, np.array([2, 3])), [3, 1])
    with pytest.raises(ValueError, match=r"target ids must be in \[0, 4\)"):
        M.ranks(scores, np.array([4, 1]))
    with pytest.raises(ValueError, match=r"scores \[N, I\] and targets \[N\]"):
        M.ranks(scores, np.array([1]))


def test_accuracy_recall_and_mrr_by_hand():
    r = np.array([1, 3, 11, 2, 25])
    assert M.top_k_accuracy(r, 1) == pytest.approx(1 / 5)
    assert M.top_k_accuracy(r, 10) == pytest.approx(3 / 5)
    assert M.recall_at(r, 20) == pytest.approx(4 / 5)
    assert M.mrr_at(r, 20) == pytest.approx((1 + 1 / 3 + 1 / 11 + 1 / 2 + 0) / 5)
    with pytest.raises(ValueError, match="no samples"):
        M.mrr_at(np.array([]), 20)


def test_path_compression_by_hand():
    per_prefix = [np.array([5, 3, 1]), np.array([12, 11]), np.array([2])]
    l2 = M.first_shown(per_prefix, k=3)
    np.testing.assert_array_equal(l2, [2, 2, 1])               # the second session never shows it: L2 = L1
    pc = M.path_compression(np.array([3, 2, 1]), l2)
    assert pc["ratio"] == pytest.approx(5 / 6)
    assert pc["mean_session_ratio"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert pc["mean_l1"] == pytest.approx(2.0) and pc["mean_l2"] == pytest.approx(5 / 3)
    with pytest.raises(ValueError, match="1 <= L2 <= L1"):
        M.path_compression(np.array([2]), np.array([3]))


def test_path_lengths_by_hand():
    per_prefix = [np.array([5, 3, 1]), np.array([12, 11]), np.array([2]), np.array([1, 9, 9, 9])]
    # first in the top 3 after m = 2, never, 1 and 1 pages
    l1, shown = M.path_lengths(per_prefix, 3, rule="shown")
    np.testing.assert_array_equal(l1, [3, 2, 1, 4])
    np.testing.assert_array_equal(shown, [2, 2, 1, 1])
    np.testing.assert_array_equal(M.first_shown(per_prefix, 3), shown)
    # opened on page m + 1, capped at L1: 3 (not 4), 2 (never), 1 (not 2), 2
    np.testing.assert_array_equal(M.path_lengths(per_prefix, 3)[1], [3, 2, 1, 2])


def test_path_start_counts_only_the_pages_after_it():
    per_prefix = [np.array([5, 3, 1]), np.array([12, 11]), np.array([2]), np.array([1, 9, 9, 9])]
    l1, l2 = M.path_lengths(per_prefix, 3, start=np.array([1, 0, 0, 2]))
    # session 1 from its 2nd page: ranks 3, 1, shown after 1 page of the path, opened on its 2nd;
    # session 4 from its 3rd page: ranks 9, 9, never (the top-3 showing before the start does not count)
    np.testing.assert_array_equal(l1, [2, 2, 1, 2])
    np.testing.assert_array_equal(l2, [2, 2, 1, 2])
    np.testing.assert_array_equal(M.path_lengths(per_prefix, 3, np.array([1, 0, 0, 2]), "shown")[1], [1, 2, 1, 2])
    with pytest.raises(ValueError, match=r"path start of session 2 must be in \[0, 1\)"):
        M.path_lengths(per_prefix, 3, start=np.array([0, 0, 1, 0]))
    with pytest.raises(ValueError, match="one per session"):
        M.path_lengths(per_prefix, 3, start=np.array([0, 0]))


def test_view_credit_counts_the_items_own_page_as_shown():
    per_prefix = [np.array([12, 11]), np.array([9, 9, 9, 9])]
    viewed = [np.array([False, True]), np.array([False, True, False, False])]
    # session 1: its own page is the 2nd (L2 = min(3, 2) = 2); session 2: the 2nd of 4, opened on the 3rd
    np.testing.assert_array_equal(M.path_lengths(per_prefix, 3, viewed=viewed)[1], [2, 3])
    np.testing.assert_array_equal(M.path_lengths(per_prefix, 3, rule="shown", viewed=viewed)[1], [2, 2])
    np.testing.assert_array_equal(M.path_lengths(per_prefix, 3)[1], [2, 4])


def test_prefixes_keep_the_first_m_real_pages():
    pages = np.array([[0, 4, 5, 0, 6], [7, 0, 0, 0, 0]])
    dwell = np.arange(10, dtype=np.float32).reshape(2, 5)
    p, d, session, length = M.prefixes(pages, dwell)
    np.testing.assert_array_equal(p, [[0, 4, 0, 0, 0], [0, 4, 5, 0, 0], [0, 4, 5, 0, 6], [7, 0, 0, 0, 0]])
    # the prefix's current (last) page has dwell 0: its dwell when it opens
    np.testing.assert_array_equal(d, [[0, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 1, 2, 0, 0], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(session, [0, 0, 0, 1])
    np.testing.assert_array_equal(length, [1, 2, 3, 1])
    with pytest.raises(ValueError, match="sessions without pages"):
        M.prefixes(np.zeros((1, 3), np.int64), np.zeros((1, 3), np.float32))


def count_scores(batch):
    """Item j scores the count of page j in the prefix, minus j/1000; item 0 lowest."""
    pages = batch["pages"]
    s = np.stack([(pages == j).sum(1) - j / 1000 for j in range(6)], axis=1).astype(np.float64)
    s[:, 0] = -1e9
    return s


def test_evaluate_by_hand():
    sessions = {"pages": np.array([[1, 2, 2], [3, 0, 4]]), "dwell": np.ones((2, 3), np.float32)}
    targets = np.array([2, 5])
    # session 1, prefixes [1], [1 2], [1 2 2]: ranks of item 2 are 2, 2, 1;
    # session 2 (item 5 never viewed), prefixes [3], [3 4]: ranks 5, 5.
    out = M.evaluate(count_scores, sessions, targets, ks=(1, 2), path_k=2, batch_size=2)
    assert out["top1"] == pytest.approx(0.5) and out["top2"] == pytest.approx(0.5)
    assert out["recall@20"] == pytest.approx(1.0)
    assert out["mrr@20"] == pytest.approx((0.5 + 0.5 + 1 + 0.2 + 0.2) / 5)
    # session 1: item 2 first in the top 2 after m = 1 page, opened on page 2 (L2 = 2 of L1 = 3);
    # session 2: never shown (L2 = L1 = 2)
    assert out["path_compression"] == pytest.approx((2 + 2) / (3 + 2))
    assert out["path_compression_mean_session"] == pytest.approx((2 / 3 + 1) / 2)
    assert out["mean_l1"] == pytest.approx(2.5) and out["mean_l2"] == pytest.approx(2.0)
    assert out["path_compression_first_shown"] == pytest.approx((1 + 2) / (3 + 2))   # L2 = m: 1 and 2
    assert out["mean_l2_first_shown"] == pytest.approx(1.5)
    assert "path_compression_with_view_credit" not in out                 # needs page_item
    assert out["sessions"] == 2 and out["prefixes"] == 5
    strict = M.evaluate(count_scores, sessions, targets, ks=(1,), path_k=1)
    assert strict["path_compression"] == pytest.approx(1.0)             # shown only after the last page


def test_evaluate_with_view_credit_path_start_and_per_sample_values():
    sessions = {"pages": np.array([[1, 2, 3, 1], [4, 5, 0, 0]]), "dwell": np.ones((2, 4), np.float32),
                "user_id": np.array([b"a", b"b"])}
    targets = np.array([2, 5])
    page_item = np.array([0, 1, 2, 3, 4, 0])          # page 5 is a list page: it shows no item
    # session 1 (item 2): ranks 2, 2, 2, 2 after 1..4 pages, never top-1 (L2 = L1 = 4); its own page is
    # the 2nd: with view credit shown after 2 pages, opened on the 3rd (L2 = 3).
    # session 2 (item 5): ranks 5, 2, never top-1 (L2 = L1 = 2); page 5 is not item 5's page.
    out, per = M.evaluate(count_scores, sessions, targets, ks=(1,), path_k=1, page_item=page_item,
                          return_per_session=True)
    assert out["path_compression"] == pytest.approx(1.0)
    assert out["path_compression_first_shown"] == pytest.approx(1.0)
    assert out["path_compression_with_view_credit"] == pytest.approx((3 + 2) / (4 + 2))
    assert out["mean_l2_with_view_credit"] == pytest.approx(2.5)
    assert out["mrr@20"] == pytest.approx((4 * 0.5 + 0.2 + 0.5) / 6) and out["prefixes"] == 6
    np.testing.assert_array_equal(per["rank"], [2, 2])
    np.testing.assert_array_equal(per["top1"], [0, 0])
    np.testing.assert_array_equal(per["prefixes"], [4, 2])
    np.testing.assert_array_equal(per["hits@20"], [4, 2])
    np.testing.assert_allclose(per["rr@20"], [2.0, 0.7])
    np.testing.assert_array_equal(per["l1"], [4, 2])
    np.testing.assert_array_equal(per["l2"], [4, 2])
    np.testing.assert_array_equal(per["l2_with_view_credit"], [3, 2])
    np.testing.assert_array_equal(per["group"], [b"a", b"b"])              # the samples' users
    assert M.summarise(per, ks=(1,)) == out
    # the path starts after session 1's first page (its previous add-to-cart): L1 = 3, and with
    # view credit its own page is the path's 1st page, opened on the 2nd (L2 = 2)
    start = M.evaluate(count_scores, sessions, targets, ks=(1,), path_k=1, page_item=page_item,
                       path_start=np.array([1, 0]))
    assert start["mean_l1"] == pytest.approx(2.5) and start["path_compression"] == pytest.approx(1.0)
    assert start["path_compression_with_view_credit"] == pytest.approx((2 + 2) / (3 + 2))
    assert start["mrr@20"] == pytest.approx(out["mrr@20"])                 # every prefix still counts
    _, keyed = M.evaluate(count_scores, {k: sessions[k] for k in ("pages", "dwell")}, targets,
                          group=np.array([7, 7]), return_per_session=True)
    np.testing.assert_array_equal(keyed["group"], [7, 7])
    with pytest.raises(ValueError, match="page_item covers page ids < 3"):
        M.evaluate(count_scores, sessions, targets, page_item=np.array([0, 1, 2]))


def test_popularity_baseline():
    pop = Popularity(5).fit(np.array([3, 3, 1, 2, 3, 2]))
    np.testing.assert_array_equal(pop.counts, [0, 1, 2, 3, 0])
    top = pop.top_k(3)
    np.testing.assert_array_equal(top["items"], [3, 2, 1])
    np.testing.assert_array_equal(top["counts"], [3, 2, 1])
    sessions = {"pages": np.array([[1, 2], [0, 3]]), "dwell": np.ones((2, 2), np.float32)}
    s = pop.scores(sessions)
    assert s.shape == (2, 5) and (s[:, 0] < s[:, 4]).all()              # padding below an unsold item
    out = M.evaluate(pop.scores, sessions, np.array([3, 1]), ks=(1, 3), path_k=1)
    assert out["top1"] == pytest.approx(0.5) and out["top3"] == pytest.approx(1.0)
    # session 1: item 3 is first after its first page, opened on page 2 (L2 = 2 of 2; first shown:
    # 1 of 2); session 2: never top-1 (L2 = L1 = 1)
    assert out["path_compression"] == pytest.approx((2 + 1) / (2 + 1))
    assert out["path_compression_first_shown"] == pytest.approx((1 + 1) / (2 + 1))
    with pytest.raises(ValueError, match=r"purchased item ids must be in \[1, 5\)"):
        Popularity(5).fit(np.array([0, 2]))


def test_evaluate_runs_a_drnn():
    import tensorflow as tf

    from feedrank.sessions import drnn

    m = drnn.build({"num_pages": 9, "num_items": 9, "width": 2, "length": 1, "units": 4, "page_dim": 3,
                    "fnn_units": [4]})
    sessions = {"pages": np.array([[1, 2, 3], [0, 4, 5]], np.int64), "dwell": np.ones((2, 3), np.float32),
                "purchases": np.array([[1, 0], [0, 0]], np.int64), "user_id": np.array([b"a", b"b"])}
    out = M.evaluate(lambda b: m({k: tf.constant(v) for k, v in b.items()})[drnn.CART].numpy(), sessions,
                     np.array([2, 5]), ks=(1, 7))
    assert out["prefixes"] == 5 and out["top7"] == pytest.approx(1.0)   # ids 1..7 are items: always in the top 7
    assert 0.0 < out["path_compression"] <= 1.0
