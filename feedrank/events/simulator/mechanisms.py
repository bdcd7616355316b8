"""Order-carrying behaviour mechanisms of the simulated world, as knobs.

Each mechanism adds a term to the hidden click logit that depends on *when*
and *in which order* things happened (see docs/simulator.md), and most also
shape behaviour so that the log shows what drives the term:

- ``mission``: a session pursues one category, region and price band;
- ``search_intent``: a session's searches lift its feed clicks in the searched category;
- ``funnel``: a conversion in a category lifts related categories over the next days;
- ``satiation``: a conversion in a category lowers clicks in it for some hours;
- ``revisit``: re-shown posts viewed but not contacted are clicked more;
- ``continuous_drift``: interests move within the day, not in daily steps;
- ``position_bias``: lower positions of a request are clicked less (the position is logged).

All knobs at zero (:data:`OFF`, the default) is the world without them: the
simulator then draws exactly the same random numbers as without this module.
:data:`REALISTIC` turns all of them on with the committed effect sizes.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Dict, List, Tuple, Union

import numpy as np

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Mechanisms:
    """Effect sizes are additive terms of the click logit (natural log-odds)."""
    # session missions: a share of sessions pursue one (category, region, price band)
    mission: float = 0.0            # boost at the session start for posts of the mission's category
    mission_region: float = 0.0     # extra boost when the post is also in the mission's region
    mission_price: float = 0.0      # extra boost when the post is also in the mission's price band
    mission_tau_min: float = 10.0   # e-folding time of the mission boost, minutes from the session start
    mission_rate: float = 0.6       # share of sessions with a mission
    mission_focus: float = 0.7      # share of a mission session's browsing/searches in the mission
    # search-to-feed intent
    search_intent: float = 0.0      # boost for feed posts of a category searched earlier in the session
    search_tau_min: float = 15.0    # e-folding time after the search, minutes
    # funnels across categories (FUNNELS) after a conversion
    funnel: float = 0.0             # boost for the funnel's target categories after a source conversion
    funnel_tau_days: float = 3.0    # e-folding time after the conversion, days
    funnel_interest: float = 0.3    # interest added to the targets (share of the user's top interest)
    # satiation after a conversion, revisits of viewed posts
    satiation: float = 0.0          # drop for the converted category right after a conversion
    satiation_tau_h: float = 6.0
    revisit: float = 0.0            # boost for a re-shown post the user viewed and did not contact
    revisit_tau_h: float = 48.0
    revisit_recall: float = 0.1     # share of feed slots re-showing such posts (last 3 days)
    # interest drift in continuous time: interests move linearly from one day's state to the next's
    continuous_drift: bool = False
    # position bias within a request: logit -= position_bias * ln(1 + position), position 0-based
    position_bias: float = 0.0
    log_position: bool = False      # write the ``position`` column of impressions

    @property
    def active(self) -> bool:
        """Whether any mechanism changes the world (logging the position alone does not)."""
        return bool(self.mission or self.search_intent or self.funnel or self.satiation
                    or self.revisit or self.continuous_drift or self.position_bias)


OFF = Mechanisms()
# The committed effect sizes (docs/simulator.md says why each size).
REALISTIC = Mechanisms(mission=1.0, mission_region=0.4, mission_price=0.3, search_intent=0.8,
                       funnel=1.0, satiation=1.0, revisit=0.8, continuous_drift=True,
                       position_bias=0.3, log_position=True)
# mechanism name -> the fields it takes from REALISTIC when switched on alone
SWITCHES: Dict[str, Tuple[str, ...]] = {
    "mission": ("mission", "mission_region", "mission_price"),
    "search_intent": ("search_intent",),
    "funnel": ("funnel",),
    "satiation": ("satiation",),
    "revisit": ("revisit",),
    "continuous_drift": ("continuous_drift",),
    "position_bias": ("position_bias", "log_position"),
    "log_position": ("log_position",),
}
PRESETS = ("off", "realistic")

# Funnels over the taxonomy: source category -> (target category, same region as the source post).
# "jobs/*" stands for every jobs sub-category.
FUNNELS: Dict[str, Tuple[Tuple[str, bool], ...]] = {
    "housing/rent": (("goods/furniture", False), ("services/moving", False),
                     ("services/cleaning", False), ("goods/appliances", False)),
    "housing/shared": (("goods/furniture", False), ("services/moving", False)),
    "housing/sale_new": (("services/renovation", False), ("goods/furniture", False),
                         ("goods/appliances", False), ("services/moving", False)),
    "housing/sale_used": (("services/renovation", False), ("services/moving", False),
                          ("goods/furniture", False)),
    "jobs/*": (("housing/rent", True), ("housing/shared", True)),
    "vehicles/used_car": (("services/repair", False),),
    "services/wedding": (("housing/rent", False), ("goods/furniture", False)),
}


def name_of(fields: Dict) -> str:
    """A short name of a mechanisms setting given as a dict of fields: a preset's name,
    else the non-default fields."""
    m = Mechanisms(**{k: v for k, v in fields.items() if k in Mechanisms.__dataclass_fields__})
    for name, preset in (("off", OFF), ("realistic", REALISTIC)):
        if m == preset:
            return name
    return ",".join(f"{k}={v}" for k, v in dataclasses.asdict(m).items() if v != getattr(OFF, k)) or "off"


def describe() -> str:
    """The accepted values of a mechanisms spec, for error messages."""
    return f"one of {list(PRESETS)} or a comma-separated list of {list(SWITCHES)}"


def parse(spec: Union[None, str, Dict, Mechanisms]) -> Mechanisms:
    """Mechanisms from ``"off"``, ``"realistic"``, ``"mission,funnel"`` (those on with
    the committed sizes), a dict of field values, or a :class:`Mechanisms`.

    Raises:
      ValueError: naming the unknown preset, mechanism or field.
    """
    if spec is None:
        return OFF
    if isinstance(spec, Mechanisms):
        return spec
    if isinstance(spec, dict):
        fields = {f.name for f in dataclasses.fields(Mechanisms)}
        unknown = sorted(set(spec) - fields)
        if unknown:
            raise ValueError(f"unknown mechanism field(s) {unknown}; allowed: {sorted(fields)}")
        return Mechanisms(**spec)
    if not isinstance(spec, str):
        raise ValueError(f"mechanisms must be {describe()}, got {spec!r}")
    s = spec.strip().lower()
    if s in ("", "off", "none"):
        return OFF
    if s == "realistic":
        return REALISTIC
    names = [n.strip() for n in s.split(",") if n.strip()]
    unknown = [n for n in names if n not in SWITCHES]
    if unknown:
        raise ValueError(f"unknown mechanism(s) {unknown} in {spec!r}; mechanisms must be {describe()}")
    on = {f: getattr(REALISTIC, f) for n in names for f in SWITCHES[n]}
    return Mechanisms(**on)


def funnel_table(categories: List[str]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FUNNELS as arrays over category indices: (source, target, same_region)."""
    index = {c: i for i, c in enumerate(categories)}
    src, dst, same = [], [], []
    for source, targets in FUNNELS.items():
        if source.endswith("/*"):
            top = source[:-1]
            sources = [index[c] for c in categories if c.startswith(top)]
        else:
            sources = [index[source]]
        for s in sources:
            for target, same_region in targets:
                src.append(s)
                dst.append(index[target])
                same.append(same_region)
    return np.array(src, np.int64), np.array(dst, np.int64), np.array(same, bool)


