"""Sessionization in Beam (DirectRunner): a pause under, at and just over the gap (only
a pause longer than the gap ends a session), a new session id, events arriving out of
order, agreement with the plain-Python rule, and the model's page dwell (`page_dwell`)."""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from typing import List

import apache_beam as beam
import pytest

from feedrank.sessions import sessionize as S
from feedrank.sessions.sessionize import Event


def _view(eid: str, user: str, page: str, ts: int, dwell: float = 5.0, sid: str = "") -> Event:
    return Event(eid, user, page, "view", ts, dwell, sid)


def _cart(eid: str, user: str, item: str, ts: int, sid: str = "") -> Event:
    return Event(eid, user, item, "purchase", ts, float("nan"), sid)


def _run(events: List[Event], gap_s: int = S.DEFAULT_GAP_S) -> List[S.Session]:
    """Runs `Sessionize` on the DirectRunner and returns the sessions, sorted."""
    out_dir = tempfile.mkdtemp(prefix="sessionize")
    with beam.Pipeline(runner="DirectRunner") as p:
        _ = (p | beam.Create(events) | S.Sessionize(gap_s) | beam.Map(_row) | beam.Map(json.dumps)
             | beam.io.WriteToText(os.path.join(out_dir, "sessions"), num_shards=1))
    got = []
    for name in os.listdir(out_dir):
        with open(os.path.join(out_dir, name)) as f:
            got += [tuple(json.loads(line)) for line in f]
    shutil.rmtree(out_dir)
    return sorted(got)


def _row(s: S.Session) -> tuple:
    return (s.user_id, s.start_ts, [p.page_id for p in s.pages],
            [[c.item_id, c.pages_before] for c in s.purchases], s.session_id, [p.dwell_s for p in s.pages])


def _shape(sessions) -> List[List[str]]:
    return [s[2] for s in sorted(sessions)]


def test_a_pause_of_exactly_the_gap_keeps_the_session():
    ev = [_view("a", "u", "x0", 1000), _view("b", "u", "c01", 1000 + 1800)]
    assert _shape(_run(ev)) == [["x0", "c01"]]


def test_a_pause_one_second_over_the_gap_ends_the_session():
    ev = [_view("a", "u", "x0", 1000), _view("b", "u", "c01", 1000 + 1801)]
    assert _shape(_run(ev)) == [["x0"], ["c01"]]


def test_a_pause_just_under_the_gap_keeps_the_session():
    ev = [_view("a", "u", "x0", 1000), _view("b", "u", "c01", 1000 + 1799)]
    assert _shape(_run(ev)) == [["x0", "c01"]]


def test_beam_and_the_plain_rule_agree_at_the_gap_boundary():
    """Pauses of gap - 1, gap and gap + 1 s (three users), at the default and a configured gap:
    only gap + 1 cuts, in Beam and in `split_sessions`."""
    for gap in (S.DEFAULT_GAP_S, 600):
        ev = []
        for user, pause in (("under", gap - 1), ("at", gap), ("over", gap + 1)):
            ev += [_view(f"{user}1", user, "x0", 50), _view(f"{user}2", user, "c01", 50 + pause),
                   _cart(f"{user}3", user, "i1", 50 + pause + pause)]
        plain = sorted(_row(S.build_session(part)) for user in ("under", "at", "over")
                       for part in S.split_sessions([e for e in ev if e.user_id == user], gap))
        assert _run(ev, gap) == plain
        assert [(r[0], r[2], r[3], r[5]) for r in plain] == [
            ("at", ["x0", "c01"], [["i1", 2]], [gap, gap]),
            ("over", ["x0"], [], [0.0]), ("over", ["c01"], [], [0.0]), ("over", [], [["i1", 0]], []),
            ("under", ["x0", "c01"], [["i1", 2]], [gap - 1, gap - 1])]


def test_gap_just_over_and_a_configured_gap():
    ev = [_view("a", "u", "x0", 0), _view("b", "u", "c01", 1801), _view("c", "u", "i1", 1801 + 600)]
    assert _shape(_run(ev)) == [["x0"], ["c01", "i1"]]
    assert _shape(_run(ev, gap_s=599)) == [["x0"], ["c01"], ["i1"]]
    assert _shape(_run(ev, gap_s=600)) == [["x0"], ["c01", "i1"]]
    assert _shape(_run(ev, gap_s=1801)) == [["x0", "c01", "i1"]]


def test_a_new_session_id_ends_the_session_without_a_gap():
    ev = [_view("a", "u", "x0", 0, sid="s1"), _view("b", "u", "c01", 10, sid="s1"),
          _view("c", "u", "x0", 20, sid="s2"), _cart("d", "u", "i7", 25, sid="s2")]
    got = _run(ev)
    assert [(s[2], s[3], s[4]) for s in got] == [(["x0", "c01"], [], "s1"), (["x0"], [["i7", 1]], "s2")]


