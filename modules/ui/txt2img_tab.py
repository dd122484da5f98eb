"""The txt2img tab: a view over ``GenerationService.txt2img`` (the same call the API makes), with
the Hires. fix accordion, the Script dropdown and the gallery's send-to and ✨ upscale buttons."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from modules.core.generation.hires import hires_target
from modules.core.generation.request import HIRES_UPSCALERS, Txt2ImgRequest
from modules.core.sampling.samplers import SAMPLERS
from modules.core.sampling.schedulers import SCHEDULERS
from modules.service.generation import GenerationService
from modules.ui import extra_networks_ui, scripts_ui
from modules.ui.common import (
    REFRESH_OPTIONS_JS, USER_ERRORS, FormControls, OutputPanel, batch_controls, gallery_outputs, infotext_at,
    output_panel, override_dropdown, picture_at, SessionJobs, follow_job, stream_job, style_controls, prompt_row, sampler_controls, refiner_controls, seed_controls,
    size_controls, slider, wire_common, without_seed_extras,
)

SAME_SAMPLER = "Use same sampler"
SAME_SCHEDULER = "Use same scheduler"
SAME_CHECKPOINT = "Use same checkpoint"
TAB = "txt2img"


@dataclass
class Txt2ImgTab:
    controls: FormControls
    extra_networks: extra_networks_ui.ExtraNetworksUI
    panel: OutputPanel
    scripts: scripts_ui.ScriptControls


def hires_resolution(enable: bool, width, height, scale, resize_x, resize_y) -> str:
    """A1111's "from W×H to W'×H'" note of the Hires. fix accordion (empty while it is off)."""
    if not enable:
        return ""
    width, height, resize_x, resize_y = int(width), int(height), int(resize_x or 0), int(resize_y or 0)
    target = hires_target(width, height, float(scale), resize_x, resize_y)
    return (f"from <span class='resolution'>{width}x{height}</span> to "
            f"<span class='resolution'>{resize_x or target.width}x{resize_y or target.height}</span>")


def hires_request_values(chosen: dict) -> dict:
    """The dropdowns' "Use same …" entries are the request's "" (= the first pass's)."""
    if chosen.get("hr_sampler_name") == SAME_SAMPLER:
        chosen["hr_sampler_name"] = ""
    if chosen.get("hr_scheduler") == SAME_SCHEDULER:
        chosen["hr_scheduler"] = ""
    if chosen.get("hr_checkpoint_name") == SAME_CHECKPOINT:
        chosen["hr_checkpoint_name"] = ""
    return chosen


def _hires(fields: dict, service: GenerationService) -> tuple[gr.Accordion, gr.HTML]:
    show_sampler = bool(service.settings.get("hires_fix_show_sampler"))
    show_prompts = bool(service.settings.get("hires_fix_show_prompts"))
    with gr.Accordion("Hires. fix", open=False, elem_id="txt2img_hr") as accordion:
        with gr.Row():
            fields["enable_hr"] = gr.Checkbox(False, label="Enable", elem_id="txt2img_hr-checkbox", scale=0, min_width=100)
            resolution = gr.HTML("", elem_id="txtimg_hr_finalres")
        with gr.Row(elem_id="txt2img_hires_fix_row1"):
            choices = [*HIRES_UPSCALERS, *(name for name in service.upscalers.names() if name not in HIRES_UPSCALERS)]
            fields["hr_upscaler"] = gr.Dropdown(choices, value="Latent", label="Upscaler", elem_id="txt2img_hr_upscaler")
            fields["hr_second_pass_steps"] = slider(0, 150, 0, 1, "Hires steps", "txt2img_hires_steps")
            fields["denoising_strength"] = slider(0, 1, 0.7, 0.01, "Denoising strength", "txt2img_denoising_strength")
        with gr.Row(elem_id="txt2img_hires_fix_row2"):
            fields["hr_scale"] = slider(1, 4, 2.0, 0.05, "Upscale by", "txt2img_hr_scale")
            fields["hr_resize_x"] = slider(0, 2048, 0, 8, "Resize width to", "txt2img_hr_resize_x")
            fields["hr_resize_y"] = slider(0, 2048, 0, 8, "Resize height to", "txt2img_hr_resize_y")
        with gr.Row(elem_id="txt2img_hires_fix_row3", visible=show_sampler):
            fields["hr_checkpoint_name"] = gr.Dropdown([SAME_CHECKPOINT, *service.models.titles()], value=SAME_CHECKPOINT,
                                                       label="Checkpoint", elem_id="hr_checkpoint", allow_custom_value=True)
            fields["hr_sampler_name"] = gr.Dropdown([SAME_SAMPLER, *(s.name for s in SAMPLERS)], value=SAME_SAMPLER,
                                                    label="Hires sampling method", elem_id="hr_sampler")
            fields["hr_scheduler"] = gr.Dropdown([SAME_SCHEDULER, *(s.label for s in SCHEDULERS)], value=SAME_SCHEDULER,
                                                 label="Hires schedule type", elem_id="hr_scheduler")
        with gr.Row(elem_id="txt2img_hires_fix_row4", visible=show_prompts):
            fields["hr_prompt"] = gr.Textbox(
                "", label="Hires prompt", lines=3, elem_id="hires_prompt",
                placeholder="Prompt for hires fix pass.\nLeave empty to use the same prompt as in first pass.")
            fields["hr_negative_prompt"] = gr.Textbox(
                "", label="Hires negative prompt", lines=3, elem_id="hires_neg_prompt",
                placeholder="Negative prompt for hires fix pass.\n"
                            "Leave empty to use the same negative prompt as in first pass.")
    return accordion, resolution


