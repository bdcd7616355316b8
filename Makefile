# Two commands: `make demo` (install, simulate, run the pipeline) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= configs/demo.yaml

.PHONY: demo test test-fast lint install simulate clean help

help:
	@echo "make demo       create $(VENV) if missing, install, simulate demo data, run the pipeline"
	@echo "make test       the whole suite: tests/unit, tests/e2e, tests/serving (installs both venvs first;"
	@echo "                a serving test fails, not skips, without .venv-serving or redis-server)"
	@echo "make test-fast  tests/unit only: no whole pipeline run, no servers, no serving venv"
	@echo "make serve      Redis, feature updater, predictor and transformer on the newest pushed model"
	@echo "make ab-demo    GBDT champion vs DIN challenger: train, serve both, simulated A/B test, report, decision"
	@echo "make lint       check the code with ruff (rules in pyproject.toml)"
	@echo "make clean      remove runs/, model_store/ and data/ (keeps $(VENV))"

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==24.3.1
	# The lock is complete (every transitive pin); TFX 1.16's wheel says
	# Requires-Python <3.11 but runs on 3.11 (docs/install.md).
	$(PY) -m pip install -q --no-deps --ignore-requires-python -r requirements.txt
	# The project itself, editable: feedrank, components, serving and pipeline
	# importable from anywhere; --no-deps and no build isolation, so only the lock is used.
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -c "import tfx, tensorflow_transform, tensorflow_model_analysis, tf_keras"
	@touch $@

demo: install
	$(PY) pipeline.py run --config $(CONFIG) --simulate-if-missing

# tests/README.md maps the folders; FEEDRANK_REQUIRE_SERVING turns the serving tests' skips into failures.
test: install serving-install
	FEEDRANK_REQUIRE_SERVING=1 $(PY) -m pytest -q tests

test-fast: install
	$(PY) -m pytest -q tests/unit

lint: install
	$(PY) -m ruff check .

mlflow: install ; $(PY) pipeline.py mlflow --config $(CONFIG)  # start/reuse the local MLflow server, print its URL

clean:
	rm -rf runs model_store data

# ---- Online serving: its own environment (kserve cannot share the pipeline's;
# see requirements-serving.txt), with the project installed editable as in $(VENV).
SERVING_VENV   ?= .venv-serving
SPY            := $(SERVING_VENV)/bin/python
MODEL_DIR      ?= model_store/din
PREDICTOR_PORT ?= 8080

.PHONY: serving-install serve-predictor

serving-install: $(SERVING_VENV)/.installed

$(SERVING_VENV)/.installed: requirements-serving.txt pyproject.toml
	@test -x $(SPY) || $(PYTHON) -m venv $(SERVING_VENV)
	$(SPY) -m pip install -q --upgrade pip==24.3.1
	$(SPY) -m pip install -q --no-deps -r requirements-serving.txt
	# The project itself, editable (serving and feedrank importable from anywhere); the lock
	# pins setuptools and wheel for this build without isolation.
	$(SPY) -m pip install -q --no-deps --no-build-isolation -e .
	cd / && $(abspath $(SPY)) -c "import kserve, tensorflow, feedrank.features, serving.predictor.model"
	@touch $@

# The predictor alone on the newest version under $(MODEL_DIR), polling for new ones.
serve-predictor: serving-install
	$(SPY) -m serving.predictor --model-dir $(MODEL_DIR) --http-port $(PREDICTOR_PORT) --poll-s 10

# Online features: Redis (from Debian), the bulk load of SERVE_LOG and the feature
# updater; with PREDICTOR_URL also the transformer.  `make serve` builds on this.
SERVE_LOG     ?= data/demo
PREDICTOR_URL ?=
serve-features: install
	$(PY) -m serving.stack --log $(SERVE_LOG) $(if $(PREDICTOR_URL),--predictor-url $(PREDICTOR_URL))

# Everything locally, one command: Redis, the bulk load of SERVE_LOG, the feature
# updater, the predictor on MODEL (newest: the newest pushed model under model_store/;
# or a directory; or models:/<name>@champion from the local MLflow server) and the
# transformer in front of it.  Prints the URLs and a curl; Ctrl-C stops all.
MODEL            ?= newest
REDIS_PORT       ?= 6379
TRANSFORMER_PORT ?= 8081
.PHONY: serve serve-features
serve: install serving-install
	$(PY) -m serving.stack --log $(SERVE_LOG) --model $(MODEL) --redis-port $(REDIS_PORT) \
	    --predictor-port $(PREDICTOR_PORT) --transformer-port $(TRANSFORMER_PORT)

# The closed loop on one machine (docs/ab.md): a GBDT champion and a DIN challenger trained by the
# pipeline, both served behind one transformer, a simulated online A/B test, the report with the
# true lift beside it, and `promote --from-ab` (promotes or refuses by the rule).
AB_OUT ?= runs/ab/demo-$(shell date +%Y%m%d-%H%M%S)
.PHONY: ab-demo
ab-demo: install serving-install
	$(PY) -m serving.ab.demo --out $(AB_OUT)
