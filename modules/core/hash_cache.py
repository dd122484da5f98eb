"""sha256 of model files, cached in ``cache.json`` by name and mtime (A1111's format, so a data
folder shared with A1111 keeps its hashes): ``{"hashes": {"checkpoint/<name>": {"mtime", "sha256"}}}``.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from modules.core.atomic import keep_aside, write_json
from modules.core.hashing import addnet_hash, file_sha256

log = logging.getLogger("hanga")


class HashCache:
    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._data = self._read()

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            aside = keep_aside(self.path)
            log.warning("%s is unreadable (%s); kept as %s, starting a new cache", self.path, error, aside.name)
            return {}

    def cached(self, file: Path, title: str, section: str = "hashes") -> str | None:
        """The cached sha256 when the file has not changed since it was hashed."""
        try:
            mtime = file.stat().st_mtime
        except FileNotFoundError:
            return None
        with self._lock:
            entry = self._data.get(section, {}).get(title)
        if not isinstance(entry, dict) or not entry.get("sha256") or mtime > entry.get("mtime", 0):
            return None
        return entry["sha256"]

    def sha256(self, file: Path, title: str) -> str:
        """Hash (or reuse the cached hash of) ``file``, storing it under ``title``."""
        return self._hash(file, title, "hashes", file_sha256)

    def addnet(self, file: Path, title: str) -> str:
        """The LoRA "addnet" hash (``hashing.addnet_hash``), cached under ``hashes-addnet`` as A1111."""
        return self._hash(file, title, "hashes-addnet", addnet_hash)

    def _hash(self, file: Path, title: str, section: str, function) -> str:
        found = self.cached(file, title, section)
        if found:
            return found
        log.info("Calculating sha256 for %s", file)
        mtime = file.stat().st_mtime
        digest = function(file)
        with self._lock:
            self._data.setdefault(section, {})[title] = {"mtime": mtime, "sha256": digest}
            write_json(self.path, self._data)
        return digest
