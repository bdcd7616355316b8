"""SessionEvaluator: the session recommender's Evaluator (top-k metrics, blessing on top-10 accuracy)."""
