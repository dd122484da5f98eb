"""Extension folders: built-ins (``extensions-builtin``) then the user's (``<data>/extensions``),
each sorted by name; ``metadata.ini`` read for names, requirements and script order."""

from __future__ import annotations

import configparser
import logging
from dataclasses import dataclass, field
from pathlib import Path

from modules.service.extensions_list import git_facts

log = logging.getLogger("hanga")


@dataclass(eq=False)
class Extension:
    name: str  # the folder name
    path: Path
    is_builtin: bool
    enabled: bool = True
    canonical_name: str = ""
    requires: tuple[str, ...] = ()
    script_order: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)  # scripts/x.py → Before/After/Requires
    errors: list[str] = field(default_factory=list)  # install or import failures, with tracebacks
    scripts: list[str] = field(default_factory=list)  # titles of the scripts it added
    remote: str = ""
    branch: str = ""
    commit_hash: str = ""

    @property
    def status(self) -> str:
        if not self.enabled:
            return "disabled"
        return "error" if self.errors else "ok"


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip().lower() for name in text.replace(",", " ").split() if name.strip())


def read_metadata(extension: Extension) -> None:
    """``[Extension] Name=, Requires=`` and ``[scripts/x.py] Requires/Before/After``."""
    extension.canonical_name = extension.name.lower()
    path = extension.path / "metadata.ini"
    if not path.is_file():
        return
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as error:
        extension.errors.append(f"metadata.ini unreadable: {error}")
        return
    if parser.has_section("Extension"):
        extension.canonical_name = parser.get("Extension", "Name", fallback=extension.name).strip().lower() or extension.name.lower()
        extension.requires = _names(parser.get("Extension", "Requires", fallback=""))
    for section in parser.sections():
        if section.startswith("scripts/"):
            extension.script_order[section] = {key: _names(parser.get(section, key, fallback=""))
                                               for key in ("Requires", "Before", "After")}


def discover(builtin_dir: Path, user_dir: Path, disabled: set[str], disable_all: str = "none") -> list[Extension]:
    """Every extension folder, in load order. ``disable_all``: "none", "extra" (user extensions
    off) or "all" (the ``--disable-all-extensions`` / ``--disable-extra-extensions`` flags)."""
    found: list[Extension] = []
    seen: set[str] = set()
    for folder, builtin in ((builtin_dir, True), (user_dir, False)):
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))):
            extension = Extension(path.name, path, builtin)
            read_metadata(extension)
            if extension.canonical_name in seen:
                log.warning("Extension %s skipped: another extension is already named %r", path, extension.canonical_name)
                continue
            seen.add(extension.canonical_name)
            off = disable_all == "all" or (disable_all == "extra" and not builtin)
            extension.enabled = not off and path.name not in disabled
            facts = git_facts(path)
            extension.remote, extension.branch, extension.commit_hash = facts["remote"], facts["branch"], facts["commit_hash"]
            found.append(extension)
    missing = _missing_requirements(found)
    for extension, needed in missing.items():
        extension.errors.append(f"needs the extension(s) {', '.join(needed)}, which are not installed or are disabled")
        extension.enabled = False
    return found


def _missing_requirements(extensions: list[Extension]) -> dict[Extension, list[str]]:
    active = {e.canonical_name for e in extensions if e.enabled}
    return {e: [r for r in e.requires if r not in active] for e in extensions
            if e.enabled and any(r not in active for r in e.requires)}
