"""A1111 facade: ``modules.hashes`` — file hashes through Hanga's hash cache (``cache.json``)."""

from __future__ import annotations

from pathlib import Path

from modules.core.hashing import addnet_hash, file_sha256
from modules.service.extensions import context


def _cache():
    service = context.current().service
    return service.models.hashes if service is not None else None


def sha256(filename: str, title: str, use_addnet_hash: bool = False) -> str:
    cache = _cache()
    if cache is None:
        return addnet_hash(filename) if use_addnet_hash else file_sha256(filename)
    return cache.addnet(Path(filename), title) if use_addnet_hash else cache.sha256(Path(filename), title)


def sha256_from_cache(filename: str, title: str, use_addnet_hash: bool = False) -> str | None:
    """The cached hash, or None when the file has not been hashed (or changed since)."""
    cache = _cache()
    if cache is None:
        return None
    return cache.cached(Path(filename), title, "hashes-addnet" if use_addnet_hash else "hashes")


def calculate_sha256(filename: str) -> str:
    return file_sha256(filename)
