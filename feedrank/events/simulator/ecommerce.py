"""The e-commerce world: shoppers moving page to page, and what they add to the cart.

A shop has one index page, one category-list page per category and one page per
item.  A shopper's session starts on the index page and walks index ->
category lists -> item pages, led by a hidden session intent (a category).
Every page has a dwell time.  After an item page the shopper may add an item to
the cart (a ``purchase`` event); the item is drawn from the TRUE next-purchase
distribution, a softmax over all items whose logit is

    u(i) = EFFECTS.pop        * log popularity(i)
         + EFFECTS.pref       * log preference(user, category(i))
         + EFFECTS.view_item  * S_item(i)       (the session's pages of item i)
         + EFFECTS.view_cat   * S_cat(cat(i))   (its category-list and item pages of cat(i))
         + EFFECTS.repeat     * [i bought in an earlier session]
         + EFFECTS.complement * [cat(i) is the complement of an earlier purchase's category]

where a page s seen before the cart adds ``recency ** age(s) * min(dwell_s / ref_dwell(type), dwell_cap)``
to S (age 0: the latest page): recent pages and long dwells count more.  The effect
sizes are fixed in `EFFECTS` (docs/sessions.md) and are never tuned toward a model.

`simulate_day` is vectorised per shopper-page with numpy; nothing here writes files
(`feedrank.events.simulator.ecommerce_io` does).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Dict, List, Tuple

import numpy as np

log = logging.getLogger(__name__)

INDEX, CATEGORY, ITEM = 0, 1, 2
PAGE_TYPES: Tuple[str, ...] = ("index", "category", "item")


@dataclasses.dataclass(frozen=True)
class Effects:
    """The TRUE next-purchase logit's fixed effect sizes (see the module docstring)."""

    pop: float = 1.0          # per unit log popularity (Zipf weights, mean 1)
    pref: float = 1.0         # per unit log category preference of the user
    view_item: float = 1.2    # per unit of page weight on the item's own page
    view_cat: float = 0.5     # per unit of page weight on pages of the item's category
    repeat: float = 2.0       # the item was bought in an earlier session
    complement: float = 1.0   # its category complements an earlier purchase's category
    recency: float = 0.75     # a page's weight decays by this factor per later page
    dwell_cap: float = 4.0    # a page's dwell factor dwell / ref_dwell is capped here


EFFECTS = Effects()


@dataclasses.dataclass(frozen=True)
class Browsing:
    """How shoppers browse (not part of the truth's logit; tuned to the paper's ~12 pages)."""

    cart_hazard: float = 0.075     # P(add to cart) after an item page
    exit_hazard: float = 0.04      # P(leave) after any page
    continue_after_cart: float = 0.3
    ref_dwell_s: Tuple[float, float, float] = (6.0, 12.0, 25.0)   # median dwell per page type
    dwell_sigma: float = 0.6       # log-sd of dwell
    dwell_interest: float = 0.7    # log dwell bonus on pages of the session's intent category
    max_dwell_s: float = 600.0
    intent_from_history: float = 0.4   # P(intent = a complement/repeat of the history | returning buyer)
    sessions_extra: float = 0.3    # sessions per active day = 1 + Poisson(this)
    max_pages: int = 200


BROWSING = Browsing()


@dataclasses.dataclass
class Shop:
    """The hidden shop: items, categories, complements, users' preferences."""

    n_cat: int
    item_cat: np.ndarray        # (n_items,) category of each item
    item_pop: np.ndarray        # (n_items,) popularity weight, mean 1
    price: np.ndarray
    complement: np.ndarray      # (n_cat,) complement category of each category
    pref: np.ndarray            # (n_users, n_cat) category preference, rows sum to 1
    activity: np.ndarray        # (n_users,) daily P(active)
    cat_items: List[np.ndarray] = dataclasses.field(default_factory=list)
    cat_cum: List[np.ndarray] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        for c in range(self.n_cat):
            idx = np.flatnonzero(self.item_cat == c)
            self.cat_items.append(idx)
            self.cat_cum.append(np.cumsum(self.item_pop[idx]))


