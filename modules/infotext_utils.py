"""A1111 facade: ``modules.infotext_utils`` (also importable as
``modules.generation_parameters_copypaste``): reading infotexts."""

from __future__ import annotations

from modules.core.infotext import parse_infotext
from modules.core.png_meta import read_infotext


def parse_generation_parameters(text: str, skip_fields: list[str] | None = None) -> dict:
    """An infotext as A1111's dict (``Prompt``, ``Negative prompt``, ``Steps``, ``Size-1`` …)."""
    params = parse_infotext(text or "")
    for field in skip_fields or ():
        params.pop(field, None)
    return params


def image_from_url_text(filedata):
    raise NotImplementedError("image_from_url_text is not available in Hanga's facade")


def read_info_from_image(image) -> tuple[str | None, dict]:
    return read_infotext(image)
