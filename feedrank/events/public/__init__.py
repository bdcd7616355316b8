"""Converters of real public logs that registry packages ship (docs/public_logs.md)."""
