"""A1111 facade: ``modules.infotext_utils`` (also importable as
``modules.generation_parameters_copypaste``): reading infotexts, and the paste-button helpers."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

from modules.core.infotext import parse_infotext
from modules.core.png_meta import read_infotext
from modules.service.extensions import context

__all__ = ["ParamBinding", "bind_buttons", "create_buttons", "image_from_url_text", "parse_generation_parameters",
           "paste_fields", "read_info_from_image", "register_paste_params_button"]


def parse_generation_parameters(text: str, skip_fields: list[str] | None = None) -> dict:
    """An infotext as A1111's dict (``Prompt``, ``Negative prompt``, ``Steps``, ``Size-1`` …), after
    the extensions' ``on_infotext_pasted`` callbacks had their say (as A1111's does)."""
    params = parse_infotext(text or "")
    context.current().callbacks.call("infotext_pasted", text or "", params)
    for key in skip_fields or ():
        params.pop(key, None)
    return params


def read_info_from_image(image) -> tuple[str | None, dict]:
    return read_infotext(image)


def image_from_url_text(filedata):
    """A picture from a data URL (``data:image/png;base64,…``) or a Gradio file value."""
    from PIL import Image

    if filedata is None:
        return None
    if isinstance(filedata, list):
        filedata = filedata[0] if filedata else None
        if filedata is None:
            return None
    if isinstance(filedata, dict):
        filedata = filedata.get("path") or filedata.get("name")
    if isinstance(filedata, str) and filedata.startswith("data:image/"):
        return Image.open(io.BytesIO(base64.b64decode(filedata.split(",", 1)[1])))
    raise ValueError("image_from_url_text takes a data URL or an uploaded file here")


@dataclass
class ParamBinding:
    """A paste button an extension registers (image browsers): once the page is built, a click
    sends ``source_image_component``'s picture and ``source_text_component``'s infotext (else the
    picture's own) to ``tabname`` ("txt2img", "img2img", "inpaint" or "extras"), as PNG Info does."""

    paste_button: Any
    tabname: str
    source_text_component: Any = None
    source_image_component: Any = None
    source_tabname: str | None = None
    override_settings_component: Any = None
    paste_field_names: list = field(default_factory=list)


paste_fields: dict[str, dict] = {}


def __getattr__(name: str):
    if name == "registered_param_bindings":  # A1111's list: the running host's paste buttons
        return context.current().callbacks.paste_buttons
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_paste_params_button(binding: ParamBinding) -> None:
    context.current().callbacks.paste_buttons.append(binding)


def create_buttons(tabs_list: list[str]) -> dict:
    """One "Send to <tab>" button per tab name (A1111's ids ``<tab>_tab``)."""
    from modules.gradio_compat import gradio as gr

    return {tab: gr.Button(f"Send to {tab}", elem_id=f"{tab}_tab") for tab in tabs_list}


def bind_buttons(buttons: dict, send_image, send_generate_info) -> None:
    for tabname, button in buttons.items():
        register_paste_params_button(ParamBinding(button, tabname, source_text_component=send_generate_info
                                                  if not isinstance(send_generate_info, str) else None,
                                                  source_image_component=send_image))
