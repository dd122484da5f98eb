"""The txt2img tab: a view over ``GenerationService.txt2img`` (the same call the API makes)."""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from modules.core.generation.request import InvalidRequest, Txt2ImgRequest
from modules.core.generation.txt2img import NansError
from modules.core.sampling.samplers import SAMPLERS
from modules.core.sampling.schedulers import SCHEDULERS
from modules.service.generation import GenerationService
from modules.service.models import ModelLoadError
from modules.service.progress import ProgressSnapshot

USER_ERRORS = (InvalidRequest, ModelLoadError, NansError)


@dataclass
class Txt2ImgControls:
    """The components other tabs fill in (PNG Info's "Send to txt2img")."""

    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    sampler: gr.Dropdown
    scheduler: gr.Dropdown
    steps: gr.Slider
    width: gr.Slider
    height: gr.Slider
    cfg_scale: gr.Slider
    seed: gr.Number


def infotext_html(infotext: str) -> str:
    lines = [html.escape(line) for line in infotext.split("\n")]
    return f'<div class="infotext">{"<br>".join(lines)}</div>'


def build(service: GenerationService) -> Txt2ImgControls:
    with gr.Row(elem_id="txt2img_toprow"):
        with gr.Column(scale=6):
            prompt = gr.Textbox(label="Prompt", lines=3, elem_id="txt2img_prompt", placeholder="Prompt")
            negative = gr.Textbox(label="Negative prompt", lines=2, elem_id="txt2img_neg_prompt", placeholder="Negative prompt")
        with gr.Column(scale=1, min_width=160):
            generate = gr.Button("Generate", variant="primary", elem_id="txt2img_generate")
            interrupt = gr.Button("Interrupt", elem_id="txt2img_interrupt")
            skip = gr.Button("Skip", elem_id="txt2img_skip")
    with gr.Row():
        with gr.Column(scale=1):
            with gr.Row():
                sampler = gr.Dropdown([s.name for s in SAMPLERS], value="DPM++ 2M", label="Sampling method", elem_id="txt2img_sampling")
                scheduler = gr.Dropdown([s.label for s in SCHEDULERS], value="Automatic", label="Schedule type", elem_id="txt2img_scheduler")
            steps = gr.Slider(1, 150, value=20, step=1, precision=0, label="Sampling steps", elem_id="txt2img_steps")
            with gr.Row():
                with gr.Column():
                    width = gr.Slider(64, 2048, value=512, step=8, precision=0, label="Width", elem_id="txt2img_width")
                    height = gr.Slider(64, 2048, value=512, step=8, precision=0, label="Height", elem_id="txt2img_height")
                with gr.Column():
                    batch_count = gr.Slider(1, 100, value=1, step=1, precision=0, label="Batch count", elem_id="txt2img_batch_count")
                    batch_size = gr.Slider(1, 8, value=1, step=1, precision=0, label="Batch size", elem_id="txt2img_batch_size")
            cfg_scale = gr.Slider(1, 30, value=7, step=0.5, label="CFG Scale", elem_id="txt2img_cfg_scale")
            with gr.Row():
                seed = gr.Number(value=-1, precision=0, label="Seed", elem_id="txt2img_seed", scale=4)
                random_seed = gr.Button("🎲", elem_id="txt2img_random_seed", scale=0, min_width=48)
                reuse_seed = gr.Button("♻", elem_id="txt2img_reuse_seed", scale=0, min_width=48)
        with gr.Column(scale=1):
            gallery = gr.Gallery(label="Output", elem_id="txt2img_gallery", columns=2, format="png", height="auto")
            info = gr.HTML(elem_id="txt2img_html_info")
    generation = gr.State({"seeds": [], "infotexts": []})
    selected = gr.State(0)

    def run(prompt_text, negative_text, sampler_name, scheduler_name, step_count, w, h, count, size, cfg, seed_value,
            progress=gr.Progress()):
        request = Txt2ImgRequest(
            prompt=prompt_text, negative_prompt=negative_text, steps=step_count, sampler_name=sampler_name,
            scheduler=scheduler_name, cfg_scale=cfg, width=w, height=h, seed=int(seed_value),
            batch_size=size, n_iter=count,
        )

        def report(snapshot: ProgressSnapshot) -> None:
            progress(snapshot.progress, desc=f"Batch {snapshot.job_no + 1}/{snapshot.job_count}, step {snapshot.sampling_step}/{snapshot.sampling_steps}")

        try:
            outcome = service.txt2img(request, on_progress=report)
        except USER_ERRORS as error:
            raise gr.Error(str(error)) from None
        images = outcome.result.images
        shown = [(str(path) if path else image.image, None) for image, path in zip(images, outcome.saved)]
        state = {"seeds": [image.seed for image in images], "infotexts": [image.infotext for image in images]}
        first = infotext_html(state["infotexts"][0]) if images else ""
        return shown, first, state, 0

    inputs = [prompt, negative, sampler, scheduler, steps, width, height, batch_count, batch_size, cfg_scale, seed]
    generate.click(run, inputs, [gallery, info, generation, selected], concurrency_id="gpu")
    prompt.submit(run, inputs, [gallery, info, generation, selected], concurrency_id="gpu")
    interrupt.click(service.interrupt, queue=False)
    skip.click(service.skip, queue=False)
    random_seed.click(lambda: -1, None, seed, queue=False)

    def reuse(state: dict, index: int) -> int:
        seeds = state.get("seeds") or []
        return seeds[index] if 0 <= index < len(seeds) else -1

    reuse_seed.click(reuse, [generation, selected], seed, queue=False)

    def select(state: dict, event: gr.SelectData):
        texts = state.get("infotexts") or []
        index = event.index if isinstance(event.index, int) else 0
        return index, infotext_html(texts[index]) if index < len(texts) else ""

    gallery.select(select, [generation], [selected, info], queue=False)
    return Txt2ImgControls(prompt, negative, sampler, scheduler, steps, width, height, cfg_scale, seed)
