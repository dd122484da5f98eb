"""What the A1111 facades (``modules/shared.py``, ``modules/scripts.py`` …) reach: the running
host's settings, flags, callbacks and the extension being imported.

A1111's extension API is module-global (``from modules.shared import opts``), so the facades need
one place to find the live objects. This module is that one place: the host binds it once at
start-up. Hanga's own code never reads it; it passes its objects explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modules.service.extensions.callbacks import Callbacks


@dataclass
class FacadeContext:
    settings: Any = None  # modules.service.settings.Settings
    flags: Any = None  # the parsed argparse namespace (shared.cmd_opts)
    service: Any = None  # the GenerationService, once built
    paths: Any = None  # modules.core.paths.Paths
    callbacks: Callbacks = field(default_factory=Callbacks)
    host: Any = None  # the ExtensionHost loading or running the extensions
    serving: bool = False  # the web server answers requests (extension code may now act on request data)
    current_extension: str = ""  # whose scripts are being imported
    current_basedir: Path | None = None


_bound = FacadeContext()


def bind(**values: Any) -> FacadeContext:
    """Set the live objects (called by the host; fields not given keep their values)."""
    for key, value in values.items():
        if not hasattr(_bound, key):
            raise AttributeError(f"FacadeContext has no field {key!r}")
        setattr(_bound, key, value)
    return _bound


def current() -> FacadeContext:
    return _bound
