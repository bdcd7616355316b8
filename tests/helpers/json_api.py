"""`JsonApiHandler`: the base of the tests' loopback stand-ins for JSON HTTP APIs (the
Kubernetes API server, the KFP API): quiet, JSON replies, object names under ``PREFIX``."""
import json
from http.server import BaseHTTPRequestHandler


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
