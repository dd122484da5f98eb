"""File hashes used to name and look up model files (A1111 compatibility, spec §3.4).

- ``file_sha256``: full-file sha256, streamed so multi-GB checkpoints never sit in memory.
- ``short_hash``: the first 10 hex digits, shown as ``Model hash`` in infotexts and titles.
- ``old_hash``: A1111's pre-2023 8-hex hash, still found in old infotexts and accepted as an alias.
"""

from __future__ import annotations

import hashlib
import os

# A1111's old hash reads a 64 KiB window at offset 1 MiB, so it is cheap even for huge files.
_OLD_HASH_OFFSET = 0x100000
_OLD_HASH_LENGTH = 0x10000


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of the whole file, read ``chunk`` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def addnet_hash(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The LoRA hash A1111 (after kohya's additional-networks extension) shows: sha256 of a
    safetensors file's tensor bytes, after its 8-byte length and JSON header; other files whole."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return file_sha256(path, chunk)
        header_length = int.from_bytes(head, "little")
        f.seek(0, os.SEEK_END)
        if 8 + header_length > f.tell():
            return file_sha256(path, chunk)
        f.seek(8 + header_length)
        digest = hashlib.sha256()
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def short_hash(sha256: str) -> str:
    """The 10-hex prefix A1111 shows as the model hash (``name [6ce0161689]``)."""
    return sha256[:10]


def old_hash(path: str | os.PathLike) -> str:
    """A1111's legacy 8-hex model hash: sha256 of the 64 KiB at offset 1 MiB.

    A file shorter than 1 MiB hashes the empty window, exactly as A1111 does, so the
    alias matches theirs even for tiny files.
    """
    with open(path, "rb") as f:
        f.seek(_OLD_HASH_OFFSET)
        window = f.read(_OLD_HASH_LENGTH)
    return hashlib.sha256(window).hexdigest()[:8]
