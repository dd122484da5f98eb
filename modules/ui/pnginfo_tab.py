"""PNG Info: show every text chunk of a dropped image (``parameters`` first) and send the
parameters to txt2img (and, wired by the app, the picture and parameters to img2img / inpaint, or
the picture to Extras)."""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr
from PIL import Image, UnidentifiedImageError

from modules.core.png_meta import read_infotext
from modules.service.generation import GenerationService
from modules.ui.common import FormControls


def read_chunks(path: str | None) -> tuple[str, str]:
    """(HTML of all chunks, the parameters text)."""
    if not path:
        return "", ""
    try:
        with Image.open(path) as image:
            text, items = read_infotext(image)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        return f"<p>Cannot read this image: {html.escape(str(error))}</p>", ""
    sections = []
    if text:
        sections.append(("parameters", text))
    sections += [(key, str(value)) for key, value in items.items()]
    if not sections:
        return "<p>This image carries no generation parameters.</p>", ""
    body = "".join(
        f"<div><p><b>{html.escape(key)}</b></p><p>{html.escape(value).replace(chr(10), '<br>')}</p></div>"
        for key, value in sections
    )
    return body, text or ""


@dataclass
class PngInfoTab:
    image: gr.Image  # a file path
    parameters: gr.Textbox
    send_img2img: gr.Button
    send_inpaint: gr.Button
    send_extras: gr.Button


def build(tabs: gr.Tabs, txt2img: FormControls, service: GenerationService) -> PngInfoTab:
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Source", type="filepath", image_mode=None, sources=["upload"], elem_id="pnginfo_image")
        with gr.Column():
            shown = gr.HTML(elem_id="pnginfo_html")
            parameters = gr.Textbox(visible=False, elem_id="pnginfo_generation_info")
            with gr.Row():
                send = gr.Button("Send to txt2img", elem_id="pnginfo_send_txt2img")
                send_img2img = gr.Button("Send to img2img", elem_id="pnginfo_send_img2img")
                send_inpaint = gr.Button("Send to inpaint", elem_id="pnginfo_send_inpaint")
                send_extras = gr.Button("Send to extras", elem_id="pnginfo_send_extras")
    image.change(read_chunks, image, [shown, parameters])

    def send_to_txt2img(text: str):
        return [*txt2img.paste_updates(service.paste(text)), gr.Tabs(selected="txt2img")]

    send.click(send_to_txt2img, parameters, [*txt2img.paste_outputs(), tabs])
    return PngInfoTab(image, parameters, send_img2img, send_inpaint, send_extras)