def last_before(ev_key: np.ndarray, ev_ts: np.ndarray, q_key: np.ndarray, q_ts: np.ndarray) -> np.ndarray:
    """For each query, the latest ``ev_ts`` with the same key strictly before ``q_ts``; -1 if none."""
    out = np.full(len(q_key), -1, dtype=np.int64)
    if len(ev_key) == 0 or len(q_key) == 0:
        return out
    base = int(min(ev_ts.min(), q_ts.min()))
    uk, inv = np.unique(ev_key, return_inverse=True)
    comb = np.sort(inv.astype(np.int64) * (1 << 32) + (ev_ts.astype(np.int64) - base))
    qi = np.minimum(np.searchsorted(uk, q_key), len(uk) - 1)
    found = uk[qi] == q_key
    qc = qi.astype(np.int64) * (1 << 32) + (q_ts.astype(np.int64) - base)
    pos = np.searchsorted(comb, qc, "left") - 1
    ok = found & (pos >= 0)
    ok[ok] = (comb[pos[ok]] >> 32) == qi[ok]
    out[ok] = (comb[pos[ok]] & ((1 << 32) - 1)) + base
    return out


def decay(now: np.ndarray, then: np.ndarray, tau_s: float) -> np.ndarray:
    """exp(-(now - then) / tau) where ``then`` >= 0, else 0."""
    ok = then >= 0
    return np.where(ok, np.exp(-np.maximum(now - then, 0) / tau_s), 0.0)


def price_band(price_z: np.ndarray) -> np.ndarray:
    """Price terciles within the category: 0 low, 1 middle, 2 high."""
    return np.digitize(price_z, [-0.4307, 0.4307])
