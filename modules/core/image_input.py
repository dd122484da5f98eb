"""Reading pictures that come from outside (a request, an upload, a folder) without letting a small
file claim gigabytes: the size in the header is checked before any pixel is decoded.

Pillow refuses images over ``2 * Image.MAX_IMAGE_PIXELS`` (about 179 megapixels) on its own and
only warns below that; we refuse anything over the caller's limit (the ``limit_max_image_megapixels``
setting) with a message naming the picture, and never change Pillow's module-level limit.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 64 * 1024 * 1024


class ImageTooLarge(ValueError):
    """A picture whose header says it is bigger than the limit (a decompression bomb, or a mistake)."""


class UnreadableImage(ValueError):
    """Not a picture Pillow can decode; ``reason`` says why without the name."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name} is not a readable image ({reason})")
        self.reason = reason


def megapixels(limit_mp: float) -> int:
    return int(limit_mp * 1024 * 1024)


def read_image(source: str | Path | bytes | BinaryIO, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image",
               transpose: bool = False) -> Image.Image:
    """The decoded picture; ``ImageTooLarge`` before decoding when its header is over ``max_pixels``,
    ``UnreadableImage`` when it is not a picture. ``transpose`` applies the EXIF orientation."""
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with Image.open(handle) as opened:
            width, height = opened.size
            if width * height > max_pixels:
                raise ImageTooLarge(f"{name} is {width}x{height} ({width * height / 2**20:.0f} megapixels); at most "
                                    f"{max_pixels / 2**20:.0f} megapixels are read (the limit_max_image_megapixels "
                                    "setting)")
            picture = ImageOps.exif_transpose(opened) if transpose else opened
            picture.load()
            return picture  # pixels loaded: usable after the file is closed
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(f"{name}: {error}") from None
    except UnidentifiedImageError:
        raise UnreadableImage(name, "not a picture format that can be read") from None
    except (OSError, SyntaxError, ValueError) as error:
        if isinstance(error, ImageTooLarge):
            raise
        raise UnreadableImage(name, str(error)) from None
