"""Prometheus metrics shared by the servers (default registry, served at /metrics).

Every metric carries a ``server`` label (``predictor``, ``transformer``) set
once with :func:`set_server_name`; use :func:`labels` to fill it in.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_SERVER = {"name": "server"}

# Latency buckets from 0.5 ms to 2.5 s: the targets are a few milliseconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03,
                   0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUEST_LATENCY = Histogram(
    "feedrank_request_latency_seconds", "Request latency, body received to response sent.",
    ["server", "route", "status"], buckets=LATENCY_BUCKETS)
REQUESTS = Counter("feedrank_requests_total", "Requests answered.", ["server", "route", "status"])
IN_FLIGHT = Gauge("feedrank_in_flight_requests", "Requests being processed.", ["server"])
REJECTED = Counter("feedrank_rejected_total", "Requests refused before processing.",
                   ["server", "reason"])
ERRORS = Counter("feedrank_internal_errors_total", "Unexpected server errors (HTTP 500).", ["kind"])
REQUEST_BYTES = Histogram("feedrank_request_body_bytes", "Request body size on the wire.",
                          ["server", "encoding"],
                          buckets=(1e3, 4e3, 16e3, 32e3, 64e3, 128e3, 256e3, 512e3, 1e6, 4e6))


def set_server_name(name: str) -> None:
    """Names this process's server in every metric's ``server`` label."""
    _SERVER["name"] = name


def server_name() -> str:
    """The ``server`` label of this process."""
    return _SERVER["name"]
