"""Hypernetwork files for jobs: the list (``models/hypernetworks/**/*.pt`` or ``--hypernetwork-dir``;
the name is the file name without ``.pt``), loading through the restricted unpickler, and a cache
that reloads a file when it changes."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from modules.core.devices import MemoryManager
from modules.core.generation.request import InvalidRequest
from modules.core.hash_cache import HashCache
from modules.core.models.hypernetwork import Hypernetwork, hypernetwork_from_dict
from modules.core.safe_load import CorruptFileError, UnsafeFileError, load_torch_file

log = logging.getLogger("hanga")


class HypernetworkLibrary:
    """Implements ``core.models.hypernetwork.HypernetworkSource``."""

    def __init__(self, folder: Path, memory: MemoryManager, hashes: HashCache, hashing: bool = True,
                 allow_unsafe: bool = False):
        self.folder = folder
        self.memory = memory
        self.hashes = hashes
        self.hashing = hashing
        self.allow_unsafe = allow_unsafe
        self._lock = threading.Lock()
        self._loaded: dict[str, tuple[float, Hypernetwork]] = {}

    def files(self) -> dict[str, Path]:
        if not self.folder.is_dir():
            return {}
        found = sorted(path for path in self.folder.rglob("*") if path.is_file() and path.suffix.lower() == ".pt")
        return {path.stem: path for path in found if path.stem != "None"}

    def names(self) -> list[str]:
        return list(self.files())

    def load(self, name: str) -> Hypernetwork | None:
        path = self.files().get(name)
        if path is None:
            return None
        mtime = path.stat().st_mtime
        with self._lock:
            cached = self._loaded.get(name)
            if cached is not None and cached[0] == mtime:
                return cached[1]
            try:
                network = hypernetwork_from_dict(load_torch_file(path, allow_unsafe=self.allow_unsafe), name)
            except (UnsafeFileError, CorruptFileError, ValueError, KeyError, RuntimeError, TypeError) as error:
                raise InvalidRequest("prompt", f"hypernetwork {name} ({path.name}) cannot be used: {error}") from None
            for module in network.modules():
                self.memory.place_network(module)
            self._loaded[name] = (mtime, network)
            log.info("Hypernetwork %s loaded (%s)", name, ", ".join(str(width) for width in network.layers))
            return network

    def short_hash(self, name: str) -> str | None:
        path = self.files().get(name)
        if path is None or not self.hashing:
            return None
        return self.hashes.sha256(path, f"hypernet/{name}")[:10]
