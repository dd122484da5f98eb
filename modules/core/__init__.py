"""Core: models, sampling, generation; no web framework imports."""
