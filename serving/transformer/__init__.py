"""The ranking API apps call: builds the model's raw features from Redis and
the post-attribute store, calls the predictor and returns a ranking."""
