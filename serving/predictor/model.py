"""The predictor: a ``kserve.Model`` around the pushed SavedModel's ``serving_default``.

* v1 ``/v1/models/<name>:predict`` with TF Serving's columnar
  ``{"inputs": {...}}`` and v2 ``/v2/models/<name>/infer`` (JSON or binary
  tensors); both return ``probabilities`` [N] and the model version;
* the candidates are split into batches of ``batch_size`` that run in a
  thread pool, so TensorFlow never blocks the event loop;
* hot swap: a newer version directory is loaded and warmed up beside the
  serving one, then swapped in with one reference assignment; a request
  keeps the version it started with, so none fails during a swap;
* readiness: ready only while a loaded version is held; ``release`` (the
  repository's unload) drops it and stops the version polling, ``restore``
  (the repository's load, ``/admin/reload``) loads the newest version again.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
import time
from typing import Any, Dict, List, Optional, Tuple, Union

import kserve
import numpy as np
import tensorflow as tf
from kserve.errors import ModelNotReady
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from prometheus_client import Counter, Gauge, Histogram

from serving.common.errors import BadRequest
from serving.predictor import store
from serving.predictor.contract import Batch, Contract

log = logging.getLogger(__name__)

BATCH_SIZE = Histogram("feedrank_predictor_batch_size", "Candidates per model call (after splitting).",
                       buckets=(1, 5, 10, 20, 40, 60, 80, 120, 200, 500))
CANDIDATES = Histogram("feedrank_predictor_candidates", "Candidates per request.",
                       buckets=(1, 10, 20, 50, 100, 120, 200, 500, 1000))
MODEL_VERSION = Gauge("feedrank_predictor_model_version", "Version served (1 on the current one).",
                      ["model", "version"])
SWAPS = Counter("feedrank_predictor_swaps_total", "Model versions swapped in.", ["model"])
SWAP_FAILURES = Counter("feedrank_predictor_swap_failures_total", "New versions that failed to load.",
                        ["model"])
MODEL_SECONDS = Histogram("feedrank_predictor_model_seconds", "Model time per request (all batches).",
                          buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03,
                                   0.05, 0.1, 0.25))


@dataclasses.dataclass
class PredictorConfig:
    """Settings of the predictor (command-line flags in ``__main__``)."""

    batch_size: int = 120
    max_candidates: int = 1000
    threads: int = 2
    intra_op_threads: int = 1      # 0: TensorFlow's default (set by the process, before the model loads)
    inter_op_threads: int = 1      # 0: TensorFlow's default
    poll_s: float = 0.0            # 0: no polling for new versions
    warmup_candidates: int = 120


class FeedrankPredictor(kserve.Model):
    """Serves ``probabilities`` for the user's side once plus N candidates."""

    def __init__(self, name: str, source: str, config: PredictorConfig,
                 tracking_uri: str = "", cache_dir: str = "/tmp/feedrank-models"):
        super().__init__(name, return_response_headers=True)
        self.source, self.config = source, config
        self.tracking_uri, self.cache_dir = tracking_uri, cache_dir
        # (loaded model, its contract): replaced as one reference, read once per request.
        self._serving: Optional[Tuple[store.Loaded, Contract]] = None
        self.pool = concurrent.futures.ThreadPoolExecutor(config.threads, thread_name_prefix="tf")
        self._swap_lock = threading.Lock()
        self._stop = threading.Event()

    # ---------------------------------------------------------------- loading
    def _resolve(self) -> tuple:
        if self.source.startswith("models:/"):
            if not self.tracking_uri:
                raise store.ModelSourceError(f"{self.source} needs --tracking-uri (the MLflow server URL)")
            return store.resolve_mlflow(self.source, self.tracking_uri, self.cache_dir)
        if store._is_version_dir(self.source):
            return self.source.rstrip("/").split("/")[-1], self.source
        found = store.newest_version(self.source)
        if found is None:
            raise store.ModelSourceError(f"no version directory with a saved_model.pb under {self.source}")
        return found

    def load(self) -> bool:
        """Loads and warms up the model, then reports ready."""
        version, path = self._resolve()
        self._install(store.load(version, path, self.config.warmup_candidates))
        self.ready = True
        if self.config.poll_s > 0:
            threading.Thread(target=self._poll, name="version-poll", daemon=True).start()
        return self.ready

    def _install(self, loaded: store.Loaded) -> None:
        contract = Contract(loaded.input_specs, self.config.max_candidates, loaded.spec)
        previous = self.current
        self._serving = (loaded, contract)   # one reference assignment: atomic for readers
        if previous is not None:
            MODEL_VERSION.labels(self.name, previous.version).set(0)
            SWAPS.labels(self.name).inc()
            log.info("swapped version %s -> %s", previous.version, loaded.version)
        MODEL_VERSION.labels(self.name, loaded.version).set(1)

    @property
    def current(self) -> Optional[store.Loaded]:
        """The version being served."""
        return self._serving[0] if self._serving else None

    @property
    def contract(self) -> Optional[Contract]:
        """The request contract of the version being served."""
        return self._serving[1] if self._serving else None

    def reload(self, keep_released: bool = False) -> Dict[str, Any]:
        """Swaps in the newest version if it differs from the served one (or none
        is held, after ``release``, unless ``keep_released``); the model is ready
        again once one is held."""
        with self._swap_lock:
            before = self.current.version if self.current else None
            if keep_released and before is None:
                return {"swapped": False, "version": None, "ready": False}
            try:
                version, path = self._resolve()
                if version != before:
                    self._install(store.load(version, path, self.config.warmup_candidates))
            except (store.ModelSourceError, tf.errors.OpError, OSError) as e:
                SWAP_FAILURES.labels(self.name).inc()
                log.error("reload failed, %s: %s",
                          f"still serving version {before}" if before else "no version is served", e)
                return {"swapped": False, "version": before, "ready": self.ready, "error": str(e)}
            self.ready = True
            return {"swapped": self.current.version != before, "version": self.current.version,
                    "previous": before, "ready": True}

    def restore(self) -> Dict[str, Any]:
        """Brings the model back into service (the repository's load): `reload`."""
        return self.reload()

    def release(self) -> None:
        """Takes the model out of service (the repository's unload): not ready, the
        loaded version dropped, no polling until `restore`."""
        with self._swap_lock:
            previous = self.current
            self.ready = False
            self._serving = None
            if previous is not None:
                MODEL_VERSION.labels(self.name, previous.version).set(0)
                log.warning("version %s released: not ready until reloaded", previous.version)

    async def healthy(self) -> bool:
        """Ready only while a loaded version is held."""
        return bool(self.ready and self._serving is not None)

    def _poll(self) -> None:
        while not self._stop.wait(self.config.poll_s):
            self.reload(keep_released=True)   # a released model stays out of service

    def stop(self) -> None:
        """Stops polling and the thread pool."""
        self._stop.set()
        self.pool.shutdown(wait=False)

    # -------------------------------------------------------------- inference
    def _run(self, loaded: store.Loaded, user: Dict[str, np.ndarray], cands: Dict[str, np.ndarray],
             lo: int, hi: int) -> np.ndarray:
        feed = {k: tf.constant(v) for k, v in user.items()}
        feed.update({k: tf.constant(v[lo:hi]) for k, v in cands.items()})   # numpy slices: views
        return loaded.probabilities(feed)

    async def score(self, loaded: store.Loaded, batch: Batch) -> Tuple[np.ndarray, str]:
        """(probabilities [N], version) of one validated request."""
        CANDIDATES.observe(batch.n)
        bs = max(1, self.config.batch_size)
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        futures = []
        for lo in range(0, batch.n, bs):
            hi = min(batch.n, lo + bs)
            BATCH_SIZE.observe(hi - lo)
            futures.append(loop.run_in_executor(self.pool, self._run, loaded, batch.user,
                                                batch.candidates, lo, hi))
        try:
            parts = await asyncio.gather(*futures)
        except tf.errors.InvalidArgumentError as e:
            raise BadRequest(f"the model rejected the request: {e.message.splitlines()[0][:300]}") from None
        MODEL_SECONDS.observe(time.perf_counter() - t0)
        probs = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return probs.astype(np.float32, copy=False), loaded.version

    async def predict(self, payload: Union[Dict, InferRequest, bytes], headers: Optional[Dict[str, str]] = None,
                      response_headers: Optional[Dict[str, str]] = None) -> Union[Dict, InferResponse]:
        serving = self._serving
        if serving is None:
            raise ModelNotReady(self.name, "no version is loaded (unloaded); POST /admin/reload loads one")
        loaded, contract = serving   # this request keeps this version, even across a swap
        if isinstance(payload, InferRequest):
            probs, version = await self.score(loaded, contract.from_v2(payload))
            out = InferOutput("probabilities", [int(probs.shape[0])], "FP32")
            out.set_data_from_numpy(probs, binary_data=bool(payload.use_binary_outputs))
            return InferResponse(payload.id or "", self.name, [out], model_version=version,
                                 use_binary_outputs=bool(payload.use_binary_outputs))
        if isinstance(payload, (bytes, bytearray)):
            raise BadRequest("request body must be JSON (Content-Type: application/json)")
        probs, version = await self.score(loaded, contract.from_v1(payload))
        if response_headers is not None:
            response_headers["x-model-version"] = version
        return {"outputs": {"probabilities": probs.tolist()}, "model_name": self.name, "model_version": version}

    # --------------------------------------------------------------- metadata
    def get_input_types(self) -> List[Dict]:
        return self.contract.metadata()[0] if self.contract else []

    def get_output_types(self) -> List[Dict]:
        return self.contract.metadata()[1] if self.contract else []
