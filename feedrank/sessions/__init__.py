"""The session recommender's data: sessionization in Beam and the DRNN's training samples.

`features` declares the samples' feature contract, `sessionize` cuts the shop's page
views and add-to-carts into sessions, `samples` turns sessions into training samples
(full and shortened paths) and `beam_samples` is the Beam graph from an event log to
train/eval TFRecords (docs/sessions.md).
"""
