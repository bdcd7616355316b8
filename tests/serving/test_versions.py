"""Time-versioned attributes online: the loader stores every row of an id with its
``valid_from``, and a reader at a second gets the example generator's row
(`feedrank.examples.snapshots`): the greatest ``valid_from <= t``, none before the
first, a future-dated row only from its time on."""
from __future__ import annotations

import pandas as pd

from feedrank import features as F
from serving.features import online, redis_layout, versions, writer
from tests.helpers.redis_stack import redis_server  # noqa: F401 (fixture)

T = 1_700_000_000
ITEMS = pd.DataFrame({"item_id": ["a", "a", "b", "c", "c", "d"],
                      "category_id": ["a0", "a1", "b0", "c0", "c_future", "d0"],
                      "region_id": ["r"] * 6, "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                      "valid_from": [float("nan"), T + 100, T + 50, float("nan"), T + 10**8, float("nan")]})
USERS = pd.DataFrame({"user_id": ["u", "u", "u", "v"], "region_id": ["r_old", "r_new", "r_twin", "rv"],
                      "valid_from": [float("nan"), T + 100, T + 100, float("nan")]})


def test_timeline_picks_the_row_valid_at_a_second():
    tl = versions.Timeline([(None, "x"), (10, "y"), (20, "z")])
    assert [tl.at(t) for t in (0, 9, 10, 19, 20, 10**9)] == ["x", "x", "y", "y", "z", "z"]
    assert versions.Timeline([(10, "y")]).at(9) is None
    assert versions.row_at([], 5) is None


def test_the_store_reads_each_row_at_its_time(redis_server):  # noqa: F811
    client, keys = redis_server.client(), redis_layout.Keys("ver")
    writer.flush(client, keys)
    writer.load_items(client, keys, ITEMS)
    writer.load_users(client, keys, USERS)
    raw = client.hgetall(keys.items)
    # one row valid from the beginning is stored as before; any other post as its versions
    assert raw["d"] == redis_layout.encode_item("d0", "r", 6.0)
    assert redis_layout.decode_item_versions(raw["b"]) == [(T + 50, (("b0", "r", 3.0), {}))]
    store = online.ItemStore.from_hash(raw)
    cats = {t: [store.as_of(T + t).attribute(i, "category_id") for i in "abc"] for t in (0, 60, 100)}
    # a: NaN row, then a1 from +100; b: nothing before +50; c: the future-dated row never yet
    assert cats == {0: ["a0", "", "c0"], 60: ["a0", "b0", "c0"], 100: ["a1", "b0", "c0"]}
    assert [store.as_of(T).price(i) for i in "abc"] == [1.0, F.PRICE.default, 4.0]
    assert store.as_of(T + 10**8).attribute("c", "category_id") == "c_future"
    assert "b" in store and store.missing(["a", "b", "zz"]) == ["zz"]
    # users: the region at the second; of two rows with the same time, the first in file order
    for t, want in ((0, "r_old"), (100, "r_new")):
        pipe = client.pipeline()
        online.queue_reads(pipe, keys, "u", ["a"], T + t)
        assert online.parse_reads(pipe.execute(), T + t)[0].region == want
    assert versions.decode_user_region(client.hget(keys.users, "v")) == [(None, "rv")]
