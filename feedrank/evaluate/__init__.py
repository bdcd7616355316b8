"""Evaluate stage: the TFMA configuration and the run summary."""
