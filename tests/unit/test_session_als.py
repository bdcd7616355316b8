"""The ALS session baselines (feedrank/sessions/als.py) on a tiny hand-made shop.

Items 1..6.  Pages: 0 padding, 1 the index, 2 a category list, 3..8 the item
pages of items 1..6.  Group A shoppers buy items 1 and 2 together, group B
items 3 and 4; items 5 and 6 are rarely touched.
"""
from __future__ import annotations

import numpy as np
import pytest

from feedrank.sessions.als import AlsSettings, SessionAls

NUM_ITEMS = 7
PAGE_ITEM = np.array([0, 0, 0, 1, 2, 3, 4, 5, 6])   # page id -> item id (0: not an item page)
INDEX, CATEGORY = 1, 2


def item_page(item: int) -> int:
    return item + 2


def shop() -> SessionAls:
    users, pages, bought = [], [], []
    for u in range(12):                         # group A: 1 and 2
        users.append(f"a{u}")
        pages.append([INDEX, item_page(1), item_page(2)])
        bought.append([1, 2])
    for u in range(12):                         # group B: 3 and 4
        users.append(f"b{u}")
        pages.append([INDEX, CATEGORY, item_page(3), item_page(4)])
        bought.append([3, 4] if u else [4])
    users.append("solo")                        # bought only item 1
    pages.append([INDEX, item_page(1), 0, 0])
    bought.append([1])
    users.append("rare")
    pages.append([INDEX, item_page(5), item_page(6), 0])
    bought.append([])
    width = max(len(p) for p in pages)
    grid = np.array([p + [0] * (width - len(p)) for p in pages])
    return SessionAls(NUM_ITEMS, PAGE_ITEM, AlsSettings(factors=3, regularization=0.1, iterations=30)).fit(
        users, grid, bought)


@pytest.fixture(scope="module")
def als() -> SessionAls:
    return shop()


def batch(users, pages, purchases):
    return {"pages": np.array(pages, np.int64), "dwell": np.ones(np.shape(pages), np.float32),
            "purchases": np.array(purchases, np.int64), "user_id": np.array(users, dtype=bytes)}


def test_the_co_purchased_item_is_recommended(als):
    b = batch(["solo"], [[INDEX, 0]], [[1]])            # a known user, history: item 1; the session: the index
    top = als.top_k(b, 2, "user")[0]
    assert set(top) == {1, 2}                           # item 1 and the item bought with it
    s = als.scores(b, "user")[0]
    assert s[2] > max(s[3], s[4], s[5], s[6])
    # a session that viewed item 3's page points at its partner, item 4, without any history
    sess = als.scores(batch(["nobody"], [[INDEX, item_page(3)]], [[0]]), "session")[0]
    assert set(np.argsort(-sess)[:2]) == {3, 4}


def test_with_and_without_history_differ_as_defined(als):
    # a group-A buyer now looks at item 3's page
    b = batch(["a0"], [[INDEX, item_page(3)]], [[1, 2]])
    without, with_ = als.scores(b, "session")[0], als.scores(b, "user")[0]
    assert np.argmax(without[1:]) + 1 in (3, 4)          # the session alone: group B
    assert (with_[1] - with_[3]) > (without[1] - without[3])   # the history pulls group A up
    assert np.argsort(-with_)[:4].tolist() != np.argsort(-without)[:4].tolist()
    # "session" reads nothing but the pages: another user and history change nothing
    other = batch(["b3"], [[INDEX, item_page(3)]], [[4, 3]])
    np.testing.assert_array_equal(als.scores(other, "session"), als.scores(b, "session"))


def test_unknown_users_fall_back(als):
    pages = [[INDEX, item_page(3)], [INDEX, CATEGORY]]
    unknown = batch(["new1", "new2"], pages, [[0], [0]])
    user, session = als.scores(unknown, "user"), als.scores(unknown, "session")
    np.testing.assert_allclose(user, session)            # no past: the session row alone
    # no item at all (index and category pages only, no history): training purchase counts
    order = np.argsort(-user[1], kind="stable")[:4].tolist()
    assert order == [1, 2, 4, 3]                         # 13, 12, 12, 11 add-to-carts, ties by id
    assert user[1, 0] == user[0, 0] == -1e9               # the padding item is never recommended


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="purchased item ids"):
        SessionAls(NUM_ITEMS, PAGE_ITEM).fit(["u"], np.array([[1]]), [[7]])
    with pytest.raises(ValueError, match="page_item"):
        SessionAls(NUM_ITEMS, [0, 9])
    with pytest.raises(ValueError, match="before fit"):
        SessionAls(NUM_ITEMS, PAGE_ITEM).scores(batch(["u"], [[1]], [[0]]))
    with pytest.raises(ValueError, match="history must be"):
        shop().scorer("everything")
