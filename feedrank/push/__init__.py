"""Pushing a blessed model: content fingerprints, the version store and the blessing check.

* `fingerprint.model_fingerprint` - a content hash of an exported SavedModel's files;
* `store.push` - copies a model to ``<push_dir>/<version>/`` through a hidden
  staging directory and a rename, or reuses the version that already holds
  the same fingerprint;
* `blessing.blessed_for` - whether a ModelBlessing artifact blesses this very model.

`components/pusher` wires these into the pipeline's Pusher.
"""
