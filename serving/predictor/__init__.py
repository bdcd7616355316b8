"""The feedrank predictor: ``python -m serving.predictor --model-dir model_store/<model>``."""
