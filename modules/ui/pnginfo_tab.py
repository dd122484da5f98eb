"""PNG Info: show every text chunk of a dropped image (``parameters`` first) and send the
parameters to txt2img."""

from __future__ import annotations

import html

import gradio as gr
from PIL import Image, UnidentifiedImageError

from modules.core.infotext import parse_infotext
from modules.core.png_meta import read_infotext
from modules.core.sampling.samplers import UnknownSamplerError, resolve_sampler
from modules.ui.txt2img_tab import Txt2ImgControls


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


def paste_values(text: str, current: dict) -> list:
    """Values for the txt2img controls from an infotext; what the text lacks stays as it is."""
    params = parse_infotext(text)
    values = dict(current)
    values["prompt"] = params.get("Prompt", values["prompt"])
    values["negative_prompt"] = params.get("Negative prompt", values["negative_prompt"])
    try:
        sampler, scheduler = resolve_sampler(str(params.get("Sampler", values["sampler"])), str(params.get("Schedule type", "Automatic")))
        values["sampler"], values["scheduler"] = sampler.name, scheduler.label
    except UnknownSamplerError:
        pass
    for key, name, cast in (("Steps", "steps", int), ("CFG scale", "cfg_scale", float), ("Seed", "seed", int),
                            ("Size-1", "width", int), ("Size-2", "height", int)):
        try:
            values[name] = cast(float(params[key]))
        except (KeyError, ValueError, TypeError):
            pass
    return [values[name] for name in current]


def build(tabs: gr.Tabs, txt2img: Txt2ImgControls) -> None:
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Source", type="filepath", image_mode=None, sources=["upload"], elem_id="pnginfo_image")
        with gr.Column():
            shown = gr.HTML(elem_id="pnginfo_html")
            parameters = gr.Textbox(visible=False, elem_id="pnginfo_generation_info")
            send = gr.Button("Send to txt2img", elem_id="pnginfo_send_txt2img")
    image.change(read_chunks, image, [shown, parameters])

    controls = [txt2img.prompt, txt2img.negative_prompt, txt2img.sampler, txt2img.scheduler, txt2img.steps,
                txt2img.cfg_scale, txt2img.seed, txt2img.width, txt2img.height]
    names = ["prompt", "negative_prompt", "sampler", "scheduler", "steps", "cfg_scale", "seed", "width", "height"]

    def send_to_txt2img(text: str, *current):
        return [*paste_values(text, dict(zip(names, current))), gr.Tabs(selected="txt2img")]

    send.click(send_to_txt2img, [parameters, *controls], [*controls, tabs])
