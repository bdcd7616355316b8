"""Start a kserve model server with the shared guard, error bodies and metrics.

    from serving.common.server import ServerOptions, serve
    serve([my_model], ServerOptions(http_port=8080, server_name="predictor"))

``my_model`` is any ``kserve.Model``; raise ``serving.common.errors.BadRequest``
from it for a bad request.  ``configure_app(app)`` may add routes (admin,
ranking) to the FastAPI app before it starts; with such routes the model
list may be empty (plain FastAPI handlers get the same guard and errors).  gRPC is off: the REST server
is the contract here.

Management (`serving.common.management`): kserve's repository load / unload and
``/admin/*`` answer only to ``Authorization: Bearer <FEEDRANK_ADMIN_TOKEN>`` and are
off without that variable; unload takes a model out of service without
deleting it, load brings it back; ``/v2/health/ready`` is true only while every
model (and ``ServerOptions.ready_check``, e.g. the transformer's champion predictor) is ready.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import struct
from typing import Callable, List, Optional, Tuple

import kserve
from fastapi import FastAPI
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.rest.server import RESTServer
from uvicorn.importer import import_from_string

from serving.common import metrics
from serving.common.errors import BadRequest, install_error_handlers
from serving.common.guard import GuardConfig, RequestGuard
from serving.common.management import (
    PUBLIC_ROUTES,
    ManagedRepositoryExtension,
    ManagementAuth,
    ReadyCheck,
    admin_token_from_env,
    install_readiness,
)

log = logging.getLogger(__name__)

KSERVE_APP = "kserve.model_server:app"


@dataclasses.dataclass
class ServerOptions:
    """How to run one server process."""

    http_port: int = 8080
    host: str = "127.0.0.1"
    server_name: str = "server"
    guard: GuardConfig = dataclasses.field(default_factory=GuardConfig)
    executor_threads: int = 4
    configure_app: Optional[Callable[[FastAPI], None]] = None
    admin_token: Optional[str] = None      # None: FEEDRANK_ADMIN_TOKEN; "": management off
    public_routes: Tuple[Tuple[str, str], ...] = PUBLIC_ROUTES   # read-only routes left open
    ready_check: Optional[ReadyCheck] = None   # what else must be ready (the transformer's predictor)


class GuardedRESTServer(RESTServer):
    """kserve's REST server with our error handlers and request guard on top."""

    def __init__(self, options: ServerOptions, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.options = options
        self.config.host = options.host

    def create_application(self) -> None:
        super().create_application()
        app: FastAPI = import_from_string(KSERVE_APP)
        install_error_handlers(app)
        app.add_middleware(RequestGuard, config=self.options.guard)
        token = admin_token_from_env() if self.options.admin_token is None else self.options.admin_token
        app.add_middleware(ManagementAuth, token=token, public=self.options.public_routes)
        log.info("model management %s", "needs the bearer token" if token else "is off (no FEEDRANK_ADMIN_TOKEN)")
        if self.options.configure_app is not None:
            self.options.configure_app(app)


def _guard_decode(dataplane) -> None:
    """kserve's request decoding raises KeyError, ValueError, struct.error or
    InferenceError on malformed input (a v2 body without ``inputs``, binary
    data that does not fit its shape, BYTES that are not UTF-8); those are the
    caller's errors, so they become 400s here."""
    decode = dataplane.decode

    def guarded(*args, **kwargs):
        try:
            return decode(*args, **kwargs)
        except KeyError as e:
            raise BadRequest(f"malformed request: missing field {e.args[0]!r}") from None
        except (ValueError, TypeError, IndexError, struct.error, InferenceError) as e:
            if isinstance(e, InvalidInput):
                raise
            if isinstance(e, UnicodeDecodeError) or "UTF-8" in str(e):
                raise BadRequest("malformed request: a BYTES tensor holds bytes that are not UTF-8") from None
            raise BadRequest("malformed request: tensor data does not match its declared shape and "
                             "datatype (check shape, datatype and binary_data_size)") from None

    dataplane.decode = guarded


def serve(models: List[kserve.Model], options: ServerOptions) -> None:
    """Registers ``models`` (each must already be ready) and serves until a signal."""
    metrics.set_server_name(options.server_name)
    model_server = kserve.ModelServer(http_port=options.http_port, enable_grpc=False, workers=1)
    for m in models:
        if not m.ready:
            raise RuntimeError(f"model {m.name!r} is not ready; load it before serving")
        model_server.register_model(m)
    _guard_decode(model_server.dataplane)
    install_readiness(model_server, options.ready_check)
    rest = GuardedRESTServer(options, KSERVE_APP, model_server.dataplane,
                             ManagedRepositoryExtension(model_server.registered_models), options.http_port)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(options.executor_threads))
        log.info("serving %s on http://%s:%d", [m.name for m in models], options.host, options.http_port)
        await rest.start()

    asyncio.run(main())