def _wire_hires(fields: dict, accordion: gr.Accordion, resolution: gr.HTML) -> None:
    enable = fields["enable_hr"]
    # As A1111's InputAccordion: opening the accordion turns hires fix on, closing it turns it off.
    accordion.expand(lambda: True, None, enable, queue=False, show_progress="hidden")
    accordion.collapse(lambda: False, None, enable, queue=False, show_progress="hidden")
    enable.change(lambda on: gr.Accordion(open=on), enable, accordion, queue=False, show_progress="hidden")
    inputs = [enable, fields["width"], fields["height"], fields["hr_scale"], fields["hr_resize_x"], fields["hr_resize_y"]]
    for component in inputs:
        component.change(hires_resolution, inputs, resolution, queue=False, show_progress="hidden",
                         trigger_mode="always_last")


def build(service: GenerationService) -> Txt2ImgTab:
    fields: dict[str, gr.components.Component] = {}
    row = prompt_row(fields, TAB)
    styles = style_controls(service, TAB)
    extra_networks = extra_networks_ui.build(service, TAB, fields["prompt"], fields["negative_prompt"])
    with gr.Row():
        with gr.Column(scale=1, elem_id="txt2img_settings"):
            sampler_controls(fields, TAB)
            refiner_controls(fields, TAB, service.models.titles())
            accordion, resolution = _hires(fields, service)
            with gr.Row():
                with gr.Column():
                    size_controls(fields, TAB)
                with gr.Column():
                    batch_controls(fields, TAB)
            fields["cfg_scale"] = slider(1, 30, 7, 0.5, "CFG Scale", f"{TAB}_cfg_scale")
            seeds = seed_controls(fields, TAB)
            overrides = override_dropdown(TAB)
            scripts = scripts_ui.build(service.scripts, is_img2img=False)
        with gr.Column(scale=1):
            panel = output_panel(TAB, "html_info_txt2img", upscale=True)
    shown_as = {"hr_sampler_name": lambda value: value or SAME_SAMPLER,
                "hr_scheduler": lambda value: value or SAME_SCHEDULER,
                "hr_checkpoint_name": lambda value: value or SAME_CHECKPOINT}
    controls = FormControls(fields, seeds.seed_extras, overrides, shown_as)
    _wire_hires(fields, accordion, resolution)
    jobs = SessionJobs(service)
    wire_common(service, controls, row, seeds, panel, jobs)
    field_count = len(fields)

    def request_from(values) -> tuple[Txt2ImgRequest, list, tuple]:
        field_values, (extras_on, override_entries, chosen_styles), script_values = (
            values[:field_count], values[field_count:field_count + 3], values[field_count + 3:])
        chosen = hires_request_values(without_seed_extras(controls.values(field_values), extras_on))
        return service.styles.apply(Txt2ImgRequest(**chosen), chosen_styles), override_entries, script_values

    def run(session: gr.Request, *values, progress=gr.Progress()):
        request, override_entries, script_values = request_from(values)
        try:
            job = service.submit_txt2img(request, override_settings=service.overrides_from_entries(override_entries),
                                         script=scripts.script_arg(script_values),
                                         alwayson=scripts.alwayson_arg(script_values))
        except USER_ERRORS as error:
            raise gr.Error(str(error)) from None
        yield from stream_job(service, jobs, session, job, progress)

    inputs = [*fields.values(), seeds.seed_extras, overrides, styles, *scripts.inputs()]
    row.generate.click(run, inputs, panel.outputs(), concurrency_limit=None).then(None, js=REFRESH_OPTIONS_JS)
    fields["prompt"].submit(run, inputs, panel.outputs(), concurrency_limit=None)

    def upscale(gallery_value, index: int, state: dict, *values, progress=gr.Progress()):
        """✨: the hires pass of the current settings on the chosen picture; it replaces that item."""
        picture = picture_at(gallery_value, index)
        if picture is None:
            raise gr.Error("No image to upscale")
        request, _, _ = request_from(values)
        try:
            job = service.submit_upscale(request, picture.convert("RGB"), infotext=infotext_at(state, index))
        except USER_ERRORS as error:
            raise gr.Error(str(error)) from None
        for _ in follow_job(service, job, progress):
            pass  # the gallery keeps its items until the upscaled one replaces its picture
        try:
            outcome = job.result()
        except USER_ERRORS as error:
            raise gr.Error(str(error)) from None
        return replace_gallery_item(gallery_value, index, state, outcome)

    panel.upscale.click(upscale, [panel.gallery, panel.selected, panel.generation, *inputs], panel.outputs(),
                        concurrency_limit=None)
    return Txt2ImgTab(controls, extra_networks, panel, scripts)


def replace_gallery_item(gallery_value: list, index: int, state: dict, outcome) -> tuple[list, str, dict, int]:
    """The gallery with the item at ``index`` replaced by the job's pictures (A1111's ✨)."""
    index = index if 0 <= index < len(gallery_value) else 0
    made, made_html, made_state, _ = gallery_outputs(outcome)
    items = [(item[0] if isinstance(item, (tuple, list)) else item, None) for item in gallery_value]
    seeds = list(state.get("seeds") or [])
    texts = list(state.get("infotexts") or [])
    items[index:index + 1] = made
    seeds[index:index + 1] = made_state["seeds"]
    texts[index:index + 1] = made_state["infotexts"]
    return items, made_html, {"seeds": seeds, "infotexts": texts}, index
