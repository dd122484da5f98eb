"""Finding checkpoint files and naming them the way A1111 does.

Titles are ``relative/name.safetensors [shorthash]`` (shorthash = first 10 hex of the file's
sha256). A checkpoint is known by many aliases (title, relative name, name without extension,
file stem, short hash, full sha256), so infotexts and API clients from A1111 find it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    name: str  # path relative to its folder, "/"-separated; absolute for files given with --ckpt
    sha256: str | None = None

    @property
    def stem(self) -> str:
        """File name without folder or extension: the infotext's ``Model``."""
        return Path(self.name).stem

    @property
    def model_name(self) -> str:
        """A1111's ``model_name``: the relative name without extension, folders joined with "_"."""
        return os.path.splitext(self.name.replace("/", "_").replace("\\", "_"))[0]

    @property
    def shorthash(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None

    @property
    def title(self) -> str:
        return f"{self.name} [{self.shorthash}]" if self.shorthash else self.name

    @property
    def cache_key(self) -> str:
        return f"checkpoint/{self.name}"

    @property
    def yaml(self) -> Path | None:
        candidate = self.path.with_suffix(".yaml")
        return candidate if candidate.is_file() else None

    def aliases(self) -> list[str]:
        names = [self.title, self.name, os.path.splitext(self.name)[0], self.model_name, self.stem, self.path.name]
        if self.sha256:
            names += [self.shorthash, self.sha256, f"{self.name} [{self.shorthash}]", f"{self.stem} [{self.shorthash}]"]
        return names


def _is_checkpoint(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith(CHECKPOINT_SUFFIXES) and ".vae." not in name


def discover(folders: Iterable[Path], extra_files: Iterable[Path] = ()) -> list[CheckpointInfo]:
    """Every checkpoint under ``folders`` (recursively) plus ``extra_files``, sorted by name."""
    found: dict[Path, CheckpointInfo] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if _is_checkpoint(path) and path.resolve() not in found:
                relative = path.relative_to(folder).as_posix()
                found[path.resolve()] = CheckpointInfo(path=path, name=relative)
    for path in extra_files:
        if _is_checkpoint(path) and path.resolve() not in found:
            found[path.resolve()] = CheckpointInfo(path=path, name=path.as_posix())
    return sorted(found.values(), key=lambda info: info.name.lower())


def find(checkpoints: Iterable[CheckpointInfo], wanted: str) -> CheckpointInfo | None:
    """Look a checkpoint up by any alias (exact match first, then case-insensitive)."""
    wanted = wanted.strip()
    candidates = list(checkpoints)
    for info in candidates:
        if wanted in info.aliases():
            return info
    lowered = wanted.lower()
    for info in candidates:
        if lowered in (alias.lower() for alias in info.aliases()):
            return info
    return None
