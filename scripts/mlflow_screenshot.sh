#!/usr/bin/env bash
# Screenshot of the MLflow UI comparing the two newest candidate runs of a config's experiment.
#
#   scripts/mlflow_screenshot.sh [CONFIG] [OUT.png] [REVIEW.png]
#   (defaults: configs/demo.yaml, docs/img/mlflow_compare.png, docs/img/mlflow_review_view.png)
#
# REVIEW.png: the experiment's runs in its saved "feedrank review" view (the link
# `pipeline.py compare` prints).
# One image, top to bottom: the compare page (both runs' AUC and AUC per category slice),
# the runs in the experiment's saved "feedrank review" view (auc, gauc, logloss, calibration
# and family first), and the metric page of the per-epoch train/validation AUC curves (when a
# run trained two epochs or more).
#
# Needs two logged candidates in the experiment (e.g. DIN and DIEN: run the pipeline twice
# with the same pipeline name and trainer.model changed) and Debian's chromium
# (`apt-get install -y chromium`). The tracking server is the config's: the local one is
# started/reused (python pipeline.py mlflow).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/demo.yaml}
OUT=${2:-docs/img/mlflow_compare.png}
REVIEW_OUT=${3:-docs/img/mlflow_review_view.png}
PY=${PY:-.venv/bin/python}
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[ -n "$CHROMIUM" ] || { echo "error: chromium not found (apt-get install -y chromium)" >&2; exit 2; }

# The pages: one URL a line (compare page first).
URLS=$("$PY" - "$CONFIG" <<'PYEOF'
import json, sys, urllib.parse
from feedrank.config import load
from feedrank.tracking import experiment_name
from feedrank.tracking.candidate import client_for, review_url
from feedrank.tracking.server import tracking_uri

cfg = load(sys.argv[1])
uri = tracking_uri(cfg)
client = client_for(uri)
exp = client.get_experiment_by_name(experiment_name(cfg))
runs = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                          order_by=["attributes.start_time DESC"], max_results=2) if exp else []
if len(runs) < 2:
    sys.exit(f"error: experiment {experiment_name(cfg)!r} needs two finished runs, has {len(runs)}")
ids = [r.info.run_id for r in reversed(runs)]
exps = json.dumps([exp.experiment_id])
base = uri.rstrip("/") + "/#/"
print(review_url(uri, exp.experiment_id))
print(base + "compare-runs?" + urllib.parse.urlencode({"runs": json.dumps(ids, separators=(",", ":")),
                                                      "experiments": exps,
                                                      "workflowType": "machine_learning"}))
logged = {k for r in runs for k in r.data.metrics}
# The per-epoch curves (train_<m> / valid_<m>, logged with step = epoch); the exact metrics are
# one value per run, shown by the compare page's table and the review view.
# Only when a run has two epochs or more: a one-point curve draws an empty chart.
epochs = max((len(client.get_metric_history(r.info.run_id, "valid_auc")) for r in runs
              if "valid_auc" in r.data.metrics), default=0)
for keys in (["train_auc", "valid_auc"],):
    keys = [k for k in keys if k in logged]
    if keys and epochs >= 2:
        print(base + "metric?" + urllib.parse.urlencode({
            "runs": json.dumps(ids), "metric": json.dumps(keys[0]), "experiments": exps,
            "plot_metric_keys": json.dumps(keys), "plot_layout": "{}", "x_axis": "step",
            "y_axis_scale": "linear", "line_smoothness": "1", "show_point": "true",
            "deselected_curves": "[]", "last_linear_y_axis_range": "[]",
            "workflowType": "machine_learning"}))
PYEOF
)
mapfile -t PAGES <<<"$URLS"
REVIEW_URL=${PAGES[0]}
PAGES=("${PAGES[@]:1}")
echo "screenshot of ${PAGES[0]}"
mkdir -p "$(dirname "$OUT")"

# Chromium driven through the DevTools protocol: a fresh profile with MLflow 3.17's
# "Assistant" side panel closed, sections a reviewer does not need folded, the pages
# captured and stacked into one PNG.
"$PY" - "$CHROMIUM" "$OUT" "$REVIEW_OUT" "$REVIEW_URL" "${PAGES[@]}" <<'PYEOF'
import base64
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from PIL import Image
from websockets.sync.client import connect

chromium, out, review_out, review_url = sys.argv[1:5]
compare_url, metric_urls = sys.argv[5], sys.argv[6:]
WIDTH = 1400
profile = tempfile.mkdtemp()
proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
# Fold the compare page's sections a reviewer does not need here (the parameters are in MLflow).
PREPARE = """(() => {
  for (const name of ['Visualizations', 'Run details', 'Parameters', 'Artifacts', 'Tags']) {
    const all = [...document.querySelectorAll('*')].filter(e => e.textContent.trim() === name);
    const el = all[all.length - 1];
    if (el) (el.closest('[role=button],button,[aria-expanded]') || el).click();
  }
  return true;
})()"""
GRID = "document.querySelector('.ReactVirtualized__Grid')"  # the metrics table
try:
    port_file = os.path.join(profile, "DevToolsActivePort")
    for _ in range(150):
        if os.path.exists(port_file) and open(port_file).read().strip():
            break
        time.sleep(0.2)
    port = open(port_file).read().split()[0]
    page = next(t for t in json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json")) if t["type"] == "page")
    with connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
        counter = [0]

        def call(method, **params):
            counter[0] += 1
            ws.send(json.dumps({"id": counter[0], "method": method, "params": params}))
            while True:
                msg = json.loads(ws.recv())
                if msg.get("id") == counter[0]:
                    return msg.get("result", {})

        def js(expr):
            res = call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
            return res.get("result", {}).get("value")

        def capture(y0=None, y1=None):
            img = Image.open(io.BytesIO(base64.b64decode(call("Page.captureScreenshot", format="png")["data"])))
            return img.crop((0, int(y0 or 0), img.width, int(y1 or img.height)))

        def load(url, height):
            call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=height, deviceScaleFactor=1, mobile=False)
            call("Page.navigate", url=url)
            time.sleep(10)

        origin = compare_url.split("/#")[0]
        call("Page.navigate", url=origin + "/health")
        time.sleep(1)
        js("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
           "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');")
        load(review_url, 420)                                  # the runs in the saved review view
        review = capture()
        review.save(review_out, optimize=True)
        print("wrote", review_out)
        images = []
        load(compare_url, 1000)
        js(PREPARE)
        time.sleep(2)
        box = js(f"(() => {{ const r = {GRID}.getBoundingClientRect(); return [r.top, r.bottom]; }})()")
        images.append(capture(0, box[1] + 8))                 # parameters folded; AUC and its slices
        images.append(review)                                  # auc, gauc, logloss, calibration, family
        for url in metric_urls:
            load(url, 760)
            images.append(capture())                           # metric charts and their value tables
        call("Browser.close")
finally:
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(profile, ignore_errors=True)
canvas = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), "white")
y = 0
for im in images:
    canvas.paste(im, (0, y))
    y += im.height
canvas.save(out, optimize=True)
print("wrote", out, canvas.size)
PYEOF
