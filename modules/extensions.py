"""A1111 facade: ``modules.extensions`` — the installed extensions as A1111 lists them."""

from __future__ import annotations

from typing import Any

from modules.core.paths import INSTALL_DIR
from modules.service.extensions import context

extensions_builtin_dir = str(INSTALL_DIR / "extensions-builtin")


class Extension:
    """One extension folder (A1111's attribute names) over the host's record of it."""

    def __init__(self, record):
        self._record = record
        self.name = record.name
        self.canonical_name = record.canonical_name
        self.path = str(record.path)
        self.is_builtin = record.is_builtin
        self.enabled = record.enabled
        self.remote = record.remote
        self.branch = record.branch
        self.commit_hash = record.commit_hash

    @property
    def status(self) -> str:
        return self._record.status

    def list_files(self, subdir: str, extension: str) -> list:
        from modules.scripts import ScriptFile

        folder = self._record.path / subdir
        if not folder.is_dir():
            return []
        return [ScriptFile(self.path, path.name, str(path)) for path in sorted(folder.iterdir())
                if path.is_file() and path.suffix.lower() == extension.lower()]


def _host():
    return context.current().host


def active() -> list[Extension]:
    host = _host()
    return [Extension(record) for record in host.active] if host is not None else []


def __getattr__(name: str) -> Any:  # PEP 562: known once Hanga runs
    if name == "extensions":
        host = _host()
        return [Extension(record) for record in host.extensions] if host is not None else []
    if name == "extensions_dir":
        paths = context.current().paths
        if paths is not None:
            return str(paths.extension_dirs[0])
    raise AttributeError(f"module 'modules.extensions' has no attribute {name!r}")
