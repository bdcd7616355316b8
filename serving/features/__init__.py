"""Real-time features in Redis: key layout, the event updater, the bulk
loader and the reader the transformer assembles model inputs with."""
