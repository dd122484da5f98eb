"""A1111 facade: ``modules.images`` — ``save_image`` and ``read_info_from_image`` for extensions."""

from __future__ import annotations

from pathlib import Path

from modules.core.images import NameFields, OutputFormat, apply_pattern, save_image as _save_image
from modules.core.png_meta import read_infotext
from modules.service.extensions import context


def read_info_from_image(image) -> tuple[str | None, dict]:
    """``(infotext, other text chunks)`` of a picture (PNG chunk or JPEG/WebP EXIF comment)."""
    return read_infotext(image)


def save_image(image, path, basename: str = "", seed=None, prompt=None, extension: str = "png", info=None,
               short_filename: bool = False, no_prompt: bool = False, grid: bool = False,
               pnginfo_section_name: str = "parameters", p=None, existing_info=None, forced_filename=None,
               suffix: str = "", save_to_dirs=None):
    """Save as the next ``NNNNN-<pattern>.<extension>`` in ``path`` with ``info`` as its infotext,
    following the saving settings; returns ``(fullfn, txt_fullfn)`` as A1111 does."""
    settings = context.current().settings
    get = settings.get if settings is not None else None
    output = OutputFormat(extension or "png", *(_setting(get, key, default) for key, default in (
        ("jpeg_quality", 80), ("webp_lossless", False), ("enable_pnginfo", True), ("save_txt", False))))
    directory = Path(path)
    if forced_filename:
        target = directory / f"{forced_filename}.{output.extension}"
        directory.mkdir(parents=True, exist_ok=True)
        image.save(target)
        return str(target), None
    pattern = "" if short_filename or no_prompt else "[seed]-[prompt_spaces]" if prompt is not None else "[seed]"
    decoration = apply_pattern(pattern, NameFields(seed=seed, prompt=prompt or "")) if pattern else ""
    decoration = "-".join(part for part in (basename, decoration) if part) + suffix
    saved = _save_image(image, directory, decoration, info, output)
    text = saved.with_suffix(".txt")
    return str(saved), str(text) if text.exists() else None


def _setting(get, key: str, default):
    if get is None:
        return default
    try:
        return get(key)
    except (KeyError, AttributeError):
        return default
