"""Online serving of feedrank rankers.

* ``serving.common``: what every HTTP server here shares (error bodies,
  request-size and overload guards, Prometheus metrics, server start-up);
* ``serving.predictor``: the model server, a ``kserve.Model`` around the
  pushed SavedModel (v1 and v2 REST);
* ``serving.features`` and ``serving.transformer``: the real-time feature
  store and the ranking API apps call;
* ``serving.ab``: the local stack for an A/B test and ``make ab-demo``.

The servers run in their own environment (``requirements-serving.txt``,
``make serving-install``); the launchers (``serving.stack``,
``serving.ab``) also run in the pipeline's and start the servers with the
serving environment's Python.  Both environments have the project installed,
and ``serving`` imports ``feedrank``, never the other way round.
"""
