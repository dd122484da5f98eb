"""The txt2img tab: a view over ``GenerationService.txt2img`` (the same call the API makes)."""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from modules.core.generation.request import InvalidRequest, Txt2ImgRequest
from modules.core.generation.job import NansError
from modules.core.sampling.samplers import SAMPLERS
from modules.core.sampling.schedulers import SCHEDULERS
from modules.service.generation import GenerationService, JobOutcome
from modules.service.models import ModelLoadError
from modules.service.paste import Pasted
from modules.service.progress import ProgressSnapshot

USER_ERRORS = (InvalidRequest, ModelLoadError, NansError)
SEED_EXTRAS = ("subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h")


@dataclass
class Txt2ImgControls:
    """Request-field components by field name, plus the paste targets other tabs fill in."""

    fields: dict[str, gr.components.Component]
    seed_extras: gr.Checkbox
    overrides: gr.Dropdown

    def paste_outputs(self) -> list:
        return [*self.fields.values(), self.seed_extras, self.overrides]

    def paste_updates(self, pasted: Pasted) -> list:
        updates = [gr.update(value=pasted.fields[name]) if name in pasted.fields else gr.skip() for name in self.fields]
        varied = any(name in pasted.fields for name in SEED_EXTRAS)
        extras = gr.update(value=True) if varied else gr.skip()
        overrides = gr.update(choices=pasted.overrides, value=pasted.overrides, visible=bool(pasted.overrides))
        return [*updates, extras, overrides]


def gallery_outputs(outcome: JobOutcome) -> tuple[list, str, dict, int]:
    """Gallery items (saved files where there are some), the shown infotext, the per-item seeds and
    infotexts (a grid first carries the first image's), and the selected index."""
    processed = outcome.processed
    shown = [(str(path) if path else image, None) for image, path in zip(processed.images, processed.saved)]
    shown += [(image, None) for image in processed.images[len(processed.saved):]]
    seeds = processed.all_seeds[:1] * processed.index_of_first_image + processed.all_seeds
    state = {"seeds": seeds, "infotexts": list(processed.infotexts)}
    first = infotext_html(processed.infotexts[0]) if processed.infotexts else ""
    return shown, first, state, 0


def infotext_html(infotext: str) -> str:
    lines = [html.escape(line) for line in infotext.split("\n")]
    return f'<div class="infotext">{"<br>".join(lines)}</div>'


def _slider(low, high, value, step, label, elem_id, **extra):
    precision = 0 if float(step).is_integer() else None
    return gr.Slider(low, high, value=value, step=step, precision=precision, label=label, elem_id=elem_id, **extra)


def _prompts(fields: dict) -> tuple[gr.Button, gr.Button, gr.Button, gr.Button, gr.HTML, gr.HTML]:
    with gr.Row(elem_id="txt2img_toprow"):
        with gr.Column(scale=6):
            fields["prompt"] = gr.Textbox(label="Prompt", lines=3, elem_id="txt2img_prompt", placeholder="Prompt")
            counter = gr.HTML("0/75", elem_id="txt2img_token_counter", elem_classes=["token-counter"])
            fields["negative_prompt"] = gr.Textbox(label="Negative prompt", lines=2, elem_id="txt2img_neg_prompt",
                                                   placeholder="Negative prompt")
            negative_counter = gr.HTML("0/75", elem_id="txt2img_negative_token_counter", elem_classes=["token-counter"])
        with gr.Column(scale=1, min_width=160):
            generate = gr.Button("Generate", variant="primary", elem_id="txt2img_generate")
            with gr.Row():
                interrupt = gr.Button("Interrupt", elem_id="txt2img_interrupt")
                skip = gr.Button("Skip", elem_id="txt2img_skip")
            paste = gr.Button("↙", elem_id="txt2img_paste", elem_classes=["tool"])
            gr.Markdown("↙ reads generation parameters from the prompt box (or the last image's, if it is empty)")
    return generate, interrupt, skip, paste, counter, negative_counter


