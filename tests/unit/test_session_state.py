"""The session endpoint's state rule without Redis (`serving.sessions.state`): the gap
boundary as the sessionizer draws it, and the model inputs' dwell (`sessionize.page_dwell`)
from a hand-made state."""
from __future__ import annotations

import pytest

from feedrank.sessions import sessionize
from serving.sessions import state as st

T0 = 1_750_000_000


def _view(eid: str, page: str, ts: int, dwell: float = 0.0, sid: str = "") -> sessionize.Event:
    return sessionize.Event(eid, "u", page, "view", ts, dwell, sid)


def _cart(eid: str, item: str, ts: int) -> sessionize.Event:
    return sessionize.Event(eid, "u", item, "purchase", ts)


def _hand_made_state() -> dict:
    """Views x0 @T0, c1 @T0+30, i2 @T0+100 (logged dwell 99, 99, 40), a cart of i2 @T0+110,
    and one earlier session's cart i9."""
    return {"events": [["a", "view", "x0", T0, 99.0, ""], ["b", "view", "c1", T0 + 30, 99.0, ""],
                       ["c", "view", "i2", T0 + 100, 40.0, ""], ["d", "purchase", "i2", T0 + 110, 0.0, ""]],
            "start": T0, "sid": f"u:{T0}", "hist": [["i9", T0 - 86_400]]}


@pytest.mark.parametrize("pause, outcome", [(1799, st.APPLIED), (1800, st.APPLIED), (1801, st.NEW_SESSION)])
def test_only_a_pause_longer_than_the_gap_starts_a_session(pause, outcome):
    cfg = st.StateConfig()
    s, first = st.apply(st.empty(), _view("a", "x0", T0), cfg)
    s, got = st.apply(s, _view("b", "c1", T0 + pause), cfg)
    assert (first, got) == (st.NEW_SESSION, outcome)
    assert len(s["events"]) == (2 if outcome == st.APPLIED else 1)


def test_model_inputs_dwell_is_the_time_to_the_next_view_and_the_current_dwell():
    state = _hand_made_state()
    pages, dwell, hist = st.model_inputs(state, st.StateConfig(), current_s=3.5)
    assert pages == ["x0", "c1", "i2"] and dwell == [30.0, 70.0, 3.5] and hist == ["i9"]
    assert st.model_inputs(state, st.StateConfig())[1] == [30.0, 70.0, 0.0]   # at page open


def test_model_inputs_window_keeps_the_first_kept_pages_gap_to_the_next_view():
    pages, dwell, _ = st.model_inputs(_hand_made_state(), st.StateConfig(max_pages=2), current_s=3.5)
    assert pages == ["c1", "i2"] and dwell == [70.0, 3.5]


def test_current_dwell_of_a_view_and_of_an_add_to_cart():
    state = _hand_made_state()
    assert st.current_dwell(state, _view("e", "i3", T0 + 120, dwell=12.5)) == 12.5
    assert st.current_dwell(state, _view("e", "i3", T0 + 120, dwell=float("nan"))) == 0.0
    assert st.current_dwell(state, _cart("f", "i2", T0 + 130)) == 30.0       # T0+130 - the view at T0+100
    assert st.current_dwell(st.empty(), _cart("f", "i2", T0 + 130)) == 0.0   # no view in the session


def test_an_add_to_cart_request_gives_the_current_page_its_time_since_the_view():
    cfg = st.StateConfig()
    s = st.empty()
    for e in (_view("a", "x0", T0, dwell=50.0), _view("b", "i2", T0 + 20, dwell=50.0)):
        s, _ = st.apply(s, e, cfg)
    cart = _cart("c", "i2", T0 + 45)
    s, outcome = st.apply(s, cart, cfg)
    assert outcome == st.APPLIED
    assert st.model_inputs(s, cfg, st.current_dwell(s, cart)) == (["x0", "i2"], [20.0, 25.0], [])


def test_a_negative_current_dwell_is_a_clear_error():
    with pytest.raises(ValueError, match="the current page's dwell must be a number >= 0 seconds"):
        st.model_inputs(_hand_made_state(), st.StateConfig(), current_s=-1.0)
