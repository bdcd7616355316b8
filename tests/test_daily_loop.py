"""The daily loop, validated offline: served impressions reach the examples, the daily
package compiles and loads with kfp and is scheduled with the served log as its input,
and the A/B deployment's InferenceServices validate.

* Served log: a tiny simulated log plus one part as the serving log sink writes it
  (contract columns with ``arm``, ``model_version``, ``score``) is run through the
  real example generator (`feedrank.examples.beam_pipeline`).
* Daily package: ``configs/kubeflow_daily.yaml`` compiled from ``configs/demo.yaml``,
  loaded with kfp's own loaders; the recurring run is created against a loopback
  stand-in of the KFP API (what we send, not what a server does with it).
* A/B: `feedrank.deploy.render.ab_plan` and ``pipeline.py deploy --ab-share``
  against a real MLflow server; the InferenceServices round-trip through the kserve
  SDK (tests/kserve_roundtrip.py) and follow KServe's rules.
"""
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedrank.events import append, contract, io
from tests import examplegen_helpers as H

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- the served log flows into the examples ---------------------------------------------------

def served_part(ev: pd.DataFrame) -> pd.DataFrame:
    """A served request: five impressions ranked by the challenger and a click on position 1;
    a later request after the log's end, whose label window is still open at the new end of
    the log (censored: an example of the next day's run); and, as a replayed part would hold,
    a duplicate of a logged event id."""
    imps = ev[ev.event == contract.IMPRESSION]
    user = imps.user_id.iloc[0]
    items = list(dict.fromkeys(imps.item_id))[:5]
    end = int(pd.to_numeric(ev.ts).max())
    ts = end - 3000
    rows = [dict(event_id=f"srv-imp-{i}", user_id=user, item_id=item, event=contract.IMPRESSION, ts=ts,
                 request_id="srv-req-1", query="", dwell_s=np.nan, position=i, arm="challenger",
                 model_version="7", score=0.9 - 0.1 * i) for i, item in enumerate(items)]
    rows.append(dict(event_id="srv-click-1", user_id=user, item_id=items[1], event=contract.CLICK, ts=ts + 30,
                     request_id="srv-req-1", query="", dwell_s=np.nan, position=None, arm="",
                     model_version="", score=np.nan))
    rows += [dict(event_id=f"srv-late-{i}", user_id=user, item_id=item, event=contract.IMPRESSION, ts=end + 600,
                  request_id="srv-req-2", query="", dwell_s=np.nan, position=i, arm="challenger",
                  model_version="7", score=0.5) for i, item in enumerate(items[:2])]
    dup = imps.iloc[0]
    rows.append(dict(event_id=dup.event_id, user_id=dup.user_id, item_id=dup.item_id, event=contract.IMPRESSION,
                     ts=int(dup.ts) + 5, request_id="srv-req-0", query="", dwell_s=np.nan, position=0,
                     arm="champion", model_version="6", score=0.5))
    return pd.DataFrame(rows)


def write_part(df: pd.DataFrame, path: str) -> None:
    """A part in the contract's column order and types, as the sink writes it."""
    types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64()}
    schema = pa.schema([(c, types[t]) for c, (t, _) in contract.EVENT_COLUMNS.items()])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df[list(contract.EVENT_COLUMNS)], schema=schema, preserve_index=False),
                   path)


@pytest.fixture(scope="module")
def served_log(tmp_path_factory):
    """(log dir with the served part appended, the served frame)."""
    log_dir = H.make_log(str(tmp_path_factory.mktemp("log")))
    served = served_part(H.load(log_dir))
    ab_dir = tmp_path_factory.mktemp("ab")
    write_part(served, str(ab_dir / "events" / "part-1732600000000-0-1732600000100-0.parquet"))
    added = append.append_parts(log_dir, str(ab_dir / "events"))
    assert [os.path.basename(p) for p in added] == ["part-1732600000000-0-1732600000100-0.parquet"]
    assert append.append_parts(log_dir, str(ab_dir / "events")) == []   # idempotent
    return log_dir, served


def test_the_log_becomes_a_part_directory_read_in_file_order(served_log):
    log_dir, served = served_log
    assert not os.path.exists(os.path.join(log_dir, "events.parquet"))
    files = io.check_table(log_dir, contract.EVENTS)
    assert [os.path.basename(f.path) for f in files] == [
        "part-0-base.parquet", "part-1732600000000-0-1732600000100-0.parquet"]
    ev = io.read_events(log_dir)
    got = ev[ev.request_id == "srv-req-1"].set_index("event_id")
    assert got.loc["srv-imp-2", "arm"] == "challenger" and got.loc["srv-imp-2", "model_version"] == "7"
    assert got.loc["srv-imp-2", "score"] == pytest.approx(0.7)


def test_served_impressions_flow_into_examples_and_duplicates_are_quarantined(served_log, tmp_path):
    log_dir, served = served_log
    res = H.run(log_dir, str(tmp_path / "out"))
    examples = {k: H.to_dict(v) for k, v in H.by_impression(res["output_dir"]).items()}
    served_imps = served[served.event_id.str.startswith("srv-imp-")]
    for r in served_imps.itertuples():
        ex = examples[r.event_id]
        assert ex["user_id"] == [r.user_id] and ex["item_id"] == [r.item_id] and ex["ts"] == [r.ts]
        assert ex["label"] == [int(r.event_id == "srv-imp-1")]   # the click on position 1
    assert not any(k.startswith("srv-late-") for k in examples) and res["censored_eval"] >= 2
    # what served the impression never becomes a model input
    assert not {"arm", "model_version", "score"} & set(next(iter(examples.values())))
    q = H.quarantine(res)
    dup = served.iloc[-1]
    assert res["quarantined_by_reason"][contract.DUPLICATE_ID] == 1
    row = q.set_index("event_id").loc[dup.event_id]
    assert row.reason == contract.DUPLICATE_ID and row.arm == "champion" and row.request_id == "srv-req-0"


def test_append_refuses_a_clashing_or_incomplete_part(served_log, tmp_path, capsys):
    log_dir, served = served_log
    clash = tmp_path / "clash"
    write_part(served.head(2), str(clash / "part-1732600000000-0-1732600000100-0.parquet"))
    with pytest.raises(io.ContractError, match="already exists with other content"):
        append.append_parts(log_dir, str(clash))
    bad = tmp_path / "bad"
    bad.mkdir()
    served.drop(columns=["user_id"]).to_parquet(bad / "part-1.parquet", index=False)
    assert append.main(["--log", log_dir, "--served", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing required column(s) ['user_id']" in err[0]
