"""ASGI middleware that guards every POST before the application sees it.

* **overload**: beyond ``max_in_flight`` requests being processed, answer
  503 with ``Retry-After`` at once (never queue without bound);
* **size**: a body over ``max_body_bytes`` is refused with 413, whether
  ``Content-Length`` announces it or the stream turns out longer;
* **gzip**: ``Content-Encoding: gzip`` bodies are decompressed here (the
  decompressed size is limited too, against zip bombs) so handlers see
  plain bytes; other encodings get 415;
* **metrics**: latency histogram and counts by route and status;
* **v2 JSON without a Content-Type**: a v2 infer request with neither
  ``Content-Type`` nor ``Inference-Header-Content-Length`` is read as JSON,
  as Triton reads it (:func:`needs_json_content_type`).

GET requests (health, readiness, metadata, /metrics) pass straight through.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
import zlib
from typing import Awaitable, Callable, Dict, List, MutableMapping, Optional, Tuple

from serving.common import metrics

log = logging.getLogger(__name__)

Scope = MutableMapping[str, object]
Message = MutableMapping[str, object]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclasses.dataclass
class GuardConfig:
    """Limits of the guard; every server exposes them as command-line flags."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_in_flight: int = 64
    retry_after_s: float = 1.0


def route_label(path: str) -> str:
    """A bounded metric label for a request path."""
    if path.endswith(":predict"):
        return "v1_predict"
    if path.endswith("/infer"):
        return "v2_infer"
    return path.strip("/").split("/")[0] or "root"


class _Reject(Exception):
    def __init__(self, status: int, message: str, reason: str, headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers or {}


async def send_json(send: Send, status: int, body: Dict[str, object],
                    headers: Optional[Dict[str, str]] = None) -> None:
    """Sends a complete JSON response on a raw ASGI ``send``."""
    data = json.dumps(body).encode()
    raw: List[Tuple[bytes, bytes]] = [(b"content-type", b"application/json"),
                                      (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def needs_json_content_type(path: str, headers: List[Tuple[bytes, bytes]]) -> bool:
    """Whether a POST is a v2 infer request to read as JSON although it names no
    ``Content-Type``: official Open Inference Protocol clients (tritonclient,
    kserve's REST client) send JSON that way, and Triton reads a body without
    ``Inference-Header-Content-Length`` as JSON.  A binary request keeps that header."""
    if not path.rstrip("/").endswith("/infer"):
        return False
    names = {k.lower() for k, _ in headers}
    return b"content-type" not in names and b"inference-header-content-length" not in names


def _gunzip(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
        if len(out) > limit or d.unconsumed_tail:
            raise _Reject(413, f"decompressed body is over the {limit}-byte limit", "too_large")
        out += d.flush()
    except zlib.error as e:
        raise _Reject(400, f"body is not valid gzip: {e}", "bad_encoding") from None
    if not d.eof:
        raise _Reject(400, "body is not valid gzip: truncated stream", "bad_encoding")
    if len(out) > limit:
        raise _Reject(413, f"decompressed body is over the {limit}-byte limit", "too_large")
    return out


class RequestGuard:
    """The middleware: ``app.add_middleware(RequestGuard, config=GuardConfig(...))``."""

    def __init__(self, app: Callable, config: Optional[GuardConfig] = None):
        self.app = app
        self.config = config or GuardConfig()
        self.in_flight = 0

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.config.max_body_bytes
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    raise _Reject(413, f"body of {int(declared)} bytes is over the {limit}-byte limit",
                                  "too_large")
            except ValueError:
                raise _Reject(400, "Content-Length is not a number", "bad_header") from None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Reject(400, "client disconnected", "disconnect")
            chunk = message.get("body", b"") or b""
            size += len(chunk)
            if size > limit:
                raise _Reject(413, f"body is over the {limit}-byte limit", "too_large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        encoding = headers.get(b"content-encoding", b"identity").decode("latin-1").strip().lower()
        label = encoding if encoding in ("gzip", "identity") else "other"
        metrics.REQUEST_BYTES.labels(metrics.server_name(), label).observe(len(body))
        if encoding in ("", "identity"):
            return body
        if encoding == "gzip":
            return _gunzip(body, limit)
        raise _Reject(415, f"Content-Encoding {encoding!r} is not supported (use gzip or none)",
                      "bad_encoding")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        server = metrics.server_name()
        route = route_label(str(scope.get("path", "")))
        start = time.perf_counter()
        status_box = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box["status"] = int(message["status"])  # type: ignore[arg-type]
            await send(message)

        if self.in_flight >= self.config.max_in_flight:
            metrics.REJECTED.labels(server, "overload").inc()
            await send_json(send_wrapper, 503,
                            {"error": f"server overloaded: {self.in_flight} requests in flight "
                                      f"(limit {self.config.max_in_flight}); retry later"},
                            {"Retry-After": str(max(1, int(round(self.config.retry_after_s))))})
            self._observe(route, status_box["status"], start)
            return
        self.in_flight += 1
        metrics.IN_FLIGHT.labels(server).inc()
        try:
            try:
                body = await self._read_body(scope, receive)
            except _Reject as r:
                metrics.REJECTED.labels(server, r.reason).inc()
                await send_json(send_wrapper, r.status, {"error": r.message}, r.headers)
                return
            new_headers = [(k, v) for k, v in scope.get("headers", [])  # type: ignore[union-attr]
                           if k not in (b"content-encoding", b"content-length")]
            new_headers.append((b"content-length", str(len(body)).encode()))
            if needs_json_content_type(str(scope.get("path", "")), new_headers):
                new_headers.append((b"content-type", b"application/json"))
            inner_scope = dict(scope, headers=new_headers)
            sent = {"done": False}

            async def replay() -> Message:
                if not sent["done"]:
                    sent["done"] = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(inner_scope, replay, send_wrapper)
        finally:
            self.in_flight -= 1
            metrics.IN_FLIGHT.labels(server).dec()
            self._observe(route, status_box["status"], start)

    @staticmethod
    def _observe(route: str, status: int, start: float) -> None:
        server = metrics.server_name()
        metrics.REQUEST_LATENCY.labels(server, route, str(status)).observe(time.perf_counter() - start)
        metrics.REQUESTS.labels(server, route, str(status)).inc()
