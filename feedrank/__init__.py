"""feedrank: behaviour-sequence CTR models (DIN/DIEN) for a classifieds home feed, as a TFX pipeline."""
