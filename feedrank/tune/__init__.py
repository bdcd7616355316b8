"""Hyperparameter tuning: a genetic-algorithm KerasTuner Oracle as a TFX Tuner (docs/tuning.md)."""
