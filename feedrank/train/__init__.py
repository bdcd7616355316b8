"""Train stage: the TFX Trainer's run_fn, the input pipeline, model families and export."""
