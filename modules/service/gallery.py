"""The gallery: every image under the outputs folder, newest first, in pages.

The index holds one small record per file (relative path, mtime, size) and nothing else: no
pixels, no infotext. A refresh stats the known folders and rescans only those whose mtime moved
(a folder's mtime changes when a file is added, removed or renamed in it); ``refresh(force=True)``
re-stats every file. Infotexts are read when asked for (a search, the selected image) straight
from the PNG's text chunk and kept in a bounded LRU; thumbnails live in an LRU folder on disk.
Deleting moves a file, and its ``.txt`` sibling, into ``<outputs>/.trash`` (hidden folders are
never indexed).
"""

from __future__ import annotations

import datetime
import os
import threading
import time
from array import array
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from modules.core.infotext import parse_infotext, split_infotext
from modules.core.paths import Paths
from modules.core.png_text import read_file_infotext
from modules.service.thumbnails import ThumbnailCache

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
TRASH = ".trash"
# A folder changed this recently may change again within its mtime's granularity without the
# mtime moving (git's "racy" entries): such folders are listed again on the next refresh.
RACY_NS = 2_000_000_000
THUMBNAIL_THREADS = max(1, min(4, os.cpu_count() or 1))
_MISSING = object()


def thumbnails_dir(paths: Paths) -> Path:
    return paths.data / "cache" / "thumbnails"


class GalleryError(ValueError):
    """A path the gallery will not act on (outside the outputs folder, in the trash, not an image)."""


@dataclass(frozen=True)
class GalleryEntry:
    relpath: str  # relative to the outputs folder, "/"-separated
    path: Path
    mtime_ns: int
    size: int

    @property
    def modified(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.mtime_ns / 1e9)


@dataclass(frozen=True)
class GalleryQuery:
    """Filters; every given one must match. ``text``: each word in the prompt or negative prompt;
    ``model``: part of the model name, or the model hash (or a prefix of it); ``seed``: the seed;
    dates: the file's modification day (local time), both ends included."""

    text: str = ""
    model: str = ""
    seed: str = ""
    date_from: datetime.date | None = None
    date_to: datetime.date | None = None

    def normalized(self) -> "GalleryQuery":
        return GalleryQuery(" ".join(self.text.lower().split()), self.model.strip().lower(), _seed_text(self.seed),
                            self.date_from, self.date_to)

    @property
    def reads_files(self) -> bool:
        return bool(self.text or self.model or self.seed)

    @property
    def empty(self) -> bool:
        return not self.reads_files and self.date_from is None and self.date_to is None


@dataclass(frozen=True)
class GalleryPage:
    entries: tuple[GalleryEntry, ...]
    number: int  # 0-based, clamped to the pages there are
    size: int
    total: int  # images matching the query

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))


class _Folder:
    __slots__ = ("mtime_ns", "racy", "files", "subdirs")

    def __init__(self, mtime_ns: int, racy: bool, files: dict, subdirs: tuple[str, ...]):
        self.mtime_ns, self.racy, self.files, self.subdirs = mtime_ns, racy, files, subdirs


class _Lru:
    """A least-recently-used map bounded by entries and by total weight."""

    def __init__(self, max_entries: int, max_weight: int):
        self.max_entries, self.max_weight = max_entries, max_weight
        self._items: OrderedDict = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            item = self._items.get(key, _MISSING)
            if item is _MISSING:
                return _MISSING
            self._items.move_to_end(key)
            return item[0]

    def put(self, key, value, weight: int) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._weight -= old[1]
            self._items[key] = (value, weight)
            self._weight += weight
            while self._items and (len(self._items) > self.max_entries or self._weight > self.max_weight):
                self._weight -= self._items.popitem(last=False)[1][1]

    def __len__(self) -> int:
        return len(self._items)


