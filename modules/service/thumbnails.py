"""Small JPEG thumbnails of output images, made on demand and kept on disk.

A thumbnail's file name is a hash of the source's path, mtime and size (and the thumbnail size),
so an edited or replaced image gets a new one and a stale one is never shown. The folder is an
LRU cache: a hit refreshes the file's mtime, and when the folder passes its file or byte budget
the least recently used thumbnails are removed down to 90 % of it. Only two running totals are
kept in memory, never the thumbnails or a list of them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from modules.core.atomic import atomic_path
from modules.core.image_input import DEFAULT_MAX_PIXELS

log = logging.getLogger("hanga")

SUFFIX = ".jpg"  # JPEG encodes 10-20x faster than WebP at this size; transparency goes on grey
BROKEN_NAME = "broken" + SUFFIX
BACKGROUND = (96, 96, 96, 255)
_UNREADABLE = (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError, SyntaxError)


class ThumbnailCache:
    def __init__(self, folder: Path, size: int = 256, max_files: int = 20_000, max_bytes: int = 512 * 1024 * 1024,
                 quality: int = 85):
        self.folder = Path(folder)
        self.size = int(size)
        self.max_files = int(max_files)
        self.max_bytes = int(max_bytes)
        self.quality = int(quality)
        self._lock = threading.Lock()
        self._totals: list[int] | None = None  # [files, bytes]; counted from disk on first write

    def path_for(self, source: Path, mtime_ns: int, size: int) -> Path:
        name = f"{os.path.abspath(source)}\0{mtime_ns}\0{size}\0{self.size}"
        key = hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()
        return self.folder / key[:2] / f"{key}{SUFFIX}"

    def get(self, source: Path, mtime_ns: int, size: int) -> Path:
        """The thumbnail of ``source`` (its stat's ``st_mtime_ns`` and ``st_size``), made if needed;
        a grey placeholder when the source cannot be read as an image."""
        target = self.path_for(source, mtime_ns, size)
        try:
            if os.stat(target).st_size:  # empty: a crash right after an unsynced write
                os.utime(target)  # a hit: most recently used now
                return target
        except FileNotFoundError:
            pass
        picture = self._thumbnail_of(source)
        if picture is None:
            return self._broken()
        with atomic_path(target, sync=False) as temp:  # a cache: nothing is lost if a crash drops it
            picture.save(temp, "JPEG", quality=self.quality)
            written = temp.stat().st_size
        self._account(written, keep=target)
        return target

    def discard(self, source: Path, mtime_ns: int, size: int) -> None:
        target = self.path_for(source, mtime_ns, size)
        try:
            written = target.stat().st_size
            target.unlink()
        except FileNotFoundError:
            return
        self._account(-written, files=-1)

    def _thumbnail_of(self, source: Path) -> Image.Image | None:
        try:
            with Image.open(source) as image:
                image.draft("RGB", (self.size, self.size))  # JPEG: decode at a reduced scale
                if image.width * image.height > DEFAULT_MAX_PIXELS:
                    log.info("No thumbnail for %s: %dx%d is too large to decode", source, *image.size)
                    return None
                picture = ImageOps.exif_transpose(image)
                picture.thumbnail((self.size, self.size), Image.Resampling.LANCZOS, reducing_gap=2.0)
                return _opaque(picture)
        except _UNREADABLE as error:
            log.info("No thumbnail for %s: %s", source, error)
            return None

    def _broken(self) -> Path:
        target = self.folder / BROKEN_NAME
        if not target.exists():
            with atomic_path(target) as temp:
                Image.new("RGB", (self.size, self.size), BACKGROUND[:3]).save(temp, "JPEG")
        return target

    # ---------------------------------------------------------------------------- the budget

    def _account(self, delta_bytes: int, files: int = 1, keep: Path | None = None) -> None:
        with self._lock:
            if self._totals is None:
                self._totals = self._count()
            else:
                self._totals[0] += files
                self._totals[1] += delta_bytes
            if self._totals[0] > self.max_files or self._totals[1] > self.max_bytes:
                self._totals = self._evict(keep)

    def _thumbnail_files(self):
        if not self.folder.is_dir():
            return
        for shard in os.scandir(self.folder):
            if shard.is_dir(follow_symlinks=False) and len(shard.name) == 2:
                for entry in os.scandir(shard.path):
                    if entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
                        yield entry

    def _count(self) -> list[int]:
        files = total = 0
        for entry in self._thumbnail_files():
            try:
                total += entry.stat().st_size
                files += 1
            except FileNotFoundError:
                continue
        return [files, total]

    def _evict(self, keep: Path | None) -> list[int]:
        """Remove the least recently used thumbnails until both totals are at 90 % of the budget,
        never ``keep`` (the one just made, about to be shown). The listing is transient:
        (mtime, size, path) of each file while this runs."""
        listed = []
        for entry in self._thumbnail_files():
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue
            listed.append((stat.st_mtime_ns, stat.st_size, entry.path))
        listed.sort()
        files, total = len(listed), sum(item[1] for item in listed)
        keep_files, keep_bytes = int(self.max_files * 0.9), int(self.max_bytes * 0.9)
        kept = str(keep) if keep is not None else None
        for _mtime, size, path in listed:
            if files <= keep_files and total <= keep_bytes:
                break
            if path == kept:
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            files, total = files - 1, total - size
        return [files, total]


def _opaque(picture: Image.Image) -> Image.Image:
    """RGB for JPEG; a transparent picture goes over the grey background."""
    if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
        picture = picture.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", picture.size, BACKGROUND), picture).convert("RGB")
    return picture.convert("RGB")
