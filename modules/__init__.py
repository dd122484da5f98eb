"""Hanga: a local web UI for Stable-Diffusion-family models.

Layers (imports go one way only): ``modules.core`` -> ``modules.service`` -> ``modules.ui``.
Top-level ``modules/<name>.py`` files that mirror AUTOMATIC1111 module names are
compatibility facades for extensions; Hanga's own code never imports them.
"""
