"""Saving generated images: A1111 folder and file names, infotext inside the file, atomic writes.

Files are named ``NNNNN-<decoration>.<ext>`` where NNNNN is one more than the highest leading number
already in the folder; they are written atomically (``atomic.py``). The decoration comes from a
file-name pattern (A1111's ``FilenameGenerator``: ``[seed]-[prompt_spaces]``, ``[datetime<%Y>]`` …).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
import string
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from PIL import Image

from modules.core.atomic import atomic_open, write_text
from modules.core.png_meta import pnginfo_for, user_comment_exif

INVALID_FILENAME_CHARS = '#<>:"/\\|?*\n\r\t'
MAX_FILENAME_PART = 128  # A1111's --filenames-max-length default


def sanitize_filename_part(text: str, replace_spaces: bool = True, max_length: int = MAX_FILENAME_PART) -> str:
    if replace_spaces:
        text = text.replace(" ", "_")
    text = text.translate({ord(ch): "_" for ch in INVALID_FILENAME_CHARS})
    return text.lstrip(" ")[:max_length].rstrip(" .")


# -- file-name patterns ------------------------------------------------------------------------------

@dataclass(frozen=True)
class NameFields:
    """Values the file-name pattern tags read. ``prompt`` is the image's own prompt (styles applied,
    extra-network tags removed); ``request_prompt``/``negative_prompt`` are the job's as asked for
    (A1111's ``p.prompt``/``p.negative_prompt``, read by the negative and full prompt hashes)."""

    seed: int | None
    prompt: str
    steps: int = 0
    cfg: float = 0.0
    width: int = 0
    height: int = 0
    sampler: str = ""
    scheduler: str = ""  # as A1111 names it in file names: "Karras" for DPM++ 2M + Automatic
    model_name: str = ""
    model_hash: str | None = None  # None (not hashed): [model_hash] stays as written
    vae_filename: str = "NoneType"  # A1111's text when the checkpoint's own VAE is in use
    date: _dt.datetime | None = None  # "now" for [date] and [datetime]; None = the clock
    job_timestamp: str = ""
    request_prompt: str | None = None  # None: the same as ``prompt``
    negative_prompt: str = ""
    style_prompts: tuple[str, ...] = ()  # prompt texts of the job's styles, for [prompt_no_styles]
    seed_first: int | None = None  # the job's first and last seeds (batch size > 1)
    seed_last: int | None = None
    batch_size: int = 1
    n_iter: int = 1
    index: int = 0  # the image's number in the job, from 0
    clip_skip: int = 1
    denoising: float | None = None  # None or 0: [denoising] and the text before it are dropped
    basename: str = ""
    max_prompt_words: int = 8  # directories_max_prompt_words


_SKIP = object()  # A1111's NOTHING_AND_SKIP_PREVIOUS_TEXT: drop the tag and the literal text before it
_PATTERN = re.compile(r"(.*?)(?:\[([^\[\]]+)\]|$)")
_PATTERN_ARG = re.compile(r"(.*)<([^>]*)>$")
_NON_LETTERS = re.compile(r"[\s" + re.escape(string.punctuation) + r"]+")
DEFAULT_TIME_FORMAT = "%Y%m%d%H%M%S"


def _now(fields: NameFields) -> _dt.datetime:
    return fields.date or _dt.datetime.now()


def _hash(text: str, length: str = "", *_ignored: str) -> str:
    """sha256 hex of the text, the first ``length`` (default 8) characters."""
    return hashlib.sha256(text.encode()).hexdigest()[: int(length) if length != "" else 8]


def _datetime(fields: NameFields, time_format: str = "", zone: str | None = None, *_ignored: str) -> str:
    try:
        tz = zoneinfo.ZoneInfo(zone) if zone else None
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        tz = None  # A1111: an unknown time zone means local time
    moment = _now(fields).astimezone(tz)
    try:
        text = moment.strftime(time_format or DEFAULT_TIME_FORMAT)
    except (ValueError, TypeError):
        text = moment.strftime(DEFAULT_TIME_FORMAT)
    return sanitize_filename_part(text, replace_spaces=False)


def _prompt_words(fields: NameFields) -> str:
    words = [word for word in _NON_LETTERS.split(fields.prompt) if word] or ["empty"]
    return sanitize_filename_part(" ".join(words[: fields.max_prompt_words]), replace_spaces=False)


def _prompt_no_styles(fields: NameFields) -> str:
    """A1111's ``prompt_no_style``: each style's text (and each part of it around ``{prompt}``) is cut
    out of the prompt, with the commas and spaces it leaves at the ends."""
    prompt = fields.prompt
    for style in fields.style_prompts:
        if style:
            for part in style.split("{prompt}"):
                prompt = prompt.replace(part, "").replace(", ,", ",").strip().strip(",")
            prompt = prompt.replace(style, "").strip().strip(",").strip()
    return sanitize_filename_part(prompt, replace_spaces=False)


def _hasprompt(fields: NameFields, *args: str) -> str:
    """``[hasprompt<word|default><word2>…]``: each word found in the prompt, else its default."""
    lower = fields.prompt.lower()
    out = ""
    for arg in args:
        if arg:
            parts = arg.split("|")
            expected = parts[0].lower()
            out += expected if expected in lower else (parts[1] if len(parts) > 1 else "")
    return sanitize_filename_part(out)


def _scheduler(fields: NameFields, with_sampler: bool) -> str:
    text = f"{fields.sampler} {fields.scheduler}" if with_sampler else fields.scheduler
    return sanitize_filename_part(text, replace_spaces=False)


def _request_prompt(fields: NameFields) -> str:
    return fields.prompt if fields.request_prompt is None else fields.request_prompt


# Tags that take ``<arg>`` arguments receive them; the others refuse any (A1111 then keeps the tag).
_TAGS: dict[str, Callable[..., object]] = {
    "basename": lambda f: f.basename or "img",
    "seed": lambda f: "" if f.seed is None else f.seed,
    "seed_first": lambda f: f.seed if f.batch_size == 1 or f.seed_first is None else f.seed_first,
    "seed_last": lambda f: _SKIP if f.batch_size == 1 or f.seed_last is None else f.seed_last,
    "steps": lambda f: f.steps,
    "cfg": lambda f: f.cfg,
    "width": lambda f: f.width,
    "height": lambda f: f.height,
    "sampler": lambda f: sanitize_filename_part(f.sampler, replace_spaces=False),
    "sampler_scheduler": lambda f: _scheduler(f, True),
    "scheduler": lambda f: _scheduler(f, False),
    "model_hash": lambda f: f.model_hash,
    "model_name": lambda f: sanitize_filename_part(f.model_name, replace_spaces=False),
    "date": lambda f: _now(f).strftime("%Y-%m-%d"),
    "datetime": _datetime,
    "job_timestamp": lambda f: f.job_timestamp,
    "prompt_hash": lambda f, *args: _hash(f.prompt, *args),
    "negative_prompt_hash": lambda f, *args: _hash(f.negative_prompt, *args),
    "full_prompt_hash": lambda f, *args: _hash(f"{_request_prompt(f)} {f.negative_prompt}", *args),
    "prompt": lambda f: sanitize_filename_part(f.prompt),
    "prompt_no_styles": _prompt_no_styles,
    "prompt_spaces": lambda f: sanitize_filename_part(f.prompt, replace_spaces=False),
    "prompt_words": _prompt_words,
    "batch_number": lambda f: _SKIP if f.batch_size == 1 else f.index % f.batch_size + 1,
    "batch_size": lambda f: f.batch_size,
    "generation_number": lambda f: _SKIP if f.n_iter == 1 and f.batch_size == 1 else f.index + 1,
    "hasprompt": _hasprompt,
    "clip_skip": lambda f: f.clip_skip,
    "denoising": lambda f: f.denoising if f.denoising else _SKIP,
    "vae_filename": lambda f: f.vae_filename,
    "none": lambda f: "",
}
_TAKES_ARGS = {"datetime", "prompt_hash", "negative_prompt_hash", "full_prompt_hash", "hasprompt"}


def apply_pattern(pattern: str, fields: NameFields) -> str:
    """Fill A1111's ``[tag]`` / ``[tag<arg>…]`` placeholders. Unknown tags, tags given arguments they
    do not take, bad arguments and values not known here (``None``) are kept as ``[tag]`` (without
    the arguments, as A1111 writes them back); a skipped tag also drops the text just before it."""
    out = ""
    for match in _PATTERN.finditer(pattern):
        text, tag = match.groups()
        if tag is None:
            out += text
            continue
        args: list[str] = []
        while (with_arg := _PATTERN_ARG.match(tag)) is not None:
            tag, arg = with_arg.groups()
            args.insert(0, arg)
        value = _tag_value(tag.lower(), args, fields)
        if value is _SKIP:
            continue
        out += text + (f"[{tag}]" if value is None else str(value))
    return out


def _tag_value(tag: str, args: list[str], fields: NameFields) -> object:
    fill = _TAGS.get(tag)
    if fill is None or (args and tag not in _TAKES_ARGS):
        return None
    try:
        return fill(fields, *args)
    except ValueError:  # e.g. [prompt_hash<abc>]
        return None


# -- writing files -----------------------------------------------------------------------------------

PIL_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
_MAX_SIDE = {"JPEG": 65535, "WEBP": 16383}  # larger pictures are saved as PNG (A1111)


@dataclass(frozen=True)
class OutputFormat:
    """How a picture is written: A1111's samples_format/grid_format, jpeg_quality, webp_lossless,
    enable_pnginfo (infotext in the file: PNG text chunk, else EXIF UserComment) and save_txt."""

    extension: str = "png"
    jpeg_quality: int = 80
    webp_lossless: bool = False
    embed_infotext: bool = True
    save_txt: bool = False

    @classmethod
    def from_settings(cls, get: Callable[[str], Any], format_key: str = "samples_format") -> "OutputFormat":
        """From A1111's settings; ``format_key`` is samples_format or grid_format."""
        return cls(get(format_key), get("jpeg_quality"), get("webp_lossless"), get("enable_pnginfo"), get("save_txt"))

    def pil_format(self, image: Image.Image) -> str:
        pil = PIL_FORMATS.get(self.extension.lower())
        if pil is None:
            raise ValueError(f"unknown image format {self.extension!r}; choose one of: {', '.join(PIL_FORMATS)}")
        if max(image.size) > _MAX_SIDE.get(pil, max(image.size)):
            return "PNG"
        return pil


def _write(handle, image: Image.Image, pil_format: str, infotext: str | None, output: OutputFormat,
           extra: Mapping[str, str] | None = None) -> None:
    embed = output.embed_infotext and infotext is not None
    if pil_format == "PNG":
        chunks = pnginfo_for(infotext if embed else None, extra) if embed or (extra and output.embed_infotext) else None
        image.save(handle, format="PNG", pnginfo=chunks)
        return
    if image.mode == "RGBA":
        image = image.convert("RGB")
    elif image.mode == "I;16":
        image = image.point(lambda v: v * 0.0038910505836576).convert("RGB" if pil_format == "WEBP" else "L")
    options = {"quality": output.jpeg_quality}
    if pil_format == "WEBP":
        options["lossless"] = output.webp_lossless
    if embed:
        options["exif"] = user_comment_exif(infotext)
    image.save(handle, format=pil_format, **options)


def next_sequence_number(directory: Path) -> int:
    highest = -1
    if directory.is_dir():
        for entry in os.listdir(directory):
            leading = os.path.splitext(entry)[0].split("-")[0]
            if leading.isdigit():
                highest = max(highest, int(leading))
    return highest + 1


def save_image(
    image: Image.Image,
    directory: Path,
    decoration: str,
    infotext: str | None,
    output: OutputFormat = OutputFormat(),
    max_name_length: int = 255,
    extra: Mapping[str, str] | None = None,
    before_write: BeforeWrite | None = None,
) -> Path:
    """Save as the next ``NNNNN-<decoration>.<ext>`` in ``directory`` and return the path; with
    ``save_txt`` the infotext also goes to ``NNNNN-<decoration>.txt``. ``extra``: more PNG text
    chunks after ``parameters`` (the Extras tab's ``extras``). ``before_write(path, image, infotext)``
    hears the path chosen and gives the picture and infotext to write there."""
    pil_format = output.pil_format(image)
    suffix = "." + ("png" if pil_format == "PNG" else output.extension.lower())

    def name(number: int) -> str:
        stem = f"{number:05}-{decoration}" if decoration else f"{number:05}"
        return stem[: max_name_length - max(4, len(suffix))] + suffix

    return _save_numbered(image, directory, next_sequence_number(directory), name, pil_format, infotext, output, extra,
                          before_write)


# (the path about to be written, the picture, its infotext) → the picture and infotext to write
BeforeWrite = Callable[[Path, Image.Image, Any], tuple]


def _save_numbered(image: Image.Image, directory: Path, first: int, name, pil_format: str, infotext: str | None,
                   output: OutputFormat, extra: Mapping[str, str] | None = None,
                   before_write: BeforeWrite | None = None) -> Path:
    """Write atomically under the first free ``name(number)`` from ``first`` on."""
    directory.mkdir(parents=True, exist_ok=True)
    for attempt in range(500):
        path = directory / name(first + attempt)
        if not path.exists():
            if before_write is not None:
                image, infotext = before_write(path, image, infotext)
            with atomic_open(path) as handle:
                _write(handle, image, pil_format, infotext, output, extra)
            if output.save_txt and infotext is not None:
                write_text(path.with_suffix(".txt"), infotext + "\n")  # A1111 ends the file with a newline
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


def save_grid(image: Image.Image, directory: Path, basename: str, infotext: str | None,
              output: OutputFormat = OutputFormat()) -> Path:
    """Save a grid as the next ``<basename>-NNNN.<ext>`` (``grid-0000.png``, ``xyz_grid-0003.jpg``)."""
    pil_format = output.pil_format(image)
    suffix = "png" if pil_format == "PNG" else output.extension.lower()
    return _save_numbered(image, directory, next_grid_number(directory, basename),
                          lambda n: f"{basename}-{n:04}.{suffix}", pil_format, infotext, output)
