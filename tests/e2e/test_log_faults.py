"""Faults in the files of a log: a truncated Parquet file and a malformed CSV fail
with one line naming the file (in the run summary too); bytes that are not UTF-8
quarantine only their rows; a quarantined row keeps every column it came with."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedrank.evaluate.summary import pipeline_failure
from feedrank.events import contract, io
from tests.helpers import examplegen as H


@pytest.fixture
def log(base_log, tmp_path):   # base_log: tests/conftest.py
    return H.copy_log(base_log, str(tmp_path / "log"))


def _truncate(path: str, keep: float = 0.5) -> None:
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


def _accounting_ok(res, n_read):
    assert res["events_read"] == n_read == res["events_used"] + res["quarantined"]
    assert res["quarantined"] == sum(res["quarantined_by_reason"].values())


# --------------------------------------------------------------------------
# Unreadable files: one line naming the file
# --------------------------------------------------------------------------
@pytest.mark.parametrize("table", [contract.EVENTS, contract.ITEMS])
def test_truncated_parquet_names_the_file(table, log, tmp_path):
    path = os.path.join(log, f"{table}.parquet")
    _truncate(path)
    with pytest.raises(io.UnreadableFileError) as err:
        H.run(log, str(tmp_path / "out"))
    msg = str(err.value)
    assert f"table '{table}': cannot read {path} as Parquet: " in msg and "magic bytes" in msg
    failure = pipeline_failure(err.value)
    assert failure["error"] == "UnreadableFileError" and "\n" not in failure["message"] and path in failure["message"]


def test_truncated_part_of_a_table_directory_names_the_part(log, tmp_path):
    ev = H.load(log)
    os.remove(os.path.join(log, "events.parquet"))
    os.makedirs(os.path.join(log, "events"))
    half = len(ev) // 2
    ev.iloc[:half].to_parquet(os.path.join(log, "events", "part-000.parquet"), index=False)
    bad = os.path.join(log, "events", "part-001.parquet")
    ev.iloc[half:].to_parquet(bad, index=False)
    _truncate(bad, 0.9)
    with pytest.raises(io.UnreadableFileError, match=f"cannot read {bad} as Parquet"):
        H.run(log, str(tmp_path / "out"))


def test_corrupt_row_group_fails_naming_the_file(log, tmp_path):
    """A file whose footer is intact but whose data pages are not: the error comes from
    inside the Beam graph and still names the file."""
    path = os.path.join(log, "events.parquet")
    pq.write_table(pa.Table.from_pandas(H.load(log), preserve_index=False), path, compression="snappy")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:   # scramble the start of the first data page, keep the footer
        f.seek(64)
        f.write(os.urandom(min(4096, size // 4)))
    with pytest.raises(io.UnreadableFileError) as err:
        H.run(log, str(tmp_path / "out"))
    assert f"table 'events': cannot read {path} as Parquet: " in str(err.value)
    assert "\n" not in pipeline_failure(err.value)["message"]


def test_malformed_and_empty_csv_name_the_file(log, tmp_path):
    ev = H.load(log)
    os.remove(os.path.join(log, "events.parquet"))
    path = os.path.join(log, "events.csv")
    ev.to_csv(path, index=False)
    with open(path, "a") as f:
        f.write("e_extra,u1,i1,click,1700000000,,,,,surplus,fields\n")
    with pytest.raises(io.UnreadableFileError) as err:
        H.run(log, str(tmp_path / "out"), batch_rows=1000)
    msg = str(err.value)
    assert f"cannot read {path} as CSV: " in msg and f"line {len(ev) + 2}" in msg and "\n" not in msg
    open(path, "w").close()
    with pytest.raises(io.UnreadableFileError, match=f"cannot read {path} as CSV: No columns to parse"):
        io.check_log(log)


# --------------------------------------------------------------------------
# Bytes that are not UTF-8: their rows are quarantined, the others flow on
# --------------------------------------------------------------------------
def test_non_utf8_bytes_in_csv_are_quarantined_with_their_raw_content(log, tmp_path):
    ev = H.load(log)
    os.remove(os.path.join(log, "events.parquet"))
    rows = [int(i) for i in np.flatnonzero(ev.event.to_numpy() == contract.IMPRESSION)[[5, 50, 500]]]
    rows.append(int(np.flatnonzero(ev.event.to_numpy() == contract.SEARCH)[3]))
    marker = "@@BAD@@"
    ev = ev.copy()
    for i in rows[:3]:
        ev.loc[i, "user_id"] = ev.user_id[i] + marker
    ev.loc[rows[3], "query"] = ev["query"][rows[3]] + marker
    data = ev.to_csv(index=False).encode("utf-8").replace(marker.encode(), b"\xff\xfe")
    with open(os.path.join(log, "events.csv"), "wb") as f:
        f.write(data)
    res = H.run(log, str(tmp_path / "out"), batch_rows=2000)
    _accounting_ok(res, len(ev))
    assert res["quarantined_by_reason"] == {r: 4 * (r == contract.UNDECODABLE) for r in contract.REASONS}
    q = H.quarantine(res)
    assert sorted(q.event_id) == sorted(ev.event_id[rows])
    by_id = q.set_index("event_id")
    for i in rows[:3]:
        assert by_id.user_id[ev.event_id[i]] == ev.user_id[i].replace(marker, "\\xff\\xfe")
    assert by_id["query"][ev.event_id[rows[3]]].endswith("\\xff\\xfe")
    assert res["examples"]["eval"] > 0 and res["positives"]["eval"] > 0


def test_non_utf8_bytes_in_parquet_text_and_binary_columns(log, tmp_path):
    ev = H.load(log)
    imps = np.flatnonzero(ev.event.to_numpy() == contract.IMPRESSION)
    bad_string, bad_binary = int(imps[7]), int(imps[70])
    user = [u.encode() for u in ev.user_id]
    user[bad_string] += b"\xc3("           # an invalid two-byte sequence in a string column
    event_id = [e.encode() for e in ev.event_id]
    event_id[bad_binary] += b"\x80"        # a stray continuation byte in a binary column
    table = pa.Table.from_pandas(ev.drop(columns=["user_id", "event_id"]), preserve_index=False)
    table = table.append_column("user_id", pa.array(user, pa.binary()).view(pa.string()))
    table = table.append_column("event_id", pa.array(event_id, pa.binary()))
    pq.write_table(table, os.path.join(log, "events.parquet"))
    assert io.file_columns(io.check_table(log, contract.EVENTS)[0])["event_id"] == "binary"
    res = H.run(log, str(tmp_path / "out"))
    _accounting_ok(res, len(ev))
    assert res["quarantined_by_reason"] == {r: 2 * (r == contract.UNDECODABLE) for r in contract.REASONS}
    q = H.quarantine(res).set_index("event_id")
    assert q.user_id[ev.event_id[bad_string]] == ev.user_id[bad_string] + "\\xc3("
    assert q.user_id[ev.event_id[bad_binary] + "\\x80"] == ev.user_id[bad_binary]


def test_non_utf8_item_row_is_left_out_and_its_events_quarantined(log, tmp_path):
    items = H.load(log, "items")
    os.remove(os.path.join(log, "items.parquet"))
    bad_item = items.item_id[3]
    data = items.to_csv(index=False).encode().replace(f"\n{bad_item},".encode(), f"\n{bad_item}\xe9,".encode("latin-1"))
    with open(os.path.join(log, "items.csv"), "wb") as f:
        f.write(data)
    table = io.read_table(log, contract.ITEMS)
    assert len(table) == len(items) - 1 and bad_item not in set(table.item_id)
    ev = H.load(log)
    res = H.run(log, str(tmp_path / "out"), max_bad_fraction=0.5)
    _accounting_ok(res, len(ev))
    needs_item = ev.item_id.eq(bad_item) & ev.event.ne(contract.SEARCH)
    assert res["quarantined_by_reason"][contract.UNKNOWN_ITEM] == int(needs_item.sum())


# --------------------------------------------------------------------------
# Quarantined rows keep every column they came with
# --------------------------------------------------------------------------
def test_quarantined_rows_keep_every_column_across_parts(log, tmp_path):
    ev = H.load(log)
    ev["request_id"] = ev["request_id"].where(ev.request_id.ne(""), "req-x")
    ev["dwell_s"] = np.where(ev.event.eq(contract.VIEW), 12.5, np.nan)
    imps = np.flatnonzero(ev.event.to_numpy() == contract.IMPRESSION)
    views = np.flatnonzero(ev.event.to_numpy() == contract.VIEW)
    dup = ev.iloc[[int(views[2])]].assign(ts=lambda d: d.ts + 5)            # a later duplicate of a view
    unknown = ev.iloc[[int(imps[9])]].assign(event="teleport", event_id="e_teleport")
    full = pd.concat([dup, ev, unknown], ignore_index=True)   # the duplicate in the first part, the other last
    os.remove(os.path.join(log, "events.parquet"))
    os.makedirs(os.path.join(log, "events"))
    half = len(full) // 2
    first = full.iloc[:half].copy()
    first["session"] = [f"s{i}" for i in range(len(first))]   # a column beyond the contract, one part only
    first["reason"] = "the log's own"
    first.to_parquet(os.path.join(log, "events", "part-000.parquet"), index=False)
    full.iloc[half:].to_csv(os.path.join(log, "events", "part-001.csv"), index=False)
    res = H.run(log, str(tmp_path / "out"))
    _accounting_ok(res, len(full))
    q = H.quarantine(res).set_index("reason")
    assert set(q.columns) >= {"request_id", "dwell_s", "query", "session", "log_reason", "_ord"}
    d = q.loc[contract.DUPLICATE_ID]
    assert d.request_id == dup.request_id.iloc[0] and float(d.dwell_s) == 12.5
    assert int(d.ts) == int(dup.ts.iloc[0])
    u = q.loc[contract.UNKNOWN_EVENT]
    assert u.event_id == "e_teleport" and u.request_id == unknown.request_id.iloc[0]
    assert d.session == "s0" and d.log_reason == "the log's own"   # from the Parquet part
    assert pd.isna(u.session) and pd.isna(u.log_reason)           # the CSV part has no such columns


# --------------------------------------------------------------------------
# In a real pipeline run: the summary's failure is one line naming the file
# --------------------------------------------------------------------------
def test_truncated_parquet_in_a_pipeline_run_gives_a_one_line_failure(log, tmp_path):
    import pipeline
    from tests.helpers.config import e2e_config

    path = os.path.join(log, "events.parquet")
    _truncate(path)
    cfg = e2e_config(tmp_path, log, name="feedrank-truncated")
    summary = pipeline.run(cfg)
    assert summary["status"] == "failed"
    failure = summary["failure"]
    assert failure["component"] == "BehaviorExampleGen" and failure["error"] == "UnreadableFileError"
    assert path in failure["message"] and "magic bytes" in failure["message"] and "\n" not in failure["message"]
    with open(os.path.join(cfg.run_root, summary["run_id"].replace(":", "-"), "summary.json")) as f:
        assert json.load(f)["failure"] == failure
