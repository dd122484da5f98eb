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
    directory.mkdir(parents=True, exist_ok=True)
    number = next_sequence_number(directory)
    for attempt in range(500):
        stem = f"{number + attempt:05}-{decoration}" if decoration else f"{number + attempt:05}"
        stem = stem[: max_name_length - len(".png")]
        path = directory / f"{stem}.png"
        if not path.exists():
            with atomic_open(path) as handle:
                image.save(handle, format="PNG", pnginfo=pnginfo)
            return path
    raise FileExistsError(f"no free file name for image in {directory}")
