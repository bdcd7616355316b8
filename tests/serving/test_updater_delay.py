"""The feature updater's staleness knob (``--delay-s``) against a real Redis: an
event is applied only once the stream's event-time watermark has passed its
ts + delay, held events stay unacknowledged and survive a restart, and a delay
of 0 is the plain updater."""
from __future__ import annotations

import subprocess
import sys

import pytest

from feedrank.events import contract, stream
from serving.features import redis_layout, updater, writer
from tests.helpers.redis_stack import redis_server  # noqa: F401 (fixture)
from tests.serving.test_feature_updater import ITEMS, T0, _ev, _read


@pytest.fixture()
def ns(redis_server):  # noqa: F811
    """An empty namespace with the items loaded, an empty stream, and the client."""
    client = redis_server.client()
    keys = redis_layout.Keys("d")
    writer.flush(client, keys)
    writer.load_items(client, keys, ITEMS)
    client.delete("d:events")
    return client, keys


def _updater(client, keys, delay_s, consumer="c1"):
    return updater.Updater(stream.RedisStreamSource(client, "d:events", "g", consumer),
                           writer.FeatureWriter(client, keys), batch=100, block_ms=0, delay_s=delay_s)


def _counts(client, keys, item="i0"):
    _, imp, clk = _read(client, keys, items=[item])
    return imp[0], clk[0]


def test_events_wait_for_the_watermark(ns):
    client, keys = ns
    up = _updater(client, keys, delay_s=60)
    stream.publish(client, [_ev("a1", "impression", 100), _ev("a2", "click", 110)], "d:events")
    assert up.step() == 2
    assert _counts(client, keys) == (0.0, 0.0) and up.held == 2 and up.watermark == T0 + 110
    assert client.xpending("d:events", "g")["pending"] == 2          # held events are not acknowledged
    # another user's event at 165 moves the watermark past 100 + 60, not past 110 + 60
    stream.publish(client, [_ev("b1", "impression", 165, user="u2", item="i1")], "d:events")
    assert up.step() == 1
    assert _counts(client, keys) == (1.0, 0.0) and up.held == 2
    assert client.xpending("d:events", "g")["pending"] == 2
    stream.publish(client, [_ev("b2", "impression", 225, user="u2", item="i1")], "d:events")
    up.step()
    assert _counts(client, keys) == (1.0, 1.0)
    assert _counts(client, keys, "i1") == (1.0, 0.0)                 # b1 (165 + 60 <= 225) is in, b2 is held
    assert up.held == 1 and client.xpending("d:events", "g")["pending"] == 1
    user, _, _ = _read(client, keys)
    assert user.channels["click"] == ["i0"]


def test_held_events_survive_a_restart_and_count_once(ns):
    client, keys = ns
    stream.publish(client, [_ev("r1", "impression", 10), _ev("r2", "click", 20), _ev("r1", "impression", 10)],
                   "d:events")
    first = _updater(client, keys, delay_s=30)
    assert first.step() == 3 and first.held == 3
    restarted = _updater(client, keys, delay_s=30)                   # same consumer: re-reads its pending entries
    assert restarted.step() == 3 and restarted.held == 3
    assert restarted.step() == 0                                     # once each, then the new entries
    stream.publish(client, [_ev("r3", "impression", 50, user="u2", item="i1")], "d:events")
    assert restarted.step() == 1
    assert _counts(client, keys) == (1.0, 1.0)                       # the duplicate r1 counted once
    assert restarted.held == 1 and client.xpending("d:events", "g")["pending"] == 1


def test_zero_delay_is_the_plain_updater(ns, redis_server):  # noqa: F811
    client, keys = ns
    events = [_ev("z1", "impression", 100), _ev("z2", "click", 5000), _ev("z3", "impression", 50, item="i1")]
    stream.publish(client, events, "d:events")
    up = _updater(client, keys, delay_s=0)
    assert up.step() == 3 and up.held == 0 and up.watermark is None  # applied at once, out of order too
    assert _counts(client, keys) == (1.0, 1.0) and _counts(client, keys, "i1") == (1.0, 0.0)
    assert client.xpending("d:events", "g")["pending"] == 0
    with pytest.raises(ValueError, match="delay_s must be >= 0"):
        _updater(client, keys, delay_s=-1)


def test_an_unparsable_ts_is_released_at_once_and_rejected(ns):
    client, keys = ns
    stream.publish(client, [_ev("x1", "click", "soon"), _ev("x2", "impression", 10)], "d:events")
    w = writer.FeatureWriter(client, keys)
    up = updater.Updater(stream.RedisStreamSource(client, "d:events", "g", "c1"), w, batch=100, block_ms=0,
                         delay_s=5)
    up.step()
    assert w.stats[f"rejected_{contract.BAD_TS}"] == 1 and up.held == 1
    assert client.xpending("d:events", "g")["pending"] == 1


def test_delay_option_of_the_command(ns, redis_server):  # noqa: F811
    client, keys = ns
    stream.publish(client, [_ev("k1", "impression", 5, item="i3"), _ev("k2", "click", 100, item="i3")],
                   "d:events")
    cmd = [sys.executable, "-m", "serving.features.updater", "--redis", redis_server.url, "--prefix", "d",
           "--stream", "d:events", "--group", "cli", "--block-ms", "100", "--idle-exit-s", "0.5"]
    run = subprocess.run(cmd + ["--delay-s", "60"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "delayed 60 s in event time" in run.stderr
    # the impression (5 + 60 <= 100) is applied, the click waits for a later event
    assert (client.hget(keys.impressions, "i3"), client.hget(keys.clicks, "i3")) == ("1", None)
    bad = subprocess.run(cmd + ["--delay-s", "-3"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--delay-s must be >= 0" in bad.stderr and "Traceback" not in bad.stderr
    helptext = subprocess.run(cmd[:3] + ["--help"], capture_output=True, text=True, timeout=60)
    assert "--delay-s" in helptext.stdout
