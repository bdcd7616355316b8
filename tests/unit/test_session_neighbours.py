"""Recently-viewed and item-kNN session baselines (`feedrank.sessions.neighbours`) against
hand-computed scores on tiny sessions."""
from __future__ import annotations

import numpy as np
import pytest

from feedrank.sessions import metrics
from feedrank.sessions.neighbours import PAD_SCORE, ItemKnn, RecentlyViewed

PAGE_ITEM = np.array([0, 1, 2, 3, 4, 0])          # pages 1-4 show items 1-4; page 5 shows none


def test_recently_viewed_by_hand():
    rv = RecentlyViewed(PAGE_ITEM, 5, decay=0.5)
    # row 0 (left-padded): pages 1, 2, 1, 5 have ages 3, 2, 1, 0; page 5 shows no item.
    #   item 1: 0.5**3 + 0.5**1 = 0.625, item 2: 0.5**2 = 0.25.  Row 1 (right-padded): page 3 alone.
    s = rv.scores({"pages": np.array([[0, 1, 2, 1, 5], [3, 0, 0, 0, 0]])})
    np.testing.assert_allclose(s, [[PAD_SCORE, 0.625, 0.25, 0, 0], [PAD_SCORE, 0, 0, 1.0, 0]])


def test_the_fallback_orders_the_unviewed_items_below_the_viewed_ones():
    rv = RecentlyViewed(PAGE_ITEM, 5, decay=0.5, fallback=np.array([0.0, 10, 0, 30, 20]))
    # the fallback rescaled over items 1-4: 1/3, 0, 1, 2/3; times half the smallest positive score 0.25
    s = rv({"pages": np.array([[0, 1, 2, 1, 5]])})
    np.testing.assert_allclose(s[0, 1:], [0.625 + 0.125 / 3, 0.25, 0.125, 0.125 * 2 / 3])
    np.testing.assert_array_equal(np.argsort(-s[0]), [1, 2, 3, 4, 0])
    empty = rv({"pages": np.zeros((1, 3), np.int64)})                  # no page: the fallback alone
    np.testing.assert_allclose(empty[0, 1:], [1 / 3, 0, 1, 2 / 3])


def test_recently_viewed_scores_through_evaluate():
    rv = RecentlyViewed(PAGE_ITEM, 5, decay=0.5)
    sessions = {"pages": np.array([[1, 2, 3]]), "dwell": np.ones((1, 3), np.float32)}
    out = metrics.evaluate(rv.scores, sessions, np.array([2]), ks=(1,), path_k=1)
    assert out["top1"] == 0.0 and out["recall@20"] == 1.0       # item 2 is second after page 3


TRAIN = [[1, 2, 3], [1, 2], [2, 4], [3]]
# n: 1 -> 2 sessions, 2 -> 3, 3 -> 2, 4 -> 1; co(1,2) = 2, co(1,3) = co(2,3) = co(2,4) = 1


def test_item_knn_similarities_by_hand():
    knn = ItemKnn(np.arange(6), 6, alpha=0.5).fit(TRAIN)
    np.testing.assert_array_equal(knn.counts, [0, 2, 3, 2, 1, 0])
    sim = knn.sim.toarray()
    assert sim[1, 2] == pytest.approx(2 / np.sqrt(6)) and sim[2, 1] == pytest.approx(2 / np.sqrt(6))
    assert sim[1, 3] == pytest.approx(1 / 2) and sim[2, 4] == pytest.approx(1 / np.sqrt(3))
    assert sim[1, 1] == 0 and sim[5].sum() == 0 and sim[1, 4] == 0
    # alpha 1: sim(i, j) = co(i, j) / n_i, not symmetric
    one = ItemKnn(np.arange(6), 6, alpha=1.0).fit(TRAIN).sim.toarray()
    assert (one[1, 2], one[2, 1], one[4, 2], one[2, 4]) == (1.0, pytest.approx(2 / 3), 1.0, pytest.approx(1 / 3))
    # an item counts once per session
    np.testing.assert_array_equal(ItemKnn(np.arange(6), 6).fit([[1, 2, 1]]).sim.toarray(),
                                  ItemKnn(np.arange(6), 6).fit([[1, 2]]).sim.toarray())


def test_item_knn_scores_by_hand():
    knn = ItemKnn(np.arange(6), 6, decay=0.5, alpha=1.0).fit(TRAIN)
    # pages 1 (age 1, weight 0.5) and 3 (age 0, weight 1): score(j) = 0.5 sim(1, j) + sim(3, j)
    s = knn.scores({"pages": np.array([[0, 1, 3]])})
    np.testing.assert_allclose(s[0], [PAD_SCORE, 0.5, 0.5 * 1 + 0.5, 0.5 * 0.5, 0, 0])
    # one neighbour each: 1 keeps 2 (1.0), 3 keeps 1 (0.5 tied with 2: the lower id)
    top1 = ItemKnn(np.arange(6), 6, neighbours=1, decay=0.5, alpha=1.0).fit(TRAIN)
    np.testing.assert_allclose(top1.scores({"pages": np.array([[1, 3]])})[0], [PAD_SCORE, 0.5, 0.5, 0, 0, 0])


def test_item_knn_fallback_scores_unseen_items():
    knn = ItemKnn(np.arange(6), 6, decay=0.5, alpha=1.0, fallback=np.arange(6.0)).fit(TRAIN)
    # fallback over items 1-5 rescaled: 0, .25, .5, .75, 1; times half the smallest positive 0.25
    s = knn.scores({"pages": np.array([[1, 3]])})[0]
    np.testing.assert_allclose(s[1:], [0.5, 1.03125, 0.3125, 0.09375, 0.125])
    np.testing.assert_array_equal(np.argsort(-s), [2, 1, 3, 5, 4, 0])   # unseen item 5 by the fallback


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match=r"page_item values must be item ids in \[0, 3\)"):
        RecentlyViewed(np.array([0, 1, 3]), 3)
    with pytest.raises(ValueError, match="decay must be in"):
        RecentlyViewed(PAGE_ITEM, 5, decay=0.0)
    with pytest.raises(ValueError, match=r"page ids must be in \[0, 6\)"):
        RecentlyViewed(PAGE_ITEM, 5).scores({"pages": np.array([[7]])})
    with pytest.raises(ValueError, match=r"session item ids must be in \[1, 6\)"):
        ItemKnn(np.arange(6), 6).fit([[1, 6]])
    with pytest.raises(RuntimeError, match="before fit"):
        ItemKnn(np.arange(6), 6).scores({"pages": np.array([[1]])})


def test_item_knn_fits_and_scores_at_shop_scale():
    rng = np.random.default_rng(0)
    sessions = [list(rng.integers(1, 3000, rng.integers(1, 10))) for _ in range(20_000)]
    knn = ItemKnn(np.arange(3000), 3000).fit(sessions)
    s = knn.scores({"pages": rng.integers(0, 3000, (1000, 10))})
    assert s.shape == (1000, 3000) and (np.diff(knn.sim.indptr) <= 100).all()
