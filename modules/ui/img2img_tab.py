"""The img2img tab: a view over ``GenerationService.img2img``. Its input sub-tabs are A1111's
``mode``: 0 img2img, 1 Sketch, 2 Inpaint, 3 Inpaint sketch, 4 Inpaint upload, 5 Batch; each turns
what the user uploaded or painted into the request's init image and mask."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from modules.core.generation.image_ops import scaled_size as resize_by_size
from modules.core.generation.request import MASKED_CONTENT, RESIZE_MODES, Img2ImgRequest
from modules.service.batch import PNG_INFO_PROPS, PngInfoUse, img2img_batch
from modules.service.generation import GenerationService
from modules.service.paste import Pasted
from modules.ui import extra_networks_ui, scripts_ui
from modules.ui.common import (
    REFRESH_OPTIONS_JS, USER_ERRORS, FormControls, OutputPanel, batch_controls, combined_gallery_outputs, output_panel,
    override_dropdown, SessionJobs, stream_job, style_controls, watch_progress, prompt_row, sampler_controls, refiner_controls, seed_controls, size_controls, slider,
    wire_common, without_seed_extras,
)

TAB = "img2img"
MODE_TABS = (("img2img", "img2img_img2img_tab"), ("Sketch", "img2img_img2img_sketch_tab"),
             ("Inpaint", "img2img_inpaint_tab"), ("Inpaint sketch", "img2img_inpaint_sketch_tab"),
             ("Inpaint upload", "img2img_inpaint_upload_tab"), ("Batch", "img2img_batch_tab"))
IMG2IMG, SKETCH, INPAINT, INPAINT_SKETCH, INPAINT_UPLOAD, BATCH = range(6)
INPAINT_MODES = (INPAINT, INPAINT_SKETCH, INPAINT_UPLOAD)
MASK_MODES = ("Inpaint masked", "Inpaint not masked")
INPAINT_AREAS = ("Whole picture", "Only masked")


# ------------------------------------------------------------------- canvases → image and mask

def editor_to_image_and_mask(value, mode: int, mask_alpha: float = 0, mask_blur: int = 4):
    """(init image, mask or None) from what a canvas sub-tab holds, as A1111's ``img2img()``:

    - 0 img2img: the uploaded picture (or an editor's composite); no mask.
    - 1 Sketch: the composite (picture plus colour strokes); no mask.
    - 2 Inpaint: the background; the mask is white where the painted layers' alpha is over 128
      (A1111's ``create_binary_mask``).
    - 3 Inpaint sketch: the mask is where the composite differs from the background, dimmed by
      "Mask transparency"; the init image is the blurred sketch inside the (blurred) mask over the
      background.

    ``value`` is a PIL image or the editor's ``{"background", "layers", "composite"}``; (None,
    None) when there is no picture."""
    if value is None:
        return None, None
    if isinstance(value, Image.Image):
        value = {"background": value, "layers": [], "composite": value}
    background, composite = value.get("background"), value.get("composite")
    if mode in (IMG2IMG, SKETCH):
        return (composite if composite is not None else background), None
    if mode == INPAINT:
        if background is None:
            return None, None
        return background, painted_mask(value.get("layers") or [], background.size)
    if mode == INPAINT_SKETCH:
        return _inpaint_sketch(composite, background, mask_alpha, mask_blur)
    raise ValueError(f"mode {mode} has no canvas; canvases are modes 0-3")


def painted_mask(layers: list, size: tuple[int, int]) -> Image.Image:
    """White where any layer is painted (alpha > 128), black elsewhere, at ``size``."""
    alpha = np.zeros((size[1], size[0]), dtype=np.uint8)
    for layer in layers:
        if layer is None:
            continue
        channel = layer.convert("RGBA").getchannel("A")
        if channel.size != size:
            channel = channel.resize(size, Image.Resampling.NEAREST)
        alpha = np.maximum(alpha, np.asarray(channel))
    return Image.fromarray(np.where(alpha > 128, 255, 0).astype(np.uint8), "L")


def _inpaint_sketch(composite, background, mask_alpha: float, mask_blur: int):
    image = composite if composite is not None else background
    if image is None:
        return None, None
    orig = background if background is not None else image
    image, orig = image.convert("RGBA"), orig.convert("RGBA")
    if image.size != orig.size:
        image = image.resize(orig.size, Image.Resampling.LANCZOS)
    changed = np.any(np.asarray(image) != np.asarray(orig), axis=-1)
    mask = Image.fromarray(changed.astype(np.uint8) * 255, "L")
    mask = ImageEnhance.Brightness(mask).enhance(1 - mask_alpha / 100)
    blur = ImageFilter.GaussianBlur(mask_blur)
    return Image.composite(image.filter(blur), orig, mask.filter(blur)), mask


def init_image_and_mask(mode: int, init_img, sketch, inpaint, inpaint_sketch, upload_image, upload_mask,
                        mask_alpha: float = 0, mask_blur: int = 4):
    """The sub-tab ``mode``'s (init image, mask); (None, None) for Batch."""
    if mode == IMG2IMG:
        return editor_to_image_and_mask(init_img, IMG2IMG)
    if mode in (SKETCH, INPAINT, INPAINT_SKETCH):
        value = (sketch, inpaint, inpaint_sketch)[mode - SKETCH]
        return editor_to_image_and_mask(value, mode, mask_alpha, mask_blur)
    if mode == INPAINT_UPLOAD:
        return upload_image, upload_mask
    return None, None


def resize_preview(size: tuple[int, int] | None, scale: float) -> str:
    if not size:
        return "no image selected"
    width, height = resize_by_size(size, scale)
    return (f"resize: from <span class='resolution'>{size[0]}x{size[1]}</span> to "
            f"<span class='resolution'>{width}x{height}</span>")


def picture_size(value) -> tuple[int, int] | None:
    """The size of a sub-tab's picture (an editor's background, else its composite)."""
    if isinstance(value, dict):
        value = value.get("background") if value.get("background") is not None else value.get("composite")
    return value.size if isinstance(value, Image.Image) else None


def _label_of(choices: tuple):
    return lambda value: value if isinstance(value, str) else choices[int(value)]


def img2img_request(chosen: dict, mode: int, pictures, upload_mask, mask_alpha: float = 0,
                    scale_by: float | None = None) -> Img2ImgRequest:
    """The request of the controls' values (``chosen``, by field name; index radios as indexes)
    for sub-tab ``mode``, whose pictures are ``(init_img, sketch, inpaint, inpaint_sketch,
    upload_image)``. ``scale_by`` is "Resize by"'s scale, None for "Resize to". Batch's request
    carries no picture: ``run_batch`` adds each one."""
    chosen = {**chosen, "inpaint_full_res": bool(chosen.get("inpaint_full_res", False))}
    image, mask = init_image_and_mask(mode, *pictures, upload_mask, mask_alpha, int(chosen.get("mask_blur", 4)))
    if scale_by is not None and image is not None:
        chosen["width"], chosen["height"] = resize_by_size(image.size, scale_by)
    return Img2ImgRequest(**chosen, init_images=(image,) if image is not None else (), mask=mask, mode=mode)


# ------------------------------------------------------------------------------------- view

@dataclass
class Img2ImgTab:
    controls: FormControls
    extra_networks: extra_networks_ui.ExtraNetworksUI
    panel: OutputPanel
    scripts: scripts_ui.ScriptControls
    sub_tabs: gr.Tabs
    mode: gr.State
    init_img: gr.Image
    inpaint: gr.ImageEditor
    inpaint_controls: gr.Group
    mask_alpha: gr.Slider
    sizes: gr.State
    scale: gr.Slider
    preview: gr.HTML

    def send_inputs(self) -> list:
        """What a send-to handler needs from this tab besides its source: see ``send_updates``."""
        return [self.sizes, self.scale]

    def send_outputs(self, mode: int) -> list:
        """What "send to img2img / inpaint" sets: the sub-tab's picture, the pasted fields, the sub-tab."""
        target = self.init_img if mode == IMG2IMG else self.inpaint
        return [target, *self.controls.paste_outputs(), self.sub_tabs, self.mode, self.inpaint_controls, self.mask_alpha,
                self.sizes, self.preview]

    def send_updates(self, mode: int, picture: Image.Image | None, pasted: Pasted, known: dict, factor: float) -> list:
        if picture is None:
            raise gr.Error("No image to send")
        value = picture if mode == IMG2IMG else {"background": picture, "layers": [], "composite": picture}
        known = {**(known or {}), mode: picture.size}
        return [value, *self.controls.paste_updates(pasted), gr.Tabs(selected=MODE_TABS[mode][1]), mode,
                *_mode_visibility(mode), known, resize_preview(picture.size, factor)]


def _mode_visibility(mode: int) -> list:
    return [gr.Group(visible=mode in INPAINT_MODES), gr.Slider(visible=mode == INPAINT_SKETCH)]


def _editor(elem_id: str, label: str, brush: gr.Brush) -> gr.ImageEditor:
    return gr.ImageEditor(label=label, elem_id=elem_id, type="pil", image_mode="RGBA", format="png",
                          sources=["upload", "clipboard"], brush=brush, layers=False, height=480)


def _inputs() -> dict:
    parts: dict = {}
    with gr.Tabs(elem_id="mode_img2img") as parts["sub_tabs"]:
        tabs = []
        for index, (label, elem_id) in enumerate(MODE_TABS):
            with gr.Tab(label, id=elem_id, elem_id=elem_id) as tab:
                if index == IMG2IMG:
                    parts["init_img"] = gr.Image(label="Image for img2img", elem_id="img2img_image", type="pil",
                                                 image_mode="RGBA", sources=["upload", "clipboard"], height=480)
                elif index == SKETCH:
                    parts["sketch"] = _editor("img2img_sketch", "Image for img2img", gr.Brush(color_mode="defaults"))
                elif index == INPAINT:
                    parts["inpaint"] = _editor("img2maskimg", "Image for inpainting with mask",
                                               gr.Brush(colors=["#ffffff"], default_color="#ffffff", color_mode="fixed"))
                elif index == INPAINT_SKETCH:
                    parts["inpaint_sketch"] = _editor("inpaint_sketch", "Color sketch inpainting",
                                                      gr.Brush(color_mode="defaults"))
                elif index == INPAINT_UPLOAD:
                    parts["upload_image"] = gr.Image(label="Image for img2img", elem_id="img_inpaint_base", type="pil",
                                                     image_mode="RGBA", sources=["upload"])
                    parts["upload_mask"] = gr.Image(label="Mask", elem_id="img_inpaint_mask", type="pil",
                                                    image_mode="RGBA", sources=["upload"])
                else:
                    gr.Markdown("Process images in a directory on the same machine where the server is running. "
                                "Leave the output directory empty to save to the usual folder. Add an inpaint batch "
                                "mask directory to inpaint (one mask for all, or one per image with the same name).")
                    parts["batch_input"] = gr.Textbox("", label="Input directory", elem_id="img2img_batch_input_dir")
                    parts["batch_output"] = gr.Textbox("", label="Output directory", elem_id="img2img_batch_output_dir")
                    parts["batch_masks"] = gr.Textbox("", label="Inpaint batch mask directory "
                                                          "(required for inpaint batch processing only)",
                                                      elem_id="img2img_batch_inpaint_mask_dir")
                    with gr.Accordion("PNG info", open=False):
                        parts["batch_use_png_info"] = gr.Checkbox(False, label="Append png info to prompts",
                                                                  elem_id="img2img_batch_use_png_info")
                        parts["batch_png_info_dir"] = gr.Textbox("", label="PNG info directory (empty: the input "
                                                                 "pictures themselves)",
                                                                 elem_id="img2img_batch_png_info_dir")
                        parts["batch_png_info_props"] = gr.CheckboxGroup(
                            list(PNG_INFO_PROPS), value=list(PNG_INFO_PROPS), label="Parameters to take from png info",
                            elem_id="img2img_batch_png_info_props")
            tabs.append(tab)
    parts["mode_tabs"] = tabs
    return parts


def _inpaint_controls(fields: dict) -> tuple[gr.Group, gr.Slider]:
    with gr.Group(visible=False, elem_id="inpaint_controls") as group:
        with gr.Row():
            fields["mask_blur"] = slider(0, 64, 4, 1, "Mask blur", "img2img_mask_blur")
            mask_alpha = slider(0, 100, 0, 1, "Mask transparency", "img2img_mask_alpha", visible=False)
        fields["inpainting_mask_invert"] = gr.Radio(list(MASK_MODES), value=MASK_MODES[0], type="index",
                                                    label="Mask mode", elem_id="img2img_mask_mode")
        fields["inpainting_fill"] = gr.Radio(list(MASKED_CONTENT), value="original", type="index",
                                             label="Masked content", elem_id="img2img_inpainting_fill")
        with gr.Row():
            fields["inpaint_full_res"] = gr.Radio(list(INPAINT_AREAS), value=INPAINT_AREAS[0], type="index",
                                                  label="Inpaint area", elem_id="img2img_inpaint_full_res")
            fields["inpaint_full_res_padding"] = slider(0, 256, 32, 4, "Only masked padding, pixels",
                                                        "img2img_inpaint_full_res_padding")
    return group, mask_alpha


def _resize_tabs(fields: dict) -> tuple[list[gr.Tab], gr.Slider, gr.HTML]:
    with gr.Tabs(elem_id="img2img_tabs_resize"):
        with gr.Tab("Resize to", id="img2img_tab_resize_to", elem_id="img2img_tab_resize_to") as resize_to:
            size_controls(fields, TAB)
        with gr.Tab("Resize by", id="img2img_tab_resize_by", elem_id="img2img_tab_resize_by") as resize_by:
            scale = slider(0.05, 4.0, 1.0, 0.05, "Scale", "img2img_scale")
            preview = gr.HTML("no image selected", elem_id="img2img_scale_resolution_preview")
    return [resize_to, resize_by], scale, preview


def _wire_preview(pictures: list, mode: gr.State, sizes: gr.State, scale: gr.Slider, preview: gr.HTML,
                  resize_by: gr.Tab) -> None:
    """"Resize by"'s "from W×H to W'×H'" note. Each sub-tab's picture size is remembered when it
    is uploaded, so the note never needs the (large) canvases sent along."""
    for index, picture in enumerate(pictures):
        def update(value, known: dict, current_mode: int, factor: float, i=index):
            known = {**(known or {}), i: picture_size(value)}
            return known, resize_preview(known.get(current_mode), factor)

        events = (picture.change,) if isinstance(picture, gr.Image) else (picture.upload, picture.clear)
        for event in events:
            event(update, [picture, sizes, mode, scale], [sizes, preview], queue=False, show_progress="hidden")

    def show(known: dict, current_mode: int, factor: float) -> str:
        return resize_preview((known or {}).get(current_mode), factor)

    resize_by.select(show, [sizes, mode, scale], preview, queue=False, show_progress="hidden")
    scale.change(show, [sizes, mode, scale], preview, queue=False, show_progress="hidden", trigger_mode="always_last")


def build(service: GenerationService) -> Img2ImgTab:
    fields: dict[str, gr.components.Component] = {}
    row = prompt_row(fields, TAB, interrogate=True)
    styles = style_controls(service, TAB)
    extra_networks = extra_networks_ui.build(service, TAB, fields["prompt"], fields["negative_prompt"])
    mode, scale_tab, sizes = gr.State(IMG2IMG), gr.State(0), gr.State({})
    with gr.Row():
        with gr.Column(scale=1, elem_id="img2img_settings"):
            parts = _inputs()
            fields["resize_mode"] = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[0], type="index",
                                             label="Resize mode", elem_id="resize_mode")
            inpaint_group, mask_alpha = _inpaint_controls(fields)
            sampler_controls(fields, TAB)
            refiner_controls(fields, TAB, service.models.titles())
            with gr.Row():
                with gr.Column():
                    resize_tabs, scale, preview = _resize_tabs(fields)
                with gr.Column():
                    batch_controls(fields, TAB)
            fields["cfg_scale"] = slider(1, 30, 7, 0.5, "CFG Scale", f"{TAB}_cfg_scale")
            fields["denoising_strength"] = slider(0, 1, 0.75, 0.01, "Denoising strength", f"{TAB}_denoising_strength")
            seeds = seed_controls(fields, TAB)
            overrides = override_dropdown(TAB)
            scripts = scripts_ui.build(service.scripts, is_img2img=True)
        with gr.Column(scale=1):
            panel = output_panel(TAB, "html_info_img2img")
    shown_as = {"resize_mode": _label_of(RESIZE_MODES), "inpainting_fill": _label_of(MASKED_CONTENT),
                "inpainting_mask_invert": _label_of(MASK_MODES), "inpaint_full_res": _label_of(INPAINT_AREAS)}
    controls = FormControls(fields, seeds.seed_extras, overrides, shown_as)
    jobs = SessionJobs(service)
    wire_common(service, controls, row, seeds, panel, jobs)
    pictures = [parts[name] for name in ("init_img", "sketch", "inpaint", "inpaint_sketch", "upload_image")]

    _wire_preview(pictures, mode, sizes, scale, preview, resize_tabs[1])
    for index, tab in enumerate(parts["mode_tabs"]):
        tab.select(lambda known, factor, i=index: [i, *_mode_visibility(i), resize_preview(known.get(i), factor)],
                   [sizes, scale], [mode, inpaint_group, mask_alpha, preview], queue=False, show_progress="hidden")
    for index, tab in enumerate(resize_tabs):
        tab.select(lambda i=index: i, None, scale_tab, queue=False, show_progress="hidden")

    field_count = len(fields)
    extra_inputs = [seeds.seed_extras, overrides, styles, mode, *pictures, parts["upload_mask"], mask_alpha, scale_tab, scale,
                    parts["batch_input"], parts["batch_output"], parts["batch_masks"], parts["batch_use_png_info"],
                    parts["batch_png_info_dir"], parts["batch_png_info_props"]]

    def run(session: gr.Request, *values, progress=gr.Progress()):
        field_values, extra = values[:field_count], values[field_count:field_count + len(extra_inputs)]
        script_values = values[field_count + len(extra_inputs):]
        (extras_on, override_entries, chosen_styles, current_mode, *pictures_values, upload_mask, alpha, resize_tab, factor,
         batch_input, batch_output, batch_masks, use_png_info, png_info_dir, png_info_props) = extra
        chosen = without_seed_extras(controls.values(field_values), extras_on)
        chosen["initial_noise_multiplier"] = service.settings.get("initial_noise_multiplier")
        scale_by = float(factor) if resize_tab == 1 else None
        try:
            override_settings = service.overrides_from_entries(override_entries)
            script = scripts.script_arg(script_values)
            request = service.styles.apply(
                img2img_request(chosen, current_mode, pictures_values, upload_mask, float(alpha or 0), scale_by),
                chosen_styles)
            if current_mode == BATCH:
                png_info = PngInfoUse(tuple(png_info_props or ()), png_info_dir or "") if use_png_info else None
                outcomes = watch_progress(service, progress, lambda: img2img_batch(
                    service, request, batch_input or "", batch_output or "", batch_masks or "", scale_by,
                    override_settings, None, script, png_info))
                yield combined_gallery_outputs(outcomes)
                return
            job = service.submit_img2img(request, override_settings=override_settings, script=script,
                                         alwayson=scripts.alwayson_arg(script_values))
        except USER_ERRORS as error:
            raise gr.Error(str(error)) from None
        yield from stream_job(service, jobs, session, job, progress)

    def interrogator(model: str):
        def interrogate(current_mode: int, *values):
            *pictures_values, upload_mask = values
            picture, _ = init_image_and_mask(current_mode, *pictures_values, upload_mask)
            if picture is None:
                raise gr.Error("Interrogate: put a picture into this sub-tab first")
            try:
                return service.interrogate(picture, model)
            except USER_ERRORS as error:
                raise gr.Error(str(error)) from None
        return interrogate

    for button, model in ((row.interrogate_clip, "clip"), (row.interrogate_deepbooru, "deepdanbooru")):
        button.click(interrogator(model), [mode, *pictures, parts["upload_mask"]], fields["prompt"])

    inputs = [*fields.values(), *extra_inputs, *scripts.inputs()]
    row.generate.click(run, inputs, panel.outputs(), concurrency_limit=None).then(None, js=REFRESH_OPTIONS_JS)
    fields["prompt"].submit(run, inputs, panel.outputs(), concurrency_limit=None)
    return Img2ImgTab(controls, extra_networks, panel, scripts, parts["sub_tabs"], mode, parts["init_img"], parts["inpaint"],
                      inpaint_group, mask_alpha, sizes, scale, preview)
