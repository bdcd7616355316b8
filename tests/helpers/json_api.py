"""`JsonApiHandler`: the base of the tests' loopback stand-ins for JSON HTTP APIs (the
Kubernetes API server, the KFP API): quiet, JSON replies, object names under ``PREFIX``;
`loopback_kube` serves one with a kubeconfig pointing at it."""
import contextlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import yaml


class JsonApiHandler(BaseHTTPRequestHandler):
    """A quiet request handler that answers JSON; ``PREFIX`` is the collection's path."""

    PREFIX = ""

    def log_message(self, *args):  # quiet
        pass

    def _send(self, body, status=200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _name(self):
        path = self.path.split("?")[0]
        assert path.startswith(self.PREFIX), path
        return path[len(self.PREFIX):].strip("/")


@contextlib.contextmanager
def loopback_kube(handler: type, tmp_path) -> Iterator[str]:
    """Serves ``handler`` on a free loopback port and yields the path of a kubeconfig that
    points the kubernetes client at it; stops the server on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = os.path.join(str(tmp_path), "kubeconfig")
    with open(kubeconfig, "w") as f:
        yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "loopback",
            "clusters": [{"name": "loopback", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
            "users": [{"name": "nobody", "user": {}}],
            "contexts": [{"name": "loopback", "context": {"cluster": "loopback", "user": "nobody"}}]}, f)
    try:
        yield kubeconfig
    finally:
        server.shutdown()
        server.server_close()