def _parameters(fields: dict) -> tuple[gr.Button, gr.Button, gr.Checkbox]:
    with gr.Row():
        fields["sampler_name"] = gr.Dropdown([s.name for s in SAMPLERS], value="DPM++ 2M", label="Sampling method",
                                             elem_id="txt2img_sampling")
        fields["scheduler"] = gr.Dropdown([s.label for s in SCHEDULERS], value="Automatic", label="Schedule type",
                                          elem_id="txt2img_scheduler")
    fields["steps"] = _slider(1, 150, 20, 1, "Sampling steps", "txt2img_steps")
    with gr.Row():
        with gr.Column():
            fields["width"] = _slider(64, 2048, 512, 8, "Width", "txt2img_width")
            fields["height"] = _slider(64, 2048, 512, 8, "Height", "txt2img_height")
        with gr.Column():
            fields["n_iter"] = _slider(1, 100, 1, 1, "Batch count", "txt2img_batch_count")
            fields["batch_size"] = _slider(1, 8, 1, 1, "Batch size", "txt2img_batch_size")
    fields["cfg_scale"] = _slider(1, 30, 7, 0.5, "CFG Scale", "txt2img_cfg_scale")
    with gr.Row():
        fields["seed"] = gr.Number(value=-1, precision=0, label="Seed", elem_id="txt2img_seed", scale=4)
        random_seed = gr.Button("🎲", elem_id="txt2img_random_seed", scale=0, min_width=48)
        reuse_seed = gr.Button("♻", elem_id="txt2img_reuse_seed", scale=0, min_width=48)
        seed_extras = gr.Checkbox(label="Extra", elem_id="txt2img_subseed_show", scale=0, min_width=80)
    with gr.Group(visible=False, elem_id="txt2img_seed_extras") as extras_group:
        with gr.Row():
            fields["subseed"] = gr.Number(value=-1, precision=0, label="Variation seed", elem_id="txt2img_subseed")
            fields["subseed_strength"] = _slider(0, 1, 0, 0.01, "Variation strength", "txt2img_subseed_strength")
        with gr.Row():
            fields["seed_resize_from_w"] = _slider(0, 2048, 0, 8, "Resize seed from width", "txt2img_seed_resize_from_w")
            fields["seed_resize_from_h"] = _slider(0, 2048, 0, 8, "Resize seed from height", "txt2img_seed_resize_from_h")
    seed_extras.change(lambda on: gr.Group(visible=on), seed_extras, extras_group, queue=False)
    return random_seed, reuse_seed, seed_extras


def build(service: GenerationService) -> Txt2ImgControls:
    fields: dict[str, gr.components.Component] = {}
    generate, interrupt, skip, paste, counter, negative_counter = _prompts(fields)
    with gr.Row():
        with gr.Column(scale=1):
            random_seed, reuse_seed, seed_extras = _parameters(fields)
            overrides = gr.Dropdown([], value=[], multiselect=True, label="Override settings", visible=False,
                                    elem_id="txt2img_override_settings")
        with gr.Column(scale=1):
            gallery = gr.Gallery(label="Output", elem_id="txt2img_gallery", columns=2, format="png", height="auto")
            info = gr.HTML(elem_id="txt2img_html_info")
    controls = Txt2ImgControls(fields, seed_extras, overrides)
    generation = gr.State({"seeds": [], "infotexts": []})
    selected = gr.State(0)
    names = list(fields)

    def run(*values, progress=gr.Progress()):
        *field_values, extras_on, override_entries = values
        chosen = dict(zip(names, field_values))
        if not extras_on:  # A1111: without "Extra", variation seed and resize are not used
            chosen.update(subseed=-1, subseed_strength=0.0, seed_resize_from_w=0, seed_resize_from_h=0)

        def report(snapshot: ProgressSnapshot) -> None:
            progress(snapshot.progress, desc=f"Batch {snapshot.job_no + 1}/{snapshot.job_count}, "
                                             f"step {snapshot.sampling_step}/{snapshot.sampling_steps}")

        try:
            override_settings = service.overrides_from_entries(override_entries)
            outcome = service.txt2img(Txt2ImgRequest(**chosen), override_settings=override_settings, on_progress=report)
        except USER_ERRORS as error:
            raise gr.Error(str(error)) from None
        return gallery_outputs(outcome)

    inputs = [*fields.values(), seed_extras, overrides]
    generate.click(run, inputs, [gallery, info, generation, selected], concurrency_id="gpu")
    fields["prompt"].submit(run, inputs, [gallery, info, generation, selected], concurrency_id="gpu")
    interrupt.click(service.interrupt, queue=False)
    skip.click(service.skip, queue=False)
    random_seed.click(lambda: -1, None, fields["seed"], queue=False)

    def reuse(state: dict, index: int) -> int:
        seeds = state.get("seeds") or []
        return seeds[index] if 0 <= index < len(seeds) else -1

    reuse_seed.click(reuse, [generation, selected], fields["seed"], queue=False)

    def select(state: dict, event: gr.SelectData):
        texts = state.get("infotexts") or []
        index = event.index if isinstance(event.index, int) else 0
        return index, infotext_html(texts[index]) if index < len(texts) else ""

    gallery.select(select, [generation], [selected, info], queue=False)
    paste.click(lambda text: controls.paste_updates(service.paste(text or service.last_infotext())),
                fields["prompt"], controls.paste_outputs(), queue=False)

    def count(text: str, steps: int, positive: bool) -> str:
        used, available = service.token_count(text or "", int(steps or 1), positive)
        return f"{used}/{available}"

    for box, counter_html, positive in ((fields["prompt"], counter, True), (fields["negative_prompt"], negative_counter, False)):
        box.change(lambda text, steps, p=positive: count(text, steps, p), [box, fields["steps"]], counter_html,
                   queue=False, show_progress="hidden", trigger_mode="always_last")
    return controls
