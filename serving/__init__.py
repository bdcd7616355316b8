"""Online serving of feedrank rankers.

* ``serving.common``: what every HTTP server here shares (error bodies,
  request-size and overload guards, Prometheus metrics, server start-up);
* ``serving.predictor``: the model server, a ``kserve.Model`` around the
  pushed SavedModel (v1 and v2 REST);
* ``serving.features`` and ``serving.transformer``: the real-time feature
  store and the ranking API apps call.

These modules run in their own environment (``requirements-serving.txt``,
``make serving-install``), never in the pipeline's.
"""