def test_the_same_session_id_is_still_cut_by_the_gap():
    ev = [_view("a", "u", "x0", 0, sid="s1"), _view("b", "u", "c01", 1801, sid="s1")]
    assert _shape(_run(ev)) == [["x0"], ["c01"]]


def test_out_of_order_events_and_users_apart():
    ev = [_view("e1", "u1", "x0", 100), _view("e2", "u1", "c01", 130), _view("e3", "u1", "i5", 170, dwell=40),
          _cart("e4", "u1", "i5", 200), _view("e5", "u1", "i6", 220),
          _view("f1", "u2", "x0", 120), _view("f2", "u2", "i9", 5000)]
    shuffled = list(ev)
    random.Random(7).shuffle(shuffled)
    got = _run(shuffled)
    assert got == _run(ev)
    assert [(s[0], s[2], s[3]) for s in got] == [
        ("u1", ["x0", "c01", "i5", "i6"], [["i5", 3]]), ("u2", ["x0"], []), ("u2", ["i9"], [])]
    # the model's dwell: the time to the next view (i5: 220 - 170, not the log's 40), the last page 0
    assert [s[5] for s in got] == [[30.0, 40.0, 50.0, 0.0], [0.0], [0.0]]


def test_a_view_and_an_add_to_cart_in_the_same_second():
    ev = [_cart("z", "u", "i5", 100), _view("y", "u", "i5", 100), _view("a", "u", "x0", 90)]
    [s] = [S.build_session(part) for part in S.split_sessions(ev)]
    assert [p.page_id for p in s.pages] == ["x0", "i5"] and s.purchases == (S.Purchase("i5", 100, 2),)
    assert [p.page_type for p in s.pages] == ["index", "item"] and s.session_id == "u:90"
    assert [p.dwell_s for p in s.pages] == [10.0, 0.0]   # the cart comes after the view in its second


def test_the_last_page_dwell_runs_to_the_sessions_last_event():
    ev = [_view("a", "u", "x0", 100, dwell=99.0), _view("b", "u", "i2", 112, dwell=99.0), _cart("c", "u", "i2", 140)]
    [part] = S.split_sessions(ev)
    assert [p.dwell_s for p in S.build_session(part).pages] == [12.0, 28.0]


def test_page_dwell_by_hand():
    assert S.page_dwell([]) == []
    assert S.page_dwell([], current_s=7.0) == []
    assert S.page_dwell([100]) == [0.0]
    assert S.page_dwell([100], current_s=4.5) == [4.5]
    assert S.page_dwell([100, 130, 130, 200]) == [30.0, 0.0, 70.0, 0.0]
    assert S.page_dwell([100, 130, 200], current_s=12.25) == [30.0, 70.0, 12.25]


def test_page_dwell_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="page view timestamps must not decrease, got 130 then 120 at 2"):
        S.page_dwell([100, 130, 120])
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="the current page's dwell must be a number >= 0 seconds"):
            S.page_dwell([100], current_s=bad)


def test_other_event_types_are_not_session_events():
    ev = [_view("a", "u", "x0", 0), Event("b", "u", "i1", "impression", 10), Event("c", "u", "i1", "click", 5000)]
    assert _shape(_run(ev)) == [["x0"]]


def test_beam_matches_the_plain_rule_on_a_random_log():
    rng = random.Random(3)
    ev, t = [], {}
    for i in range(300):
        u = f"u{rng.randrange(6)}"
        t[u] = t.get(u, 0) + rng.choice([5, 60, 900, 1799, 1800, 1801, 7200])
        sid = f"s{t[u] // 20000}" if rng.random() < 0.8 else ""
        kind = "view" if rng.random() < 0.85 else "purchase"
        ev.append(Event(f"e{i:04d}", u, rng.choice(["x0", "c01", "i1", "i2"]), kind, t[u], 3.0, sid))
    by_user = {}
    for e in ev:
        by_user.setdefault(e.user_id, []).append(e)
    expected = []
    for events in by_user.values():
        for part in S.split_sessions(events):
            s = S.build_session(part)
            expected.append(_row(s))
    rng.shuffle(ev)
    assert _run(ev) == sorted(expected)
    assert len(expected) > 30


def test_bad_gap_is_a_clear_error():
    for bad in (0, -5, 1.5, "1800"):
        with pytest.raises(ValueError, match="session gap must be a positive number of seconds"):
            S.Sessionize(bad)
