"""The extension host: drop-in A1111 extension folders (discovery, installers, preload, scripts,
callbacks). The A1111 import names extensions use (``modules.scripts``, ``modules.shared`` …) are
facades in ``modules/*.py`` that reach the host through ``context``."""
