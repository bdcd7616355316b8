"""Export: a SavedModel with the tf.Transform graph inside and two signatures.

* ``serving_default`` takes raw features as the online service sends them:
  the user's side once per request (leading dimension 1, broadcast) or once
  per candidate, and N candidates.  Sequences are string matrices padded
  with "" (most recent last); padding may sit on either side, every ""
  is dropped before the lookups.  Crosses are computed in-graph.  With one
  user row, the user's side is transformed and run through the model's
  user-side layers once per request (`serving_graph`).  The user counters
  and the crosses not in `features.IN_GRAPH_CROSSES` (user x category
  counters, session share, recency) are request inputs: user-side once,
  the crosses per candidate.
* ``serving_tf_example`` takes serialized raw tf.Examples (TFMA, batch scoring).

Declared item/user columns (docs/features.md) are inputs of both: in
``serving_default`` a user-side one comes with the user's side, a
candidate-side one per candidate; a token bag is a string matrix padded with
"" like a sequence.  The model's feature contract (`features.FeatureSpec`) is
saved beside the SavedModel as ``declared_features.json``
(`features.FeatureSpec.write`; `features.FeatureSpec.read` restores it).

Both return ``{"probabilities": [N]}``, the model's output corrected for
negative down-sampling and then calibrated: a model trained on negatives kept
with rate r predicts q; ``p = q / (q + (1 - q) / r)`` undoes the sampling
(`correct_for_sampling`), and the `calibration.Calibrator` the Trainer fitted
on the validation split (Platt scaling, isotonic or the identity) maps p to
the served probability.  The calibrator's parameters are constants in the
graph of both signatures, so every consumer of the SavedModel (the online
predictor, the Evaluator, batch scoring) gets the calibrated probability.
"""
from __future__ import annotations

from typing import Dict, Optional

import tensorflow as tf
import tensorflow_transform as tft

from feedrank import features as F
from feedrank.train import serving_graph
from feedrank.train.calibration import Calibrator
from feedrank.train.serving_graph import strip_padding  # noqa: F401 (API: shared with serving_graph)
from feedrank.transform.crosses import cross_features

OUTPUT_KEY = "probabilities"


def correct_for_sampling(q: tf.Tensor, rate: float) -> tf.Tensor:
    """Undo negative down-sampling at rate ``rate`` (1.0 = no sampling)."""
    if rate >= 1.0:
        return q
    return q / (q + (1.0 - q) / rate)


def served_probability(q: tf.Tensor, rate: float, calibrator: Optional[Calibrator] = None) -> tf.Tensor:
    """The served probability of the model output ``q``: corrected for sampling at ``rate``,
    then calibrated (``calibrator`` None: the identity)."""
    return (calibrator or Calibrator()).apply(correct_for_sampling(q, rate))


def serving_input_signature(spec: F.FeatureSpec) -> Dict[str, tf.TensorSpec]:
    """The raw request contract of ``serving_default`` for the feature contract ``spec``."""
    signature: Dict[str, tf.TensorSpec] = {}
    matrices = {s.name for s in spec.seq_features} | {b.name for b in spec.bag_features}
    for name in spec.features_of_side("user"):
        is_matrix = name in matrices
        signature[name] = tf.TensorSpec([None, None] if is_matrix else [None],
                                        tf.float32 if spec.is_dense(name) else tf.string, name=name)
    for f in spec.id_features:
        if f.side == "candidate":
            signature[f.name] = tf.TensorSpec([None], tf.string, name=f.name)
    for d in spec.request_dense("candidate"):   # the candidate's own and the request-sent crosses
        signature[d.name] = tf.TensorSpec([None], tf.float32, name=d.name)
    for b in spec.bag_features:   # declared token bags: string matrices padded with ""
        if b.side == "candidate":
            signature[b.name] = tf.TensorSpec([None, None], tf.string, name=b.name)
    return signature


