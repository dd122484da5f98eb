"""Atomic file writes: write a temporary file beside the target, flush it to disk, rename it over
the target. A crash or a full disk leaves either the old file or the new one, never a torn one."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator


@contextlib.contextmanager
def atomic_path(path: Path, sync: bool = True) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that wants a file name (safetensors); once
    the block ends the file is synced to disk and renamed over ``path``, or removed on error.
    ``sync=False`` skips the fsync, for caches: readers still never see a partial file, but a
    crash may leave an empty one (a cache checks for that and rebuilds the entry)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A hidden ".<name>.<random>.tmp": a file cut short by a crash never looks like a picture or a
    # checkpoint to anything that lists the folder by suffix.
    fd, temp = tempfile.mkstemp(prefix=f".{path.name[:200]}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(temp)
        if sync:
            with open(temp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    with atomic_path(path) as temp, open(temp, mode, encoding=encoding) as handle:
        yield handle
        handle.flush()


def write_json(path: Path, data: Any) -> None:
    """A1111's JSON layout (indent 4, UTF-8 kept as is)."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=4, ensure_ascii=False)


def keep_aside(path: Path) -> Path:
    """Rename an unreadable file to ``<name>.corrupt-<timestamp>`` so nothing overwrites it."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    os.replace(path, aside)
    return aside


def write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
