"""The TFX Trainer with an optional word-vectors input (components/word2vec)."""
