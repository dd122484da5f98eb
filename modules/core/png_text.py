"""The infotext of an image file, read without decoding pixels.

PNG files are read chunk by chunk up to the first IDAT: the ``parameters`` text chunk (tEXt, zTXt
or iTXt) is all a gallery needs, and skipping PIL's decoder set-up makes reading thousands of
files several times faster. Anything this reader does not take on (an eXIf chunk, whose
UserComment wins over ``parameters`` in A1111; a JPEG or WebP; a damaged PNG) goes through PIL
and `png_meta.read_infotext`, so both paths give what PNG Info shows.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from modules.core.png_meta import PARAMETERS_KEY, read_infotext

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PIL's own bound on a text chunk (PngImagePlugin.MAX_TEXT_CHUNK): a compressed chunk is never
# inflated past it, so a hostile file cannot make us allocate gigabytes.
MAX_TEXT_CHUNK = 1024 * 1024
_KEY = PARAMETERS_KEY.encode("latin-1")
_STOP = (b"IDAT", b"IEND")
_UNREADABLE = (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError, SyntaxError)


class _UsePil(Exception):
    """This PNG needs PIL's reader (EXIF present, or a chunk this reader will not interpret)."""


def read_file_infotext(path: str | Path) -> str | None:
    """The ``parameters`` infotext of an image file, None when it has none or cannot be read."""
    try:
        with open(path, "rb") as handle:
            if handle.read(8) == PNG_SIGNATURE:
                return _png_parameters(handle)
    except (_UsePil, ValueError, zlib.error):  # ValueError: text that is not UTF-8 (PIL skips it)
        pass
    except OSError:
        return None
    return _pil_infotext(path)


def _pil_infotext(path: str | Path) -> str | None:
    try:
        with Image.open(path) as image:
            return read_infotext(image)[0]
    except _UNREADABLE:
        return None


def _png_parameters(handle) -> str | None:
    found = None
    while True:
        header = handle.read(8)
        if len(header) < 8:
            raise _UsePil  # truncated before IDAT: let PIL decide what it can read
        length, kind = struct.unpack(">I4s", header)
        if kind in _STOP:
            return found
        if kind == b"eXIf":
            raise _UsePil
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            if length > MAX_TEXT_CHUNK:
                raise _UsePil
            data = handle.read(length)
            if len(data) < length:
                raise _UsePil
            value = _text_chunk(kind, data)
            found = found if value is None else value  # PIL keeps the last of repeated keys
            handle.seek(4, 1)  # CRC
        else:
            handle.seek(length + 4, 1)


def _text_chunk(kind: bytes, data: bytes) -> str | None:
    """The value of a ``parameters`` text chunk, None for any other key (PNG spec §11.3.4)."""
    key, sep, rest = data.partition(b"\0")
    if not sep or key != _KEY:
        return None
    if kind == b"tEXt":
        return rest.decode("latin-1")
    if kind == b"zTXt":
        return _inflate(rest[1:]).decode("latin-1") if rest[:1] == b"\0" else None
    if len(rest) < 2:
        return None
    compressed, method = rest[0], rest[1]
    _language, _, rest = rest[2:].partition(b"\0")
    _translated, _, text = rest.partition(b"\0")
    if compressed:
        if method != 0:
            return None
        text = _inflate(text)
    return text.decode("utf-8", errors="strict")


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    text = inflater.decompress(data, MAX_TEXT_CHUNK)
    if inflater.unconsumed_tail:
        raise _UsePil  # bigger than PIL would read: PIL drops it the same way
    return text
