"""What every feedrank HTTP server shares.

* ``errors``: :class:`~serving.common.errors.BadRequest` and friends; every
  error reaches the caller as JSON ``{"error": "..."}`` with a 4xx (bad
  request, 413 too large, 415 encoding) or 503 + ``Retry-After`` (overload),
  never a 500 with a Python exception's text.  Plain FastAPI routes read
  their body with ``errors.read_json_object(request)`` (400 on bad JSON).
* ``guard``: ASGI middleware for POSTs: body-size limit, gzip request
  bodies, in-flight limit (503 + Retry-After), latency metrics.
* ``metrics``: the Prometheus metrics (served by kserve at ``/metrics``).
* ``management``: model management (kserve's repository load / unload,
  ``/admin/*``) only with ``Authorization: Bearer <FEEDRANK_ADMIN_TOKEN>``, off
  without that variable; unload takes a model out of service, load brings it
  back; readiness is true only while every model (and what the server calls)
  is ready.
* ``server``: ``serve([model], ServerOptions(...))`` runs kserve's REST
  server with all of the above, and ``configure_app`` for extra routes.
* ``procs``: free ports (``feedrank.ports``), start/stop a server subprocess,
  wait for readiness (no kserve: usable from the pipeline environment and tests).

A new server (e.g. the transformer)::

    from serving.common.errors import BadRequest
    from serving.common.guard import GuardConfig
    from serving.common.server import ServerOptions, serve

    class Ranker(kserve.Model):
        async def predict(self, payload, headers=None):
            if "user_id" not in payload:
                raise BadRequest("missing field 'user_id'")
            ...
    serve([Ranker("ranker")], ServerOptions(http_port=8090, server_name="transformer",
                                            guard=GuardConfig(max_body_bytes=1 << 20)))

Nothing is imported here, so ``procs`` stays importable without kserve.
"""
