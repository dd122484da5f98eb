"""Saving generated images: A1111 folder and file names, PNG text chunks, atomic writes.

Files are named ``NNNNN-<decoration>.png`` where NNNNN is one more than the highest leading number
already in the folder; they are written atomically (``atomic.py``).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from modules.core.atomic import atomic_open

INVALID_FILENAME_CHARS = '#<>:"/\\|?*\n\r\t'
MAX_FILENAME_PART = 128


def sanitize_filename_part(text: str, replace_spaces: bool = True, max_length: int = MAX_FILENAME_PART) -> str:
    if replace_spaces:
        text = text.replace(" ", "_")
    text = text.translate({ord(ch): "_" for ch in INVALID_FILENAME_CHARS})
    return text.lstrip(" ")[:max_length].rstrip(" .")


@dataclass(frozen=True)
class NameFields:
    """Values the file-name pattern tags read (A1111's ``[seed]``, ``[prompt_spaces]`` …)."""

    seed: int
    prompt: str
    steps: int = 0
    cfg: float = 0.0
    width: int = 0
    height: int = 0
    sampler: str = ""
    model_name: str = ""
    model_hash: str = ""
    date: _dt.datetime | None = None


_TAG = re.compile(r"\[(\w+)\]")


def apply_pattern(pattern: str, fields: NameFields) -> str:
    now = fields.date or _dt.datetime.now()
    values = {
        "seed": str(fields.seed),
        "prompt": sanitize_filename_part(fields.prompt),
        "prompt_spaces": sanitize_filename_part(fields.prompt, replace_spaces=False),
        "prompt_words": sanitize_filename_part(" ".join(fields.prompt.split()[:8]), replace_spaces=False),
        "steps": str(fields.steps),
        "cfg": str(fields.cfg),
        "width": str(fields.width),
        "height": str(fields.height),
        "sampler": sanitize_filename_part(fields.sampler, replace_spaces=False),
        "model_name": sanitize_filename_part(fields.model_name, replace_spaces=False),
        "model_hash": fields.model_hash or "",
        "date": now.strftime("%Y-%m-%d"),
        "none": "",
    }

    def substitute(match: re.Match) -> str:
        tag = match.group(1).lower()
        return values.get(tag, match.group(0))

    return _TAG.sub(substitute, pattern)


def next_sequence_number(directory: Path) -> int:
    highest = -1
    if directory.is_dir():
        for entry in os.listdir(directory):
            leading = os.path.splitext(entry)[0].split("-")[0]
            if leading.isdigit():
                highest = max(highest, int(leading))
    return highest + 1


def save_png(
    image: Image.Image,
    directory: Path,
    decoration: str,
    pnginfo: PngInfo | None,
    max_name_length: int = 255,
) -> Path:
    """Save as the next ``NNNNN-<decoration>.png`` in ``directory`` and return the path."""

    def name(number: int) -> str:
        stem = f"{number:05}-{decoration}" if decoration else f"{number:05}"
        return stem[: max_name_length - len(".png")] + ".png"

    return _save_numbered(image, directory, next_sequence_number(directory), name, pnginfo)


def _save_numbered(image: Image.Image, directory: Path, first: int, name, pnginfo: PngInfo | None) -> Path:
    """Write atomically under the first free ``name(number)`` from ``first`` on."""
    directory.mkdir(parents=True, exist_ok=True)
    for attempt in range(500):
        path = directory / name(first + attempt)
        if not path.exists():
            with atomic_open(path) as handle:
                image.save(handle, format="PNG", pnginfo=pnginfo)
            return path
    raise FileExistsError(f"no free file name for an image in {directory}")


def next_grid_number(directory: Path, basename: str) -> int:
    """A1111's ``get_next_sequence_number`` for named files: one more than the highest NNNN of
    ``<basename>-NNNN…`` in the folder."""
    highest = -1
    prefix = f"{basename}-"
    if directory.is_dir():
        for entry in os.listdir(directory):
            if entry.startswith(prefix):
                leading = os.path.splitext(entry[len(prefix):])[0].split("-")[0]
                if leading.isdigit():
                    highest = max(highest, int(leading))
    return highest + 1


def save_grid_png(image: Image.Image, directory: Path, basename: str, pnginfo: PngInfo | None) -> Path:
    """Save a grid as the next ``<basename>-NNNN.png`` (``grid-0000.png``, ``xyz_grid-0003.png``)."""
    return _save_numbered(image, directory, next_grid_number(directory, basename), lambda n: f"{basename}-{n:04}.png", pnginfo)
