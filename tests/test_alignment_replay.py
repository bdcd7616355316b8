"""Offline/online alignment: a simulated log replayed through the stream and
the updater gives, at every impression, the same raw features (sequences,
post counters, crosses, attributes) as the example generator's example."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feedrank import features as F
from feedrank.events import contract
from serving.features import replay, schema
from tests import examplegen_helpers as H
from tests.redis_helpers import redis_server  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    """A simulated log plus the hard cases: events at exactly an impression's
    second (a click on the impressed item, a search, a conversion, another
    user's click and impression of the same item), duplicate event ids and
    rows the example generator quarantines."""
    d = H.make_log(str(tmp_path_factory.mktemp("log")))
    ev = H.load(d)
    imps = ev[ev.event == contract.IMPRESSION].sample(60, random_state=1)
    other = ev.user_id.iloc[0]
    extra = []
    for j, r in enumerate(imps.itertuples()):
        base = dict(request_id="", query="", dwell_s=np.nan, ts=r.ts)
        extra += [dict(base, event_id=f"tie{j}a", user_id=r.user_id, item_id=r.item_id, event="click"),
                  dict(base, event_id=f"tie{j}b", user_id=r.user_id, item_id="", event="search",
                       query="tie_token other_token"),
                  dict(base, event_id=f"tie{j}c", user_id=r.user_id, item_id=r.item_id, event="conversion"),
                  dict(base, event_id=f"tie{j}d", user_id=other, item_id=r.item_id, event="click"),
                  dict(base, event_id=f"tie{j}e", user_id=other, item_id=r.item_id, event="impression")]
    dups = ev.sample(30, random_state=2).assign(ts=lambda x: x.ts + 5)      # later copies: dropped
    bad = ev.sample(10, random_state=3).assign(event_id=lambda x: "bad" + x.event_id,
                                                item_id="no_such_post", event="click")
    ev = pd.concat([ev, pd.DataFrame(extra), dups, bad], ignore_index=True)
    H.save(ev, d)
    return d


@pytest.fixture(scope="module")
def offline(log_dir):
    """The example generator's examples of the log (computed once)."""
    return replay.offline_examples(log_dir)


@pytest.fixture(scope="module")
def report(redis_server, log_dir, offline):  # noqa: F811
    return replay.replay(redis_server.client(), log_dir, schema.Keys("align"), offline=offline)


def test_replay_has_zero_mismatches(report, offline):
    assert report.impressions == len(offline[2]) > 1000
    assert report.mismatched == 0, (dict(report.by_feature), report.examples[:2])
    assert report.rate == 0.0
    stats = report.updater_stats
    assert stats[f"rejected_{contract.UNKNOWN_ITEM}"] == 10 and stats["duplicates"] == 30


def test_replay_sees_what_it_compares(offline):
    """The comparison is not vacuous: the features vary."""
    offline = offline[2]
    clicks = [len(ex.get(F.CLICK_ITEMS.name, [])) for ex in offline.values()]
    hist = [ex[F.ITEM_HIST_CLICKS.name][0] for ex in offline.values()]
    assert max(clicks) > 3 and sum(c > 0 for c in clicks) > 100 and max(hist) > 0
    assert len({ex[F.INTEREST_CATEGORY_SHARE.name][0] for ex in offline.values()}) > 5
    assert any(ex[F.REGION_MATCH.name][0] == 1.0 for ex in offline.values())


def test_same_second_leak_is_detected(redis_server, log_dir, offline):  # noqa: F811
    """A reader that applies a second's events before reading it is caught."""
    leaky = replay.replay(redis_server.client(), log_dir, schema.Keys("leak"), naive=True, offline=offline)
    assert leaky.mismatched >= 60
    for name in (F.SEARCH_TOKENS.name, F.CLICK_ITEMS.name, F.CONV_ITEMS.name,
                 F.ITEM_HIST_IMPRESSIONS.name, F.ITEM_HIST_CLICKS.name):
        assert leaky.by_feature[name] >= 60, dict(leaky.by_feature)
