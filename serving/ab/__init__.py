"""The A/B test on one machine, on the serving side (docs/ab.md).

* `stack`: the local serving stack (``serving.stack``: Redis, the
  feature updater, both predictors, the transformer, the log sink) as a
  context manager on free loopback ports;
* `demo`: ``make ab-demo``'s driver, from training both arms to the decision.

They run in the pipeline's environment (``make ab-demo`` uses ``.venv``) and
start the servers as subprocesses; the statistics, the report and the
decision are ``feedrank.ab``'s.
"""
