"""The Extras tab: upscale a picture, uploaded pictures, or a folder of pictures, by a factor or to
a size, with a second upscaler blended in. Saved pictures keep their ``parameters`` and carry the
``extras`` text. "Send to extras" (wired by the app) puts a picture into Single Image."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from PIL import Image

from modules.core.generation.request import InvalidRequest
from modules.core.image_input import ImageTooLarge, UnreadableImage, megapixels, read_image
from modules.service.batch import batch_files
from modules.service.extras import ExtrasRequest
from modules.service.generation import GenerationService
from modules.ui.common import USER_ERRORS

SINGLE, BATCH, DIRECTORY = 0, 1, 2


@dataclass
class ExtrasTab:
    """What "Send to extras" fills: the single-image input, and the sub-tab it is on."""

    image: gr.Image
    sub_tabs: gr.Tabs
    source: gr.State

    def send_outputs(self) -> list:
        return [self.image, self.sub_tabs, self.source]

    def send_updates(self, picture: Image.Image | None) -> list:
        """``picture`` (its ``parameters`` text in ``.info``, kept for the saved result) into Single
        Image, which becomes the chosen source."""
        if picture is None:
            raise gr.Error("No image to send")
        return [picture, gr.Tabs(selected="single_image"), SINGLE]


def build(service: GenerationService) -> ExtrasTab:
    """The tab; returns what "Send to extras" fills."""
    names = service.upscalers.names()
    source_tab, resize_tab = gr.State(SINGLE), gr.State(0)
    with gr.Row():
        with gr.Column():
            with gr.Tabs(elem_id="mode_extras") as mode_tabs:
                with gr.Tab("Single Image", id="single_image", elem_id="extras_single_tab") as single_tab:
                    # PNG (Gradio's default is WebP) so that a picture sent here keeps its text chunks
                    image = gr.Image(label="Source", type="pil", image_mode=None, sources=["upload", "clipboard"],
                                     format="png", elem_id="extras_image")
                with gr.Tab("Batch Process", id="batch_process", elem_id="extras_batch_process_tab") as batch_tab:
                    files = gr.File(label="Batch Process", file_count="multiple", elem_id="extras_image_batch")
                with gr.Tab("Batch from Directory", id="batch_from_directory",
                            elem_id="extras_batch_directory_tab") as directory_tab:
                    input_dir = gr.Textbox(label="Input directory", elem_id="extras_batch_input_dir")
                    output_dir = gr.Textbox(label="Output directory (empty: the extras folder)",
                                            elem_id="extras_batch_output_dir")
                    show_results = gr.Checkbox(True, label="Show result images", elem_id="extras_show_extras_results")
            with gr.Tabs(elem_id="extras_resize_mode"):
                with gr.Tab("Scale by", elem_id="extras_scale_by_tab") as scale_by_tab:
                    scale = gr.Slider(1.0, 8.0, 2.0, step=0.05, label="Resize", elem_id="extras_upscaling_resize")
                with gr.Tab("Scale to", elem_id="extras_scale_to_tab") as scale_to_tab:
                    with gr.Row():
                        width = gr.Slider(64, 8192, 512, step=8, label="Width", elem_id="extras_upscaling_resize_w")
                        height = gr.Slider(64, 8192, 512, step=8, label="Height", elem_id="extras_upscaling_resize_h")
                    crop = gr.Checkbox(True, label="Crop to fit", elem_id="extras_upscaling_crop")
            with gr.Row():
                upscaler_1 = gr.Dropdown(names, value="None", label="Upscaler 1", elem_id="extras_upscaler_1")
                upscaler_2 = gr.Dropdown(names, value="None", label="Upscaler 2", elem_id="extras_upscaler_2")
            visibility = gr.Slider(0.0, 1.0, 0.0, step=0.001, label="Upscaler 2 visibility",
                                   elem_id="extras_upscaler_2_visibility")
            refresh = gr.Button("🔄 Refresh upscalers", elem_id="extras_refresh_upscalers", size="sm")
            generate = gr.Button("Generate", variant="primary", elem_id="extras_generate")
        with gr.Column():
            gallery = gr.Gallery(label="Result", columns=2, elem_id="extras_gallery", format="png")
            info = gr.HTML(elem_id="html_info_x")

    for index, tab in enumerate((single_tab, batch_tab, directory_tab)):
        tab.select(lambda i=index: i, None, source_tab, queue=False, show_progress="hidden")
    for index, tab in enumerate((scale_by_tab, scale_to_tab)):
        tab.select(lambda i=index: i, None, resize_tab, queue=False, show_progress="hidden")

    def refreshed():
        choices = service.upscalers.names()
        return gr.Dropdown(choices=choices), gr.Dropdown(choices=choices)

    refresh.click(refreshed, None, [upscaler_1, upscaler_2], queue=False)

    def run(source: int, picture, uploads, folder: str, out_folder: str, show: bool, mode: int, factor: float,
            w: int, h: int, cropped: bool, first: str, second: str, second_visibility: float):
        request = ExtrasRequest(resize_mode=mode, scale=float(factor), width=int(w), height=int(h), crop=bool(cropped),
                                upscaler_1=first or "None", upscaler_2=second or "None",
                                upscaler_2_visibility=float(second_visibility))
        try:
            pictures, names = _sources(service, source, picture, uploads, folder)
            directory = Path(out_folder.strip()) if source == DIRECTORY and out_folder and out_folder.strip() else None
            made = service.extras(pictures, request, save=True, directory=directory, names=names)
        except USER_ERRORS as error:
            raise gr.Error(str(error)) from None
        shown = [(str(path), None) if path else (result, None) for result, _, path in made]
        if source == DIRECTORY and not show:
            shown = []
        text = made[0][1] if made else ""
        return shown, f"<p>{html.escape(text)}</p>" if text else ""

    generate.click(run, [source_tab, image, files, input_dir, output_dir, show_results, resize_tab, scale, width, height,
                         crop, upscaler_1, upscaler_2, visibility], [gallery, info], concurrency_limit=None)
    return ExtrasTab(image, mode_tabs, source_tab)


def _sources(service: GenerationService, source: int, picture, uploads, folder: str) -> tuple[list[Image.Image], list[str]]:
    """The pictures to work on and the names to save them under (batch sources keep their names)."""
    limit = megapixels(service.settings.get("limit_max_image_megapixels"))
    if source == SINGLE:
        if picture is None:
            raise InvalidRequest("image", "put a picture into Single Image first")
        return [picture], []
    if source == BATCH:
        paths = [Path(getattr(item, "name", item)) for item in (uploads or [])]
        if not paths:
            raise InvalidRequest("image", "upload pictures into Batch Process first")
    else:
        if not (folder or "").strip():
            raise InvalidRequest("input_dir", "give the folder of pictures to upscale")
        paths = batch_files(folder)
        if not paths:
            raise InvalidRequest("input_dir", f"no pictures found in {folder!r}")
    pictures, names = [], []
    for path in paths:
        try:
            pictures.append(read_image(path, limit, path.name, transpose=True))
            names.append(path.stem)
        except (ImageTooLarge, UnreadableImage) as error:
            raise InvalidRequest("image", str(error)) from None
    return pictures, names