def make_shop(rng: np.random.Generator, n_users: int, n_items: int, n_cat: int, activity: float) -> Shop:
    """Draws the shop; every category gets at least one item."""
    if n_items < n_cat:
        raise ValueError(f"need at least one item per category: items={n_items} < categories={n_cat}")
    cat = np.concatenate([np.arange(n_cat), rng.integers(0, n_cat, n_items - n_cat)])
    rank = rng.permutation(n_items) + 1
    pop = 1.0 / rank ** 0.8
    pop = pop / pop.mean()
    price = np.round(np.exp(rng.normal(4.0, 0.8, n_items)), 2)
    perm = rng.permutation(n_cat)      # complements: pairs along a random permutation
    comp = np.empty(n_cat, dtype=np.int64)
    comp[perm[0::2][:n_cat // 2]], comp[perm[1::2]] = perm[1::2], perm[0::2][:n_cat // 2]
    if n_cat % 2:
        comp[perm[-1]] = perm[0]
    pref = rng.dirichlet(np.full(n_cat, 0.3), n_users)
    pref = 0.95 * pref + 0.05 / n_cat
    act = np.clip(rng.gamma(2.0, activity / 2.0, n_users), 0.01, 1.0)
    return Shop(n_cat, cat, pop, price, comp, pref, act)


def page_weights(types: np.ndarray, dwell: np.ndarray, eff: Effects = EFFECTS,
                 brw: Browsing = BROWSING) -> np.ndarray:
    """Each page's weight in the truth: recency ** age * min(dwell / ref_dwell(type), cap)."""
    age = np.arange(len(types))[::-1]
    ref = np.asarray(brw.ref_dwell_s)[types]
    return eff.recency ** age * np.minimum(dwell / ref, eff.dwell_cap)


def purchase_logits(shop: Shop, user: int, types: np.ndarray, targets: np.ndarray, dwell: np.ndarray,
                    bought: np.ndarray, eff: Effects = EFFECTS, brw: Browsing = BROWSING) -> np.ndarray:
    """The true next-purchase logit of every item after the pages ``(types, targets, dwell)``.

    ``targets`` holds the category of a category page and the item of an item page;
    ``bought`` the items bought in the user's earlier sessions.
    """
    w = page_weights(types, dwell, eff, brw)
    s_item = np.zeros(len(shop.item_cat))
    it = types == ITEM
    np.add.at(s_item, targets[it], w[it])
    s_cat = np.zeros(shop.n_cat)
    ct = types == CATEGORY
    np.add.at(s_cat, targets[ct], w[ct])
    np.add.at(s_cat, shop.item_cat[targets[it]], w[it])
    u = eff.pop * np.log(shop.item_pop) + eff.pref * np.log(shop.pref[user, shop.item_cat])
    u += eff.view_item * s_item + eff.view_cat * s_cat[shop.item_cat]
    if len(bought):
        rep = np.zeros(len(u), dtype=bool)
        rep[bought] = True
        comp_cats = np.zeros(shop.n_cat, dtype=bool)
        comp_cats[shop.complement[shop.item_cat[bought]]] = True
        u += eff.repeat * rep + eff.complement * comp_cats[shop.item_cat]
    return u


def softmax(u: np.ndarray) -> np.ndarray:
    e = np.exp(u - u.max())
    return e / e.sum()


def _draw_item(rng: np.random.Generator, shop: Shop, cat: int) -> int:
    cum = shop.cat_cum[cat]
    return int(shop.cat_items[cat][min(np.searchsorted(cum, rng.random() * cum[-1], "right"), len(cum) - 1)])


def _pref_cat(rng: np.random.Generator, shop: Shop, user: int) -> int:
    return int(np.searchsorted(np.cumsum(shop.pref[user]), rng.random(), "right").clip(0, shop.n_cat - 1))


def _intent(rng: np.random.Generator, shop: Shop, user: int, bought: np.ndarray, brw: Browsing) -> int:
    """The session's hidden intent: for a returning buyer, with ``intent_from_history``, an
    earlier purchase's category or its complement (half each); else a draw from the preferences."""
    if len(bought) and rng.random() < brw.intent_from_history:
        c = int(shop.item_cat[bought[rng.integers(len(bought))]])
        return int(shop.complement[c]) if rng.random() < 0.5 else c
    return _pref_cat(rng, shop, user)


def _next_page(rng: np.random.Generator, shop: Shop, user: int, intent: int, ptype: int,
               target: int) -> Tuple[int, int]:
    """The next page (type, target) after page ``(ptype, target)``."""
    r = rng.random()
    if ptype == INDEX:
        if r < 0.7:
            return CATEGORY, intent if rng.random() < 0.7 else _pref_cat(rng, shop, user)
        return ITEM, _draw_item(rng, shop, intent if rng.random() < 0.5 else int(rng.integers(shop.n_cat)))
    if ptype == CATEGORY:
        if r < 0.85:
            return ITEM, _draw_item(rng, shop, target)
        if r < 0.9:
            return INDEX, 0
        return CATEGORY, intent
    cur = int(shop.item_cat[target])
    if r < 0.5:
        return ITEM, _draw_item(rng, shop, intent)
    if r < 0.7:
        return ITEM, _draw_item(rng, shop, cur)
    if r < 0.8:
        return ITEM, _draw_item(rng, shop, int(shop.complement[intent]))
    if r < 0.95:
        return CATEGORY, intent
    return INDEX, 0


def ablated_p(shop: Shop, user: int, types: np.ndarray, targets: np.ndarray, dwell: np.ndarray,
              bought: np.ndarray, item: int, eff: Effects = EFFECTS, brw: Browsing = BROWSING) -> Dict[str, float]:
    """The probability of ``item`` under the true logit with one signal taken out: ``no_dwell``
    (every page at its type's reference dwell), ``no_recency`` (recency 1: order does not
    matter) and ``no_history`` (no repeat or complement terms).  How much each signal carries."""
    ref = np.asarray(brw.ref_dwell_s)[types]
    return {
        "no_dwell": float(softmax(purchase_logits(shop, user, types, targets, ref, bought, eff, brw))[item]),
        "no_recency": float(softmax(purchase_logits(shop, user, types, targets, dwell, bought,
                                                    dataclasses.replace(eff, recency=1.0), brw))[item]),
        "no_history": float(softmax(purchase_logits(shop, user, types, targets, dwell, bought[:0], eff, brw))[item]),
    }


def simulate_session(rng: np.random.Generator, shop: Shop, user: int, start_ts: int, bought: np.ndarray,
                     eff: Effects = EFFECTS, brw: Browsing = BROWSING) -> Dict[str, list]:
    """One session: its pages and carts, with the truth of every cart.

    Returns lists: ``pages`` of (type, target, ts, dwell_s) and ``carts`` of dicts (item, ts,
    pages_before: the page views before it, p_item: its true probability, p_top1 and p_top10:
    the truth's top-1 and top-10 mass, rank: its rank under the truth, and `ablated_p`).
    """
    intent = _intent(rng, shop, user, bought, brw)
    types: List[int] = [INDEX]
    targets: List[int] = [0]
    dwells: List[float] = []
    pages: List[tuple] = []
    carts: List[Dict] = []
    ts = start_ts
    while True:
        ptype, target = types[-1], targets[-1]
        on_intent = (ptype == CATEGORY and target == intent) or (ptype == ITEM and shop.item_cat[target] == intent)
        dwell = brw.ref_dwell_s[ptype] * np.exp(brw.dwell_sigma * rng.normal()
                                                  + brw.dwell_interest * on_intent)
        dwell = float(np.round(min(dwell, brw.max_dwell_s), 1))
        dwells.append(dwell)
        pages.append((ptype, target, ts, dwell))
        end_ts = ts + int(np.floor(dwell))
        if ptype == ITEM and rng.random() < brw.cart_hazard:
            seen = (np.asarray(types), np.asarray(targets), np.asarray(dwells))
            p = softmax(purchase_logits(shop, user, *seen, bought, eff, brw))
            item = int(np.searchsorted(np.cumsum(p), rng.random() * p.sum(), "right").clip(0, len(p) - 1))
            top = np.sort(p)[::-1]
            carts.append(dict(item=item, ts=end_ts, pages_before=len(pages), p_item=float(p[item]),
                              p_top1=float(top[0]), p_top10=float(top[:10].sum()),
                              rank=int((p > p[item]).sum()) + 1,
                              **{f"p_item_{k}": v for k, v in ablated_p(shop, user, *seen, bought, item,
                                                                         eff, brw).items()}))
            if rng.random() >= brw.continue_after_cart:
                break
        elif rng.random() < brw.exit_hazard or len(pages) >= brw.max_pages:
            break
        ts = end_ts + 1 + int(rng.integers(0, 5))
        nt, ng = _next_page(rng, shop, user, intent, ptype, target)
        types.append(nt)
        targets.append(ng)
    return dict(pages=pages, carts=carts)
