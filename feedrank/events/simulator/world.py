"""The hidden world behind the simulated event log.

Taxonomy (top categories -> sub-categories with token vocabularies), regions,
posts (items) with hidden quality / popularity / lifetime, users with a home
region and latent category interests that drift day by day, and the hidden
ground-truth click model.  Everything is vectorised with numpy; nothing here
writes files.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

# top category -> {sub category: (median price, log-sd, tokens)}
TAXONOMY: Dict[str, Dict[str, Tuple[float, float, Tuple[str, ...]]]] = {
    "housing": {
        "rent": (3000, 0.45, ("apartment", "1br", "2br", "studio", "furnished", "metro", "monthly", "landlord")),
        "shared": (1400, 0.35, ("room", "roommate", "shared", "bed", "female_only", "bills_incl")),
        "sale_new": (2.5e6, 0.6, ("new_build", "developer", "floor_plan", "deposit", "school_district")),
        "sale_used": (1.8e6, 0.6, ("second_hand_flat", "owner_sale", "renovated", "south_facing", "elevator")),
        "commercial": (9000, 0.7, ("shop", "office_space", "storefront", "warehouse", "transfer")),
        "short_term": (220, 0.4, ("daily_rent", "homestay", "hourly", "hotel_apt")),
    },
    "jobs": {
        "general_labor": (5500, 0.25, ("worker", "factory", "packer", "loader", "dorm_provided", "shift")),
        "sales": (7000, 0.35, ("sales", "commission", "telesales", "store_clerk", "target")),
        "driver": (8000, 0.3, ("driver", "courier", "delivery", "truck_license", "ride_hailing")),
        "restaurant": (5000, 0.25, ("chef", "waiter", "kitchen_helper", "barista", "meals_incl")),
        "office": (6500, 0.3, ("admin", "receptionist", "accountant", "hr", "assistant")),
        "tech": (15000, 0.4, ("programmer", "java", "frontend", "it_support", "engineer")),
        "part_time": (120, 0.4, ("part_time", "weekend", "student", "hourly_pay", "flyer")),
    },
    "vehicles": {
        "used_car": (80000, 0.7, ("used_car", "sedan", "suv", "low_mileage", "one_owner", "automatic")),
        "motorcycle": (6000, 0.5, ("motorbike", "scooter", "helmet", "125cc")),
        "ebike": (1600, 0.4, ("ebike", "battery", "electric_scooter", "lithium")),
        "car_rental": (300, 0.4, ("car_rental", "self_drive", "chauffeur", "daily_hire")),
        "trucks": (120000, 0.6, ("truck", "van", "pickup", "cargo", "tipper")),
    },
    "goods": {
        "phones": (1500, 0.7, ("phone", "iphone", "android", "unlocked", "screen")),
        "computers": (3000, 0.6, ("laptop", "desktop", "monitor", "gpu", "tablet")),
        "furniture": (700, 0.8, ("sofa", "bed_frame", "wardrobe", "desk", "table", "chair")),
        "appliances": (900, 0.7, ("fridge", "washer", "aircon", "tv", "microwave")),
        "baby_kids": (180, 0.7, ("stroller", "crib", "toys", "car_seat", "kids_clothes")),
        "clothing": (90, 0.8, ("jacket", "dress", "shoes", "handbag", "brand")),
        "books": (30, 0.6, ("textbook", "novel", "exam_prep", "comics")),
    },
    "services": {
        "moving": (400, 0.5, ("movers", "moving", "packing", "van_hire")),
        "cleaning": (150, 0.4, ("cleaning", "housekeeper", "deep_clean", "nanny")),
        "repair": (200, 0.5, ("repair", "plumber", "electrician", "unclog", "aircon_repair")),
        "renovation": (30000, 0.8, ("renovation", "decorator", "tiling", "painting", "design")),
        "tutoring": (150, 0.4, ("tutor", "math", "english", "piano", "exam_coaching")),
        "wedding": (20000, 0.7, ("wedding", "photography", "banquet", "makeup")),
    },
}
TOP_TOKENS = {"housing": ("house", "rental", "property"), "jobs": ("job", "hiring", "salary"),
              "vehicles": ("car", "vehicle"), "goods": ("second_hand", "used", "cheap"),
              "services": ("service", "home_service", "local")}
TITLE_FILLERS = ("urgent", "good_condition", "negotiable", "verified", "new", "discount", "today")
# Per top category: region sensitivity of the click model, conversion base
# rate, purchase-after-conversion rate, mean post lifetime in days.
TOP_PARAMS = {
    "housing": dict(region=1.7, conv=0.16, buy=0.05, life=14.0),
    "jobs": dict(region=1.2, conv=0.20, buy=0.02, life=20.0),
    "vehicles": dict(region=0.7, conv=0.10, buy=0.08, life=18.0),
    "goods": dict(region=0.8, conv=0.12, buy=0.25, life=9.0),
    "services": dict(region=1.5, conv=0.18, buy=0.20, life=30.0),
}


@dataclasses.dataclass
class Taxonomy:
    categories: List[str]          # "top/sub"
    top_of: np.ndarray             # (C,) top index per category
    tops: List[str]
    regions: List[str]
    region_pop: np.ndarray         # (R,) region population share
    cat_pop: np.ndarray            # (C,) prior popularity of categories
    tokens: List[str]              # global token vocabulary
    cat_tokens: List[np.ndarray]   # per category: token ids (sub tokens first)
    price_mu: np.ndarray           # (C,) log median price
    price_sd: np.ndarray
    region_beta: np.ndarray        # (C,)
    conv_base: np.ndarray          # (C,)
    buy_rate: np.ndarray           # (C,)
    life_mean: np.ndarray          # (C,)


def build_taxonomy(rng: np.random.Generator, n_regions: int = 30) -> Taxonomy:
    tops = list(TAXONOMY)
    tokens: List[str] = []
    tok_id: Dict[str, int] = {}

    def tid(t: str) -> int:
        if t not in tok_id:
            tok_id[t] = len(tokens)
            tokens.append(t)
        return tok_id[t]

    regions = [f"r{r:02d}" for r in range(n_regions)]
    for r in regions:
        tid(r)
    cats, top_of, cat_tokens, mu, sd = [], [], [], [], []
    for ti, top in enumerate(tops):
        for sub, (price, psd, toks) in TAXONOMY[top].items():
            cats.append(f"{top}/{sub}")
            top_of.append(ti)
            cat_tokens.append(np.array([tid(t) for t in toks + TOP_TOKENS[top]], dtype=np.int32))
            mu.append(np.log(price))
            sd.append(psd)
    for t in TITLE_FILLERS:
        tid(t)
    top_of_a = np.array(top_of)
    tp = lambda key: np.array([TOP_PARAMS[tops[t]][key] for t in top_of_a])  # noqa: E731
    region_pop = rng.pareto(1.2, n_regions) + 0.3
    cat_pop = rng.lognormal(0.0, 0.6, len(cats))
    return Taxonomy(cats, top_of_a, tops, regions, region_pop / region_pop.sum(),
                    cat_pop / cat_pop.sum(), tokens, cat_tokens, np.array(mu), np.array(sd),
                    tp("region"), tp("conv"), tp("buy"), tp("life"))


@dataclasses.dataclass
class Items:
    cat: np.ndarray        # (N,) int
    region: np.ndarray     # (N,) int
    price: np.ndarray      # (N,) float64
    price_z: np.ndarray    # price relative to the category, in sds
    quality: np.ndarray    # hidden click-appeal
    weight: np.ndarray     # recall popularity weight (long-tailed)
    created: np.ndarray    # unix seconds
    expires: np.ndarray    # unix seconds
    title_tokens: np.ndarray  # (N, 4) token ids


def make_items(rng, tax: Taxonomy, n: int, start_ts: int, days: int, quality_sd: float) -> Items:
    C, R = len(tax.categories), len(tax.regions)
    cat = rng.choice(C, n, p=tax.cat_pop)
    region = rng.choice(R, n, p=tax.region_pop)
    price_z = rng.standard_normal(n)
    price = np.round(np.exp(tax.price_mu[cat] + tax.price_sd[cat] * price_z), 0)
    quality = rng.normal(0.0, quality_sd, n)
    weight = (rng.pareto(1.1, n) + 1.0) ** 1.3 * np.exp(0.6 * quality)
    life = np.maximum(1.5, rng.gamma(2.0, tax.life_mean[cat] / 2.0))
    # creation spread over [-(life - 1), days - 1] days: every post is live sometime
    lo = -(life - 1.0)
    created_day = lo + rng.random(n) * (days - 1.0 - lo)
    created = (start_ts + created_day * 86400).astype(np.int64)
    expires = created + (life * 86400).astype(np.int64)
    # title: 3 distinct category tokens and a filler word
    ntok = np.array([len(t) for t in tax.cat_tokens])
    keys = rng.random((n, ntok.max()))
    keys[np.arange(ntok.max())[None, :] >= ntok[cat][:, None]] = 2.0
    pick = np.argsort(keys, axis=1)[:, :3]  # 3 distinct tokens of the category
    flat = np.concatenate(tax.cat_tokens)
    off = np.concatenate([[0], np.cumsum(ntok)[:-1]])
    title = flat[off[cat][:, None] + pick]
    filler = len(tax.tokens) - len(TITLE_FILLERS) + rng.integers(0, len(TITLE_FILLERS), n)
    title = np.concatenate([title, filler[:, None]], axis=1).astype(np.int32)
    return Items(cat, region, price, price_z, quality, weight, created, expires, title)


@dataclasses.dataclass
class Users:
    region: np.ndarray     # (U,) home region
    activity: np.ndarray   # (U,) daily probability of being active
    bias: np.ndarray       # (U,) hidden click propensity (logit offset)
    interest: np.ndarray   # (U, C) unnormalised interest intensities (hidden)
    # continuous drift: the interests at the end of the day starting at ``day_start``;
    # in between, a user's interests move linearly from ``interest`` to ``interest_next``
    interest_next: Optional[np.ndarray] = None
    day_start: int = 0

    def rows(self, user_idx: np.ndarray, ts: Optional[np.ndarray] = None) -> np.ndarray:
        """Interest rows of users, at times ``ts`` under continuous drift."""
        if self.interest_next is None or ts is None:
            return self.interest[user_idx]
        w = np.clip((np.asarray(ts, dtype=np.float64) - self.day_start) / 86400.0, 0.0, 1.0)[:, None]
        return (1.0 - w) * self.interest[user_idx] + w * self.interest_next[user_idx]


def make_users(rng, tax: Taxonomy, n: int, activity: float) -> Users:
    C = len(tax.categories)
    region = rng.choice(len(tax.regions), n, p=tax.region_pop)
    act = np.minimum(0.95, activity * np.exp(rng.normal(-0.5, 1.0, n)))
    bias = rng.normal(0.0, 0.15, n)
    interest = np.zeros((n, C))
    k = 1 + np.minimum(rng.poisson(1.0, n), 3)
    for j in range(4):
        rows = np.nonzero(k > j)[0]
        c = rng.choice(C, rows.size, p=tax.cat_pop)
        interest[rows, c] += rng.gamma(2.0, 1.0, rows.size)
    interest /= interest.sum(1, keepdims=True)
    return Users(region, act, bias, interest)


def drift_interests(rng, tax: Taxonomy, users: Users, shift_rate: float, walk_sd: float = 0.25,
                    a: Optional[np.ndarray] = None) -> None:
    """One day of interest evolution: a log-normal random walk on every active
    interest, decay of old ones, and occasional shifts to a new category
    (half the time a sibling of the current main interest).  Acts in place on
    ``a`` (default: ``users.interest``)."""
    a = users.interest if a is None else a
    n, C = a.shape
    a *= np.exp(rng.normal(-0.05, walk_sd, a.shape))
    shift = np.nonzero(rng.random(n) < shift_rate)[0]
    if shift.size:
        main = a[shift].argmax(1)
        new = rng.choice(C, shift.size, p=tax.cat_pop)
        sib = rng.random(shift.size) < 0.5
        same_top = tax.top_of[main]
        # a random sibling of the main interest's top category
        sib_pick = np.array([rng.choice(np.nonzero(tax.top_of == t)[0]) for t in range(len(tax.tops))])
        new = np.where(sib, sib_pick[same_top], new)
        a[shift, new] += rng.uniform(0.6, 1.5, shift.size) * a[shift].max(1)
        drop = rng.random(shift.size) < 0.5
        a[shift[drop], main[drop]] *= 0.3
    a[a < 1e-3] = 0.0
    a /= a.sum(1, keepdims=True)


def interest_share(users: Users, tax: Taxonomy, user_idx: np.ndarray, cat: np.ndarray,
                   floor: float = 0.02, ts: Optional[np.ndarray] = None) -> np.ndarray:
    """Hidden current interest of users in categories (at times ``ts`` under
    continuous drift): own share plus a spill-over from sibling categories of
    the same top category."""
    rows = users.rows(user_idx, ts)
    C = rows.shape[1]
    own = rows[np.arange(len(user_idx)), cat]
    tops = tax.top_of
    top_mat = np.zeros((C, len(tax.tops)))
    top_mat[np.arange(C), tops] = 1.0
    top_share = (rows @ top_mat)[np.arange(len(user_idx)), tops[cat]]
    return own + 0.25 * (top_share - own) + floor


@dataclasses.dataclass
class ClickModel:
    base: float = -5.5
    interest: float = 2.8       # times sqrt(interest share)
    quality: float = 1.0
    price: float = -0.15        # per price sd within the category
    noise_sd: float = 0.2

    def logit(self, rng, tax: Taxonomy, items: Items, users: Users, user_idx: np.ndarray,
              item_idx: np.ndarray, ts: Optional[np.ndarray] = None) -> np.ndarray:
        """The aggregate part of the true click logit: interest share (as of ``ts``),
        region match, quality, price, user bias and noise; no order-carrying term."""
        cat = items.cat[item_idx]
        share = interest_share(users, tax, user_idx, cat, ts=ts)
        match = items.region[item_idx] == users.region[user_idx]
        return (self.base + self.interest * np.sqrt(share) + tax.region_beta[cat] * match
                + self.quality * items.quality[item_idx] + self.price * items.price_z[item_idx]
                + users.bias[user_idx] + rng.normal(0.0, self.noise_sd, len(item_idx)))

    def p_click(self, rng, tax: Taxonomy, items: Items, users: Users, user_idx: np.ndarray,
                item_idx: np.ndarray, ts: Optional[np.ndarray] = None,
                extra: Optional[np.ndarray] = None) -> np.ndarray:
        """True click probabilities; ``extra`` adds the mechanisms' logit terms."""
        logit = self.logit(rng, tax, items, users, user_idx, item_idx, ts=ts)
        if extra is not None:
            logit = logit + extra
        return sigmoid(logit)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x))."""
    return 1.0 / (1.0 + np.exp(-x))
