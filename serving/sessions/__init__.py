"""The real-time session endpoint: a shopper's session state in Redis and the
pushed session model's refreshed top-k after every page view (docs/session_serving.md).

* `state`: the per-user state and the session rule (`feedrank.sessions.sessionize`'s);
* `request`: the request contract; `model`: the ``kserve.Model``;
* `updater`: applies the event stream's page views and add-to-carts to the same state;
* ``python -m serving.sessions``: the server.
"""
