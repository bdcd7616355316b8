"""Model management: only the operator loads and unloads models, and readiness tells the truth.

**Who may manage.** The management routes are kserve's model-repository
extension (``/v2/repository/...``: ``models/<name>/load`` and ``unload``), any
``/v1/models/<name>:load`` / ``:unload`` style route, and ``/admin/...``
(the predictor's ``/admin/reload``).  :class:`ManagementAuth` refuses them:

* with **403** when management is off: the server was started without a
  token in the environment variable ``FEEDRANK_ADMIN_TOKEN`` (the default);
* with **401** (and ``WWW-Authenticate: Bearer``) when a token is set and the
  request has no ``Authorization: Bearer <token>`` header;
* with **403** when the bearer token is wrong.

Read-only routes listed in ``public`` (the predictor's ``GET /admin/version``)
stay open.  Every refusal is JSON ``{"error": ...}`` naming why and is counted
in ``feedrank_rejected_total{reason="unauthorized"}``.

**What management does.** :class:`ManagedRepositoryExtension` replaces kserve's
load / unload, which would delete the model from the registry (predictions then
404 while the server still reports ready) and stop it for good:

* ``unload`` takes the model out of service and keeps it registered: it calls
  the model's ``release()`` when it has one (the predictor drops its loaded
  version), else sets ``ready = False``; readiness is false from then on and
  predictions get 503;
* ``load`` calls the model's ``restore()`` when it has one (the predictor loads
  the newest version again), else sets ``ready = True``.

**Readiness.** :func:`install_readiness` makes the server's ``/v2/health/ready``
true only while every registered model is healthy (and at least one is
registered), and lets a server add a check of what it depends on (the
transformer asks its champion predictor, :class:`UpstreamReadiness`); the per-model
``/v2/models/<name>/ready`` and ``/v1/models/<name>`` include that check too,
the prediction routes do not.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import time
from typing import Any, Awaitable, Callable, Dict, Iterable, Optional, Sequence, Tuple

import httpx
from kserve.errors import ModelNotFound
from kserve.protocol.model_repository_extension import ModelRepositoryExtension

from serving.common import metrics
from serving.common.errors import ApiError
from serving.common.guard import Receive, Scope, Send, send_json

log = logging.getLogger(__name__)

TOKEN_ENV = "FEEDRANK_ADMIN_TOKEN"
PUBLIC_ROUTES: Tuple[Tuple[str, str], ...] = (("GET", "/admin/version"),)

ReadyCheck = Callable[[], Awaitable[bool]]

_MANAGEMENT = re.compile(r"^/(v2/repository(/|$)|admin(/|$))|^/v1/models/[^/]+:(load|unload)$")


def admin_token_from_env() -> str:
    """The management token of this process (``FEEDRANK_ADMIN_TOKEN``), or '' (management off)."""
    return os.environ.get(TOKEN_ENV, "").strip()


def normalized_path(path: str) -> str:
    """``path`` lower-cased, repeated and trailing slashes removed (what the check compares)."""
    return re.sub(r"/+", "/", path).lower().rstrip("/") or "/"


def is_management(path: str) -> bool:
    """Whether a request path is a management route."""
    return bool(_MANAGEMENT.match(normalized_path(path)))


class ManagementAuth:
    """ASGI middleware: management routes need ``Authorization: Bearer <token>``.

    ``app.add_middleware(ManagementAuth, token=admin_token_from_env())``; an empty
    ``token`` turns management off (every management call refused).
    """

    def __init__(self, app: Callable, token: str = "",
                 public: Iterable[Tuple[str, str]] = PUBLIC_ROUTES):
        self.app = app
        self.token = token
        self.public = {(m.upper(), normalized_path(p)) for m, p in public}

    def refusal(self, method: str, path: str, authorization: Optional[str]) -> Optional[Tuple[int, str]]:
        """``(status, why)`` when the request must be refused, else None."""
        if not is_management(path) or (method.upper(), normalized_path(path)) in self.public:
            return None
        if not self.token:
            return 403, (f"model management is off on this server: it was started without "
                         f"{TOKEN_ENV}; set it and send 'Authorization: Bearer <token>'")
        scheme, _, given = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return 401, f"model management needs 'Authorization: Bearer <token>' (the server's {TOKEN_ENV})"
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return 403, "model management refused: the bearer token is wrong"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])  # type: ignore[arg-type]
            auth = headers.get(b"authorization")
            refused = self.refusal(str(scope.get("method", "")), str(scope.get("path", "")),
                                   auth.decode("latin-1") if auth is not None else None)
            if refused is not None:
                status, why = refused
                metrics.REJECTED.labels(metrics.server_name(), "unauthorized").inc()
                log.warning("refused %s %s: %s", scope.get("method"), scope.get("path"), why)
                await send_json(send, status, {"error": why},
                                {"WWW-Authenticate": "Bearer"} if status == 401 else None)
                return
        await self.app(scope, receive, send)


class ManagedRepositoryExtension(ModelRepositoryExtension):
    """kserve's repository extension whose unload / load keep the model registered
    (see the module docstring)."""

    def _model(self, name: str) -> Any:
        model = self._model_registry.get_model(name)
        if model is None:
            raise ModelNotFound(name)
        return model

    async def unload(self, model_name: str) -> None:
        """Takes the model out of service: not ready, its loaded state released."""
        model = self._model(model_name)
        release = getattr(model, "release", None)
        if callable(release):
            await asyncio.get_running_loop().run_in_executor(None, release)
        else:
            model.ready = False
        log.warning("model %s unloaded: not ready until it is loaded again", model_name)

    async def load(self, model_name: str) -> None:
        """Brings the model back into service, or 503 naming why it cannot."""
        model = self._model(model_name)
        restore = getattr(model, "restore", None)
        result: Dict[str, Any] = {}
        if callable(restore):
            result = await asyncio.get_running_loop().run_in_executor(None, restore) or {}
        else:
            model.ready = True
        if not await self._model_registry.is_model_ready(model_name):
            why = result.get("error") or "it reports not ready"
            raise ApiError(f"model {model_name} could not be loaded: {why}", 503, {"Retry-After": "1"})
        log.info("model %s loaded", model_name)


class UpstreamReadiness:
    """Whether the servers this one calls are ready: ``GET <url>/v1/models/<name>``
    on each, remembered for ``ttl_s`` so that probes stay cheap.

    200 is ready unless the body says ``"ready": false``; 404, 503, a timeout or
    no connection is not ready; a server that does not serve that route (405,
    501) cannot tell cheaply and counts as ready.
    """

    def __init__(self, urls: Sequence[str], model_name: str, timeout_s: float = 0.5, ttl_s: float = 1.0):
        self.urls = [u.rstrip("/") for u in urls if u]
        self.model_name = model_name
        self.timeout_s, self.ttl_s = timeout_s, ttl_s
        self._checked_at = -float("inf")
        self._ready = False
        self._client: Optional[httpx.AsyncClient] = None

    async def _one(self, url: str) -> bool:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
        try:
            r = await self._client.get(f"{url}/v1/models/{self.model_name}")
        except httpx.HTTPError as e:
            log.info("upstream %s not ready: %s", url, type(e).__name__)
            return False
        if r.status_code in (405, 501):
            return True
        if r.status_code != 200:
            log.info("upstream %s not ready: HTTP %d", url, r.status_code)
            return False
        try:
            body = r.json()
        except ValueError:
            return True
        return not (isinstance(body, dict) and body.get("ready") is False)

    async def __call__(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at >= self.ttl_s:
            results = await asyncio.gather(*(self._one(u) for u in self.urls))
            self._ready, self._checked_at = all(results), time.monotonic()
        return self._ready


def install_readiness(model_server: Any, extra: Optional[ReadyCheck] = None) -> None:
    """Makes ``model_server``'s readiness honest (see the module docstring)."""
    dataplane, registry = model_server.dataplane, model_server.registered_models
    model_ready = dataplane.model_ready

    async def ready() -> bool:
        names = list(registry.get_models())
        if not names:
            return False
        for name in names:
            if not await registry.is_model_ready(name):
                return False
        return extra is None or await extra()

    async def honest_model_ready(model_name: str, disable_predictor_health_check: bool = False) -> bool:
        ok = await model_ready(model_name, disable_predictor_health_check)
        if ok and extra is not None and not disable_predictor_health_check:
            return await extra()
        return ok

    dataplane.ready = ready
    dataplane.model_ready = honest_model_ready