class Gallery:
    def __init__(self, outputs: Path, thumbnails: ThumbnailCache, infotext_entries: int = 20_000,
                 infotext_chars: int = 16 * 1024 * 1024, remembered_searches: int = 4):
        self.outputs = Path(outputs)
        self.thumbnails = thumbnails
        self._lock = threading.Lock()
        self._folders: dict[str, _Folder] = {}
        self._order: list[tuple[int, str, int]] = []  # (mtime_ns, relpath, size), newest first
        self._generation = 0  # bumped whenever _order changes
        self._infotexts = _Lru(infotext_entries, infotext_chars)
        self._searches = _Lru(remembered_searches, 1 << 62)

    @classmethod
    def for_paths(cls, paths: Paths, **options) -> "Gallery":
        return cls(paths.outputs, ThumbnailCache(thumbnails_dir(paths)), **options)

    def __len__(self) -> int:
        return len(self._order)

    # ----------------------------------------------------------------------------- the index

    def refresh(self, force: bool = False) -> bool:
        """Bring the index up to date; True when it changed."""
        with self._lock:
            seen: dict[str, _Folder] = {}
            changed = self._walk("", force, seen)
            changed = changed or seen.keys() != self._folders.keys()
            self._folders = seen
            if changed:
                self._rebuild()
            return changed

    def _walk(self, rel: str, force: bool, seen: dict) -> bool:
        changed = False
        pending = [rel]
        while pending:
            rel = pending.pop()
            try:
                mtime_ns = os.stat(self._absolute(rel)).st_mtime_ns
            except OSError:
                continue
            known = self._folders.get(rel)
            if force or known is None or known.racy or known.mtime_ns != mtime_ns:
                folder = self._scan(rel, mtime_ns, None if force else known)
                changed = changed or known is None or folder.files != known.files
            else:
                folder = known
            seen[rel] = folder
            pending.extend(folder.subdirs)
        return changed

    def _scan(self, rel: str, mtime_ns: int, known: _Folder | None) -> _Folder:
        files, subdirs = {}, []
        old = known.files if known is not None else {}
        try:
            with os.scandir(self._absolute(rel)) as listing:
                for item in listing:
                    if item.name.startswith("."):  # the trash, atomic writers' temporaries
                        continue
                    child = f"{rel}/{item.name}" if rel else item.name
                    if item.is_dir(follow_symlinks=False):
                        subdirs.append(child)
                    elif item.name.lower().endswith(IMAGE_SUFFIXES):
                        record = old.get(item.name)
                        if record is None:
                            try:
                                stat = item.stat()
                            except OSError:
                                continue
                            record = (stat.st_mtime_ns, child, stat.st_size)
                        files[item.name] = record
        except OSError:
            pass
        racy = time.time_ns() - mtime_ns < RACY_NS
        return _Folder(mtime_ns, racy, files, tuple(subdirs))

    def _rebuild(self) -> None:
        order = [record for folder in self._folders.values() for record in folder.files.values()]
        order.sort(reverse=True)
        self._order = order
        self._generation += 1

    def _absolute(self, rel: str) -> str:
        return os.path.join(self.outputs, rel) if rel else str(self.outputs)

    def _entry(self, record: tuple[int, str, int]) -> GalleryEntry:
        return GalleryEntry(record[1], self.outputs / record[1], record[0], record[2])

    def entry(self, relpath: str) -> GalleryEntry | None:
        """The indexed entry at ``relpath`` (relative to outputs), None when it is not indexed."""
        parent, _, name = str(relpath).replace(os.sep, "/").rpartition("/")
        folder = self._folders.get(parent)
        record = folder.files.get(name) if folder is not None else None
        return self._entry(record) if record is not None else None

    # ------------------------------------------------------------------------- pages, search

    def page(self, number: int, size: int, query: GalleryQuery | None = None, refresh: bool = True) -> GalleryPage:
        """Page ``number`` (0-based; clamped) of the images matching ``query``, newest first."""
        if size < 1:
            raise ValueError("page size must be at least 1")
        if refresh:
            self.refresh()
        with self._lock:
            order, generation = self._order, self._generation
        query = (query or GalleryQuery()).normalized()
        if query.empty:
            total = len(order)
            number = min(max(0, int(number)), max(0, -(-total // size) - 1))
            records = order[number * size:(number + 1) * size]
        else:
            positions = self._matches(order, generation, query)
            total = len(positions)
            number = min(max(0, int(number)), max(0, -(-total // size) - 1))
            records = [order[i] for i in positions[number * size:(number + 1) * size]]
        return GalleryPage(tuple(self._entry(record) for record in records), number, size, total)

    def _matches(self, order: list, generation: int, query: GalleryQuery) -> array:
        key = (generation, query)
        found = self._searches.get(key)
        if found is not _MISSING:
            return found
        low, high = _day_bounds(query.date_from, query.date_to)
        positions = array("I")
        for index, record in enumerate(order):
            if not low <= record[0] < high:
                continue
            if query.reads_files and not _text_matches(self._infotext_of(record), query):
                continue
            positions.append(index)
        self._searches.put(key, positions, 1)
        return positions

    # ------------------------------------------------------------------ infotext, thumbnails

    def _infotext_of(self, record: tuple[int, str, int]) -> str | None:
        key = (record[1], record[0], record[2])
        text = self._infotexts.get(key)
        if text is _MISSING:
            text = read_file_infotext(self._absolute(record[1]))
            self._infotexts.put(key, text, 64 + len(text or ""))
        return text

    def infotext(self, entry: GalleryEntry) -> str | None:
        """The image's infotext (its ``parameters`` text), None when it has none."""
        return self._infotext_of((entry.mtime_ns, entry.relpath, entry.size))

    def parameters(self, entry: GalleryEntry) -> dict[str, object]:
        """The parsed infotext (``parse_infotext``); empty when the image has none."""
        text = self.infotext(entry)
        return parse_infotext(text) if text else {}

    def thumbnail(self, entry: GalleryEntry) -> Path:
        return self.thumbnails.get(entry.path, entry.mtime_ns, entry.size)

    def thumbnail_paths(self, entries) -> list[Path]:
        """Thumbnails of a page's entries, the missing ones made on a few threads (PIL decodes
        and encodes without holding the GIL)."""
        entries = list(entries)
        if len(entries) < 2:
            return [self.thumbnail(entry) for entry in entries]
        with ThreadPoolExecutor(max_workers=min(THUMBNAIL_THREADS, len(entries)),
                                thread_name_prefix="hanga-thumbnails") as pool:
            return list(pool.map(self.thumbnail, entries))

    # ---------------------------------------------------------------------------- deleting

    def delete(self, relpath: str | Path) -> Path:
        """Move the image (and its ``.txt`` sibling) into ``<outputs>/.trash``, keeping its folder
        layout; returns where it went. Refuses anything that is not an image under outputs."""
        source = self._checked(relpath)
        root = self.outputs.resolve()
        relative = source.relative_to(root)
        target = _free_name(root / TRASH / relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        stat = source.stat()
        os.replace(source, target)
        sibling = source.with_suffix(".txt")
        if sibling.is_file():
            os.replace(sibling, target.with_suffix(".txt"))
        # Thumbnails are keyed by the path the index knows (outputs / relpath), not the resolved one.
        self.thumbnails.discard(self.outputs / relative, stat.st_mtime_ns, stat.st_size)
        self._forget(relative.as_posix())
        return target

    def _checked(self, relpath: str | Path) -> Path:
        root = self.outputs.resolve()
        try:
            source = (root / relpath).resolve()
            relative = source.relative_to(root)
        except (OSError, ValueError):  # ValueError: outside outputs, or a NUL in the name
            raise GalleryError(f"{relpath} is not inside the outputs folder") from None
        if not relative.parts or relative.parts[0] == TRASH or any(part.startswith(".") for part in relative.parts):
            raise GalleryError(f"{relpath} is not a gallery image")
        if not source.is_file() or source.suffix.lower() not in IMAGE_SUFFIXES:
            raise GalleryError(f"{relpath} is not an image file")
        return source

    def _forget(self, relpath: str) -> None:
        parent, _, name = relpath.rpartition("/")
        with self._lock:
            folder = self._folders.get(parent)
            if folder is not None and folder.files.pop(name, None) is not None:
                self._rebuild()


def _free_name(target: Path) -> Path:
    """``target``, or ``name (2).png`` and so on when the trash already holds that name."""
    candidate, number = target, 1
    while candidate.exists() or candidate.with_suffix(".txt").exists():
        number += 1
        candidate = target.with_name(f"{target.stem} ({number}){target.suffix}")
    return candidate


def _seed_text(seed: object) -> str:
    text = str(seed if seed is not None else "").strip()
    for number in (int, float):
        try:
            return str(int(number(text)))
        except (ValueError, OverflowError):
            continue
    return text


def _day_bounds(first: datetime.date | None, last: datetime.date | None) -> tuple[float, float]:
    """[low, high) in nanoseconds since the epoch for local days ``first`` … ``last``."""
    low = datetime.datetime.combine(first, datetime.time.min).timestamp() * 1e9 if first else float("-inf")
    high = (datetime.datetime.combine(last + datetime.timedelta(days=1), datetime.time.min).timestamp() * 1e9
            if last else float("inf"))
    return low, high


def _text_matches(infotext: str | None, query: GalleryQuery) -> bool:
    if not infotext:
        return False
    lowered = infotext.lower()  # cheap substring checks first: most images do not match
    if (query.seed and f"seed: {query.seed}" not in lowered) or (query.model and query.model not in lowered):
        return False
    if query.text and not all(word in lowered for word in query.text.split()):
        return False
    prompt, negative, pairs = split_infotext(infotext)
    if query.seed and _seed_text(pairs.get("Seed", "")) != query.seed:
        return False
    if query.model:
        name, short_hash = str(pairs.get("Model", "")).lower(), str(pairs.get("Model hash", "")).lower()
        by_hash = bool(short_hash) and (short_hash.startswith(query.model) or query.model.startswith(short_hash))
        if query.model not in name and not by_hash:
            return False
    if query.text:
        haystack = f"{prompt}\n{negative}".lower()
        if not all(word in haystack for word in query.text.split()):
            return False
    return True
