#!/usr/bin/env bash
# Screenshot of the MLflow UI comparing the two newest candidate runs of a config's experiment.
#
#   scripts/mlflow_screenshot.sh [CONFIG] [OUT.png]
#   (defaults: configs/demo.yaml, docs/img/mlflow_compare.png)
#
# Needs two logged candidates (run the pipeline twice) and Debian's chromium
# (`apt-get install -y chromium`). The tracking server is the config's: the
# local one is started/reused (python pipeline.py mlflow).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/demo.yaml}
OUT=${2:-docs/img/mlflow_compare.png}
PY=${PY:-.venv/bin/python}
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[ -n "$CHROMIUM" ] || { echo "error: chromium not found (apt-get install -y chromium)" >&2; exit 2; }

URL=$("$PY" - "$CONFIG" <<'PYEOF'
import json, sys, urllib.parse
from feedrank.config import load
from feedrank.tracking import experiment_name
from feedrank.tracking.candidate import client_for
from feedrank.tracking.server import tracking_uri

cfg = load(sys.argv[1])
uri = tracking_uri(cfg)
client = client_for(uri)
exp = client.get_experiment_by_name(experiment_name(cfg))
runs = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                          order_by=["attributes.start_time DESC"], max_results=2) if exp else []
if len(runs) < 2:
    sys.exit(f"error: experiment {experiment_name(cfg)!r} needs two finished runs, has {len(runs)}")
ids = json.dumps([r.info.run_id for r in reversed(runs)], separators=(",", ":"))
query = urllib.parse.urlencode({"runs": ids, "experiments": json.dumps([exp.experiment_id])})
print(f"{uri.rstrip('/')}/#/compare-runs?{query}")
PYEOF
)
echo "screenshot of $URL"
PROFILE=$(mktemp -d)
trap 'rm -rf "$PROFILE"' EXIT
mkdir -p "$(dirname "$OUT")"
FLAGS=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
       --disable-background-networking --disable-component-update --disable-sync
       --user-data-dir="$PROFILE")

# MLflow 3.17's UI opens its "Assistant" side panel on a first visit.  Seed the fresh
# profile's localStorage for the server's origin (through the DevTools protocol) so the
# screenshot shows the comparison at full width.
"$CHROMIUM" "${FLAGS[@]}" --remote-debugging-port=0 about:blank 2>/dev/null &
BROWSER=$!
"$PY" - "$PROFILE" "${URL%%/#*}" <<'PYEOF' || echo "warning: could not seed the UI settings; the assistant panel may show" >&2
import json, os, sys, time, urllib.request
from websockets.sync.client import connect

profile, origin = sys.argv[1], sys.argv[2]
port_file = os.path.join(profile, "DevToolsActivePort")
for _ in range(100):
    if os.path.exists(port_file) and open(port_file).read().strip():
        break
    time.sleep(0.2)
port = open(port_file).read().split()[0]
page = next(t for t in json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json")) if t["type"] == "page")
with connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
    def call(i, method, **params):
        ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while json.loads(ws.recv()).get("id") != i:
            pass
    call(1, "Page.navigate", url=origin + "/health")
    time.sleep(1.0)
    call(2, "Runtime.evaluate", expression=(
        "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
        "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"))
    call(3, "Browser.close")
PYEOF
wait "$BROWSER" 2>/dev/null || true

"$CHROMIUM" "${FLAGS[@]}" --hide-scrollbars --virtual-time-budget=25000 \
  --window-size=1400,900 --screenshot="$OUT" "$URL" 2>/dev/null
echo "wrote $OUT"
