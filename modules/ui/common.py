"""Pieces both generation tabs (txt2img, img2img) are made of: the prompt row, the sampler, size,
batch and seed controls, the output gallery with its send-to buttons, pasting an infotext into a
tab's controls, and the handlers those share. Element ids follow A1111's ``<tab>_…`` scheme."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable, Iterator, TypeVar

import gradio as gr
from PIL import Image, ImageOps

from modules.core.generation.job import NansError
from modules.core.generation.request import InvalidRequest
from modules.core.sampling.samplers import SAMPLERS
from modules.core.sampling.schedulers import SCHEDULERS
from modules.service.generation import GenerationService, JobOutcome, OutOfMemory
from modules.service.models import ModelLoadError
from modules.service.paste import Pasted
from modules.service.progress import ProgressSnapshot
from modules.service.queue import Job, JobCancelled, QueueFull

T = TypeVar("T")
USER_ERRORS = (InvalidRequest, ModelLoadError, NansError, QueueFull, JobCancelled, OutOfMemory)
SEED_EXTRAS = ("subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h")

# The page's opts follow the server after anything that may load another checkpoint (a generation,
# the checkpoint box): #sd_checkpoint_hash and extensions' onOptionsChanged callbacks then see it.
REFRESH_OPTIONS_JS = "() => { hangaRefreshOptions(); }"


@dataclass
class FormControls:
    """Request-field components by field name, plus the paste targets other tabs fill in.

    ``choices`` names the fields whose component shows labels for a value the request holds as an
    index or a code (an index-typed radio, "Use same sampler" for ""): value → label to show."""

    fields: dict[str, gr.components.Component]
    seed_extras: gr.Checkbox
    overrides: gr.Dropdown
    shown_as: dict[str, Callable] = field(default_factory=dict)

    def paste_outputs(self) -> list:
        return [*self.fields.values(), self.seed_extras, self.overrides]

    def paste_updates(self, pasted: Pasted) -> list:
        updates = []
        for name in self.fields:
            if name not in pasted.fields:
                updates.append(gr.skip())
                continue
            value = pasted.fields[name]
            updates.append(gr.update(value=self.shown_as[name](value) if name in self.shown_as else value))
        varied = any(name in pasted.fields for name in SEED_EXTRAS)
        extras = gr.update(value=True) if varied else gr.skip()
        overrides = gr.update(choices=pasted.overrides, value=pasted.overrides, visible=bool(pasted.overrides))
        return [*updates, extras, overrides]

    def values(self, field_values) -> dict:
        """The request fields from the components' values, in ``fields`` order. A component the
        page never showed (a hidden row) may send nothing: its initial value stands in."""
        return {name: initial_value(component) if value is None else value
                for (name, component), value in zip(self.fields.items(), field_values)}


def initial_value(component: gr.components.Component):
    """What a component holds before anyone touches it, as its handler receives it."""
    value = component.value
    if getattr(component, "type", None) == "index" and isinstance(value, str):
        labels = [choice[0] if isinstance(choice, (tuple, list)) else choice for choice in component.choices]
        return labels.index(value) if value in labels else None
    return value


# ------------------------------------------------------------------------------------ outputs

def gallery_outputs(outcome: JobOutcome) -> tuple[list, str, dict, int]:
    """Gallery items (saved files where there are some), the shown infotext, the per-item seeds and
    infotexts (a grid first carries the first image's), and the selected index."""
    return combined_gallery_outputs([outcome])


def combined_gallery_outputs(outcomes: list[JobOutcome]) -> tuple[list, str, dict, int]:
    """``gallery_outputs`` of several jobs shown as one (img2img's batch from a directory)."""
    shown, seeds, infotexts = [], [], []
    for outcome in outcomes:
        processed = outcome.processed
        shown += [(str(path) if path else image, None) for image, path in zip(processed.images, processed.saved)]
        shown += [(image, None) for image in processed.images[len(processed.saved):]]
        seeds += processed.all_seeds[:1] * processed.index_of_first_image + processed.all_seeds
        infotexts += list(processed.infotexts)
    first = infotext_html(infotexts[0]) if infotexts else ""
    return shown, first, {"seeds": seeds, "infotexts": infotexts}, 0


def infotext_html(infotext: str) -> str:
    lines = [html.escape(line) for line in infotext.split("\n")]
    return f'<div class="infotext">{"<br>".join(lines)}</div>'


def picture_at(gallery_value: list | None, index: int) -> Image.Image | None:
    """The gallery's chosen picture (the first when the index is out of range), as A1111's
    send-to buttons take it; None for an empty gallery."""
    if not gallery_value:
        return None
    item = gallery_value[index if 0 <= index < len(gallery_value) else 0]
    media = item[0] if isinstance(item, (tuple, list)) else item
    return open_picture(media)


def open_picture(media) -> Image.Image | None:
    if media is None:
        return None
    if isinstance(media, Image.Image):
        return media
    with Image.open(media) as opened:
        picture = ImageOps.exif_transpose(opened)
        picture.load()
        return picture.copy() if picture is opened else picture


def infotext_at(state: dict | None, index: int) -> str:
    texts = (state or {}).get("infotexts") or []
    if not texts:
        return ""
    return texts[index if 0 <= index < len(texts) else 0]


def watch_progress(service, progress: gr.Progress, work: Callable[[], T], poll: float = 0.25) -> T:
    """Run ``work`` (which queues jobs and waits for them) while the progress bar follows the
    running job: ``gr.Progress`` only reports from the event's own thread."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hanga-ui") as pool:
        future = pool.submit(work)
        while True:
            try:
                return future.result(timeout=poll)
            except FutureTimeout:
                snapshot = service.state.snapshot()
                if snapshot.active:
                    progress(snapshot.progress, desc=progress_text(snapshot))


def follow_job(service, job: Job, progress: gr.Progress, poll: float = 0.25) -> Iterator[Image.Image]:
    """While ``job`` waits or runs: the progress bar says "In queue: 2/3" or the batch, step and
    ETA; each new live preview is yielded (for the gallery). Closing the generator (the page
    left) takes a job that is still waiting out of the queue."""
    shown = 0
    try:
        while not job.wait(poll):
            place, size = service.queue.position(job)
            if place:
                progress(0.0, desc=f"In queue: {place}/{size}")
                continue
            snapshot = service.state.snapshot()
            if snapshot.job_id != job.id:
                continue
            progress(snapshot.progress, desc=progress_text(snapshot))
            preview_id, preview = service.state.preview()
            if preview is not None and preview_id != shown:
                shown = preview_id
                yield preview
    except GeneratorExit:
        service.cancel(job.id)
        raise


def stream_job(service, jobs: "SessionJobs", session: gr.Request | None, job: Job,
               progress: gr.Progress) -> Iterator[tuple]:
    """A generating event's outputs for a queued job: live previews, then its gallery."""
    jobs.remember(session, job)
    try:
        for picture in follow_job(service, job, progress):
            yield preview_outputs(picture)
        outcome = job.result()
    except USER_ERRORS as error:
        raise gr.Error(str(error)) from None
    finally:
        jobs.forget(session)
    yield gallery_outputs(outcome)


def progress_text(snapshot: ProgressSnapshot) -> str:
    text = f"Batch {snapshot.job_no + 1}/{max(snapshot.job_count, 1)}, step {snapshot.sampling_step}/{snapshot.sampling_steps}"
    eta = snapshot.eta_seconds
    return f"{text}, ETA {eta:.0f} s" if eta is not None and snapshot.sampling_step else text


def preview_outputs(picture: Image.Image) -> tuple:
    """The gallery showing the live preview; the other outputs unchanged."""
    return [(picture, "Preview")], gr.skip(), gr.skip(), gr.skip()


def style_controls(service: GenerationService, tab: str) -> gr.Dropdown:
    """The Styles picker (applied to the prompts when generating) and an editor that saves to
    ``styles.csv`` (the old file kept as ``styles.csv.bak``)."""
    names = service.styles.names()
    with gr.Row(elem_id=f"{tab}_styles_row"):
        chosen = gr.Dropdown(names, value=[], multiselect=True, label="Styles", elem_id=f"{tab}_styles", scale=4)
        refresh = gr.Button("🔄", elem_id=f"{tab}_styles_refresh", elem_classes=["refresh"], scale=0)
    with gr.Accordion("Edit styles", open=False, elem_id=f"{tab}_styles_edit"):
        name = gr.Dropdown(names, value=None, allow_custom_value=True, label="Style", elem_id=f"{tab}_edit_style_name")
        prompt = gr.Textbox(label="Prompt ({prompt} marks where the prompt goes)", lines=2,
                            elem_id=f"{tab}_edit_style_prompt")
        negative = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{tab}_edit_style_neg_prompt")
        with gr.Row():
            save = gr.Button("Save", elem_id=f"{tab}_edit_style_save")
            delete = gr.Button("Delete", elem_id=f"{tab}_edit_style_delete")

    def choices(selected=None):
        current = service.styles.names()
        return (gr.Dropdown(choices=current, value=[n for n in (selected or []) if n in current]),
                gr.Dropdown(choices=current))

    def show(style_name: str | None):
        style = service.styles.all().get(style_name or "")
        return (style.prompt, style.negative_prompt) if style else (gr.skip(), gr.skip())

    def store(style_name: str | None, style_prompt: str, style_negative: str, selected: list):
        try:
            service.styles.save(style_name or "", style_prompt, style_negative)
        except InvalidRequest as error:
            raise gr.Error(str(error)) from None
        return choices(selected)

    def remove(style_name: str | None, selected: list):
        service.styles.delete(style_name or "")
        return (*choices(selected), "", "")

    refresh.click(lambda selected: choices(selected), chosen, [chosen, name], queue=False)
    name.change(show, name, [prompt, negative], queue=False, show_progress="hidden")
    save.click(store, [name, prompt, negative, chosen], [chosen, name], queue=False)
    delete.click(remove, [name, chosen], [chosen, name, prompt, negative], queue=False)
    return chosen


def without_seed_extras(chosen: dict, extras_on: bool) -> dict:
    """A1111: without "Extra", variation seed and seed resize are not used."""
    if not extras_on:
        chosen.update(subseed=-1, subseed_strength=0.0, seed_resize_from_w=0, seed_resize_from_h=0)
    return chosen


# ---------------------------------------------------------------------------------- controls

def slider(low, high, value, step, label, elem_id, **extra) -> gr.Slider:
    precision = 0 if float(step).is_integer() else None
    return gr.Slider(low, high, value=value, step=step, precision=precision, label=label, elem_id=elem_id, **extra)


@dataclass
class PromptRow:
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button
    paste: gr.Button
    counter: gr.HTML
    negative_counter: gr.HTML
    interrogate_clip: gr.Button | None = None
    interrogate_deepbooru: gr.Button | None = None


def prompt_row(fields: dict, tab: str, interrogate: bool = False) -> PromptRow:
    """Prompt and negative prompt with token counters, Generate / Interrupt / Skip and ↙ paste.
    ``interrogate`` adds img2img's Interrogate CLIP / DeepBooru buttons."""
    with gr.Row(elem_id=f"{tab}_toprow"):
        with gr.Column(scale=6):
            fields["prompt"] = gr.Textbox("", label="Prompt", lines=3, elem_id=f"{tab}_prompt", placeholder="Prompt")
            counter = gr.HTML("0/75", elem_id=f"{tab}_token_counter", elem_classes=["token-counter"])
            fields["negative_prompt"] = gr.Textbox("", label="Negative prompt", lines=2, elem_id=f"{tab}_neg_prompt",
                                                   placeholder="Negative prompt")
            negative_counter = gr.HTML("0/75", elem_id=f"{tab}_negative_token_counter", elem_classes=["token-counter"])
        with gr.Column(scale=1, min_width=160):
            clip = deepbooru = None
            if interrogate:
                with gr.Row():
                    clip = gr.Button("📎 Interrogate CLIP", elem_id="interrogate", size="sm")
                    deepbooru = gr.Button("📦 Interrogate DeepBooru", elem_id="deepbooru", size="sm")
            generate = gr.Button("Generate", variant="primary", elem_id=f"{tab}_generate")
            with gr.Row():
                interrupt = gr.Button("Interrupt", elem_id=f"{tab}_interrupt")
                skip = gr.Button("Skip", elem_id=f"{tab}_skip")
            paste = gr.Button("↙", elem_id=f"{tab}_paste", elem_classes=["tool"])
            gr.Markdown("↙ reads generation parameters from the prompt box (or the last image's, if it is empty)")
    return PromptRow(generate, interrupt, skip, paste, counter, negative_counter, clip, deepbooru)


def sampler_controls(fields: dict, tab: str) -> None:
    with gr.Row():
        fields["sampler_name"] = gr.Dropdown([s.name for s in SAMPLERS], value="DPM++ 2M", label="Sampling method",
                                             elem_id=f"{tab}_sampling")
        fields["scheduler"] = gr.Dropdown([s.label for s in SCHEDULERS], value="Automatic", label="Schedule type",
                                          elem_id=f"{tab}_scheduler")
    fields["steps"] = slider(1, 150, 20, 1, "Sampling steps", f"{tab}_steps")


NO_REFINER = "None"


def refiner_controls(fields: dict, tab: str, checkpoint_titles: list[str]) -> None:
    """A1111's "Refiner" accordion: sampling goes on with another checkpoint from "Switch at"."""
    with gr.Accordion("Refiner", open=False, elem_id=f"{tab}_refiner"):
        with gr.Row():
            fields["refiner_checkpoint"] = gr.Dropdown([NO_REFINER, *checkpoint_titles], value=NO_REFINER, label="Checkpoint",
                                                       elem_id=f"{tab}_checkpoint", allow_custom_value=True)
            fields["refiner_switch_at"] = slider(0.01, 1, 0.8, 0.01, "Switch at", f"{tab}_switch_at")


def size_controls(fields: dict, tab: str) -> None:
    """Width and height, with A1111's ⇅ button beside them that swaps the two (in the page)."""
    with gr.Row(equal_height=True):
        with gr.Column(scale=4, min_width=160):
            fields["width"] = slider(64, 2048, 512, 8, "Width", f"{tab}_width")
            fields["height"] = slider(64, 2048, 512, 8, "Height", f"{tab}_height")
        swap = gr.Button("⇅", elem_id=f"{tab}_res_switch_btn", elem_classes=["tool"], scale=0, min_width=40)
    swap.click(fn=None, js="(width, height) => [height, width]", inputs=[fields["width"], fields["height"]],
               outputs=[fields["width"], fields["height"]], queue=False)


def batch_controls(fields: dict, tab: str) -> None:
    fields["n_iter"] = slider(1, 100, 1, 1, "Batch count", f"{tab}_batch_count")
    fields["batch_size"] = slider(1, 8, 1, 1, "Batch size", f"{tab}_batch_size")


@dataclass
class SeedRow:
    random_seed: gr.Button
    reuse_seed: gr.Button
    seed_extras: gr.Checkbox


def seed_controls(fields: dict, tab: str) -> SeedRow:
    with gr.Row():
        fields["seed"] = gr.Number(value=-1, precision=0, label="Seed", elem_id=f"{tab}_seed", scale=4)
        random_seed = gr.Button("🎲", elem_id=f"{tab}_random_seed", scale=0, min_width=48)
        reuse_seed = gr.Button("♻", elem_id=f"{tab}_reuse_seed", scale=0, min_width=48)
        seed_extras = gr.Checkbox(label="Extra", elem_id=f"{tab}_subseed_show", scale=0, min_width=80)
    with gr.Group(visible=False, elem_id=f"{tab}_seed_extras") as extras_group:
        with gr.Row():
            fields["subseed"] = gr.Number(value=-1, precision=0, label="Variation seed", elem_id=f"{tab}_subseed")
            fields["subseed_strength"] = slider(0, 1, 0, 0.01, "Variation strength", f"{tab}_subseed_strength")
        with gr.Row():
            fields["seed_resize_from_w"] = slider(0, 2048, 0, 8, "Resize seed from width", f"{tab}_seed_resize_from_w")
            fields["seed_resize_from_h"] = slider(0, 2048, 0, 8, "Resize seed from height", f"{tab}_seed_resize_from_h")
    seed_extras.change(lambda on: gr.Group(visible=on), seed_extras, extras_group, queue=False)
    return SeedRow(random_seed, reuse_seed, seed_extras)


def override_dropdown(tab: str) -> gr.Dropdown:
    return gr.Dropdown([], value=[], multiselect=True, label="Override settings", visible=False,
                       elem_id=f"{tab}_override_settings")


@dataclass
class OutputPanel:
    """The gallery with what it shows: per-item seeds and infotexts, and the chosen index."""

    gallery: gr.Gallery
    info: gr.HTML
    generation: gr.State
    selected: gr.State
    send_to_img2img: gr.Button
    send_to_inpaint: gr.Button
    upscale: gr.Button | None = None
    send_to_extras: gr.Button | None = None

    def outputs(self) -> list:
        return [self.gallery, self.info, self.generation, self.selected]


def output_panel(tab: str, info_id: str, upscale: bool = False) -> OutputPanel:
    gallery = gr.Gallery(label="Output", elem_id=f"{tab}_gallery", columns=2, format="png", height="auto",
                         interactive=False)
    with gr.Row(elem_id=f"image_buttons_{tab}"):
        to_img2img = gr.Button("🖼", elem_id=f"{tab}_send_to_img2img", min_width=48, scale=0)
        to_inpaint = gr.Button("🎨", elem_id=f"{tab}_send_to_inpaint", min_width=48, scale=0)
        to_extras = gr.Button("📐", elem_id=f"{tab}_send_to_extras", min_width=48, scale=0)
        sparkle = gr.Button("✨", elem_id=f"{tab}_upscale", min_width=48, scale=0) if upscale else None
    info = gr.HTML(elem_id=info_id)
    return OutputPanel(gallery, info, gr.State({"seeds": [], "infotexts": []}), gr.State(0), to_img2img, to_inpaint,
                       sparkle, to_extras)


class SessionJobs:
    """The job each browser session has queued on a tab: its Interrupt takes that job out of the
    queue while it waits, and stops it while it runs. Without one, Interrupt and Skip act on the
    running job, as in A1111."""

    def __init__(self, service: GenerationService):
        self.service = service
        self._jobs: dict[str, Job] = {}

    def remember(self, request: gr.Request | None, job: Job) -> None:
        if request is not None and request.session_hash:
            self._jobs[request.session_hash] = job

    def forget(self, request: gr.Request | None) -> None:
        if request is not None:
            self._jobs.pop(request.session_hash, None)

    def stop(self, request: gr.Request | None, skip: bool = False) -> None:
        job = self._jobs.get(request.session_hash) if request is not None else None
        if job is not None and not job.finished and self.service.cancel(job.id):
            return
        running = self.service.queue.running
        if job is not None and not job.finished and running is not None and running.id != job.id:
            return  # this session's job has not started: nothing of it to stop
        (self.service.skip if skip else self.service.interrupt)()


def wire_common(service: GenerationService, controls: FormControls, row: PromptRow, seeds: SeedRow,
                panel: OutputPanel, jobs: SessionJobs | None = None) -> None:
    """The handlers both tabs have: interrupt, skip, 🎲, ♻, choosing a gallery item, ↙ and the
    token counters."""
    fields = controls.fields
    jobs = jobs or SessionJobs(service)

    def interrupt(request: gr.Request) -> None:
        jobs.stop(request)

    def skip(request: gr.Request) -> None:
        jobs.stop(request, skip=True)

    row.interrupt.click(interrupt, queue=False)
    row.skip.click(skip, queue=False)
    seeds.random_seed.click(lambda: -1, None, fields["seed"], queue=False)

    def reuse(state: dict, index: int) -> int:
        known = state.get("seeds") or []
        return known[index] if 0 <= index < len(known) else -1

    seeds.reuse_seed.click(reuse, [panel.generation, panel.selected], fields["seed"], queue=False)

    def select(state: dict, event: gr.SelectData):
        texts = state.get("infotexts") or []
        index = event.index if isinstance(event.index, int) else 0
        return index, infotext_html(texts[index]) if index < len(texts) else ""

    panel.gallery.select(select, [panel.generation], [panel.selected, panel.info], queue=False)
    row.paste.click(lambda text: controls.paste_updates(service.paste(text or service.last_infotext())),
                    fields["prompt"], controls.paste_outputs(), queue=False)

    def count(text: str, steps: int, positive: bool) -> str:
        used, available = service.token_count(text or "", int(steps or 1), positive)
        return f"{used}/{available}"

    for box, counter_html, positive in ((fields["prompt"], row.counter, True),
                                        (fields["negative_prompt"], row.negative_counter, False)):
        box.change(lambda text, steps, p=positive: count(text, steps, p), [box, fields["steps"]], counter_html,
                   queue=False, show_progress="hidden", trigger_mode="always_last")
