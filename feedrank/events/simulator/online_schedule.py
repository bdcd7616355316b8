"""The traffic plan of an online run: which users request when.

``users`` users are drawn without replacement with probability proportional to
their hidden daily activity (the users who use the app); each makes one
request plus a share of the rest of ``requests`` proportional to the same
activity.  A user's requests are cut into sessions (a new session after a
request with probability 1/3), each session starts on one of the ``days``
days after the log at an hour drawn from the batch simulator's daily profile,
and within a session the requests follow each other after 10 s plus an
exponential gap of mean 45 s (as the batch's actions) - and never before the
user's events of the previous request (they come back to the feed after the
post's page).  Everything is drawn from ``PCG64([seed, 1])``: the plan depends
on the seed and the world only.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import List

import numpy as np

from feedrank.events.simulator.browsing import HOUR_PROFILE

log = logging.getLogger(__name__)

NEW_SESSION = 1.0 / 3.0
GAP_MIN_S, GAP_MEAN_S = 10.0, 45.0


@dataclasses.dataclass(frozen=True)
class Planned:
    """One planned feed request (``index``: its number in the run, 0-based)."""
    index: int
    user: int
    gap_s: int     # after the previous request of its session (0 for the first)


@dataclasses.dataclass
class Session:
    user: int
    start: int     # unix seconds
    requests: List[Planned]


def plan(world, n_users: int, n_requests: int, days: int, seed: int) -> List[List[Session]]:
    """Sessions per online day (day 0 starts at the log's end), each day's sorted by start."""
    activity = world.sim.users.activity
    if not 1 <= n_users <= len(activity):
        raise ValueError(f"users must be in 1..{len(activity)} (the world's users), got {n_users}")
    if n_requests < n_users:
        raise ValueError(f"requests ({n_requests}) must be at least users ({n_users}): every user requests")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    rng = np.random.Generator(np.random.PCG64([seed, 1]))
    users = np.sort(rng.choice(len(activity), n_users, replace=False, p=activity / activity.sum()))
    w = activity[users] / activity[users].sum()
    counts = 1 + rng.multinomial(n_requests - n_users, w)
    out: List[List[Session]] = [[] for _ in range(days)]
    index = 0
    for user, k in zip(users, counts):
        cut = np.concatenate([[True], rng.random(k - 1) < NEW_SESSION])   # a request opening a session
        gaps = (GAP_MIN_S + rng.exponential(GAP_MEAN_S, k)).astype(np.int64)
        n_sess = int(cut.sum())
        day = rng.integers(0, days, n_sess)
        start = (world.end_ts + day * 86400 + rng.choice(24, n_sess, p=HOUR_PROFILE) * 3600
                 + rng.integers(0, 3600, n_sess))
        order = np.argsort(start, kind="stable")
        sess_of = np.cumsum(cut) - 1
        for rank, s in enumerate(order):
            idx = np.nonzero(sess_of == rank)[0]   # the user's sessions take their requests in time order
            reqs = [Planned(index + int(i), int(user), 0 if i == idx[0] else int(gaps[i])) for i in idx]
            out[int(day[s])].append(Session(int(user), int(start[s]), reqs))
        index += int(k)
    for sessions in out:
        sessions.sort(key=lambda s: (s.start, s.user))
    log.info("planned %d requests of %d users in %d sessions over %d day(s)", n_requests, n_users,
             sum(len(d) for d in out), days)
    return out
