"""`SessionSampleGen`: the session recommender's training samples from the shop's event log."""