class ServingModule(tf.Module):
    """Holds the Keras model and the tf.Transform layer; defines the signatures of the
    feature contract ``spec`` the model was built with, whose output is `served_probability`."""

    def __init__(self, model, tf_transform_output: tft.TFTransformOutput, sampling_rate: float, *,
                 spec: F.FeatureSpec, calibrator: Optional[Calibrator] = None):
        super().__init__()
        self.model = model
        self._spec = spec
        self.tft_layer = tf_transform_output.transform_features_layer()
        self.request_scorer = serving_graph.RequestScorer(model, self.tft_layer, spec=spec)
        self.sampling_rate = float(sampling_rate)
        self.calibrator = calibrator or Calibrator()
        self._example_spec = spec.raw_feature_spec(include_labels=False, include_metadata=False)
        self.serve_raw = tf.function(self._serve_raw, input_signature=[serving_input_signature(spec)])

    def _score_raw(self, raw: Dict[str, tf.Tensor]) -> tf.Tensor:
        transformed = self.tft_layer(raw)
        inputs = {k: transformed[k] for k in self._spec.model_input_names()}
        q = self.model(inputs, training=False)
        return served_probability(q, self.sampling_rate, self.calibrator)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_examples(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
        raw = tf.io.parse_example(examples, self._example_spec)
        return {OUTPUT_KEY: self._score_raw(raw)}

    def _serve_raw(self, request: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        def shared() -> tf.Tensor:  # the user's side once per request (serving_graph)
            return served_probability(self.request_scorer(request), self.sampling_rate, self.calibrator)

        return {OUTPUT_KEY: tf.cond(serving_graph.user_rows(request, spec=self._spec), shared,
                                    lambda: self.broadcast_scores(request))}

    def broadcast_scores(self, request: Dict[str, tf.Tensor]) -> tf.Tensor:
        """Scores with the user's side copied to every candidate row (user side with N rows)."""
        spec = self._spec
        n = tf.shape(request[F.ITEM_ID.name])[0]
        raw: Dict[str, tf.Tensor] = {}
        dense_seqs: Dict[str, tf.Tensor] = {}

        def rows(x: tf.Tensor) -> tf.Tensor:   # the user's one row (or N rows) as N rows
            return tf.broadcast_to(x, tf.stack([n, tf.shape(x)[1]]))

        for s in spec.seq_features:
            ids = serving_graph.aligned_ids(request, s, spec)
            ragged = strip_padding(rows(request[s.name]), s.max_len, None if ids is None else rows(ids))
            raw[s.name] = ragged.to_sparse()
            dense_seqs[s.name] = ragged.to_tensor(default_value="")
        for b in spec.bag_features:
            x = request[b.name]
            if b.side == "user":
                x = rows(x)
            raw[b.name] = strip_padding(x, b.max_len).to_sparse()
        for name in spec.features_of_side("user"):
            if name not in raw:
                raw[name] = tf.broadcast_to(request[name], [n])
        for f in spec.id_features:
            if f.side == "candidate":
                raw[f.name] = request[f.name]
        for d in spec.request_dense("candidate"):
            raw[d.name] = request[d.name]
        raw.update(cross_features(raw[F.USER_REGION_ID.name], raw[F.REGION_ID.name],
                                  dense_seqs[F.CLICK_CATEGORIES.name], raw[F.CATEGORY_ID.name]))
        return self._score_raw(raw)


def export(model, tf_transform_output: tft.TFTransformOutput, export_dir: str,
           sampling_rate: float = 1.0, *, spec: F.FeatureSpec, calibrator: Optional[Calibrator] = None) -> str:
    """Saves the serving SavedModel of the feature contract ``spec`` to ``export_dir``,
    writes ``spec`` beside it (`features.FeatureSpec.write`, ``[]`` for the built-in
    features; serving reads it with `features.FeatureSpec.read`) and returns the dir.

    Both signatures return `served_probability` with ``calibrator`` in the graph
    (None: the identity, the sampling-corrected probability)."""
    module = ServingModule(model, tf_transform_output, sampling_rate, spec=spec, calibrator=calibrator)
    signatures = {
        "serving_default": module.serve_raw.get_concrete_function(),
        "serving_tf_example": module.serve_tf_examples.get_concrete_function(),
    }
    tf.saved_model.save(module, export_dir, signatures=signatures)
    spec.write(export_dir)
    return export_dir
