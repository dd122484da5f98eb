"""A1111 facade: ``modules.paths`` — where Hanga and the user's data live."""

from __future__ import annotations

from typing import Any

from modules.core.paths import INSTALL_DIR
from modules.service.extensions import context

script_path = str(INSTALL_DIR)
extensions_builtin_dir = str(INSTALL_DIR / "extensions-builtin")


def __getattr__(name: str) -> Any:  # PEP 562: the data folder is known once Hanga runs
    paths = context.current().paths
    if paths is None:
        raise AttributeError(f"modules.paths.{name} is not known before Hanga has started")
    values = {"data_path": paths.data, "models_path": paths.models, "extensions_dir": paths.extension_dirs[0]}
    if name in values:
        return str(values[name])
    raise AttributeError(f"module 'modules.paths' has no attribute {name!r}")
