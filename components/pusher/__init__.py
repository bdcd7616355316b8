"""Pusher: blessed models to <push_dir>/<version>/, atomically, never the same model twice."""
