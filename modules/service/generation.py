"""The generation service: the functions both the UI and the HTTP API call.

Every job goes through one queue (``service.queue``): its single worker owns the GPU. The
blocking functions (``txt2img``…) submit and wait; the ``submit_*`` ones return the queued job.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import torch

from modules.core.atomic import write_text
from modules.core.checkpoints import CheckpointInfo
from modules.core.conditioning.clip_text import TextOptions
from modules.core.conditioning.token_count import prompt_token_count
from modules.core.generation.img2img import run_img2img
from modules.core.generation.request import (
    Img2ImgRequest, InvalidRequest, RequestLimits, Txt2ImgRequest, hires_size,
)
from modules.core.infotext import parse_infotext
from modules.core.grid import image_grid
from modules.core.generation.job import BatchHooks, PromptLists, decode_latents, expand_prompts
from modules.core.generation.job import GeneratedImage, GenerationOptions, GenerationResult
from modules.core.generation.txt2img import ModelSwitch, run_txt2img
from modules.core.models.attention import apply_attention
from modules.core.models.fast_path import enable_fast_path
from modules.core.generation.file_names import name_fields
from modules.core.images import OutputFormat, apply_pattern, sanitize_filename_part, save_grid, save_image
from modules.core.paths import Paths
from modules.core.png_meta import read_infotext
from modules.core.preview import cheap_approximation
from modules.core.sampling.denoiser import DenoiserHooks
from modules.core.sampling.run import SamplerOptions
from modules.core.tokenizer import load_clip_tokenizer, tokenizer_file
from modules.core.version import infotext_version
from modules.service.models import LoadedModel, ModelService, Residency
from modules.service.networks import EmbeddingLibrary, HypernetworkLibrary, LoraLibrary
from modules.service.paste import Pasted, overrides_from_entries, paste
from modules.service.processing import Processed, Processing, script_layout
from modules.service.extensions.callbacks import Callbacks, ImageSaveParams, PostprocessBatchListArgs, PostprocessImageArgs
from modules.service.progress import JobState, PreviewPlan, ProgressSnapshot
from modules.service.queue import Job, JobQueue
from modules.service.scripts.api import ScriptRegistry
from modules.service.settings import Settings, SettingsView
from modules.service.extras import ExtrasRequest, postprocess
from modules.service.interrogate import Interrogator
from modules.service.styles import StyleLibrary
from modules.service.upscalers import UpscalerLibrary

log = logging.getLogger("hanga")
T = TypeVar("T")


@dataclass(frozen=True)
class ServiceFlags:
    """The command-line flags the service acts on."""

    nan_check: bool = True  # --disable-nan-check turns it off
    prompt_history: bool = True  # --no-prompt-history turns it off
    console_progress: bool = True  # --disable-console-progressbars turns it off
    attention: str | None = None  # --xformers / --opt-*: wins over the cross_attention_optimization setting
    compile: bool = False  # --compile: the fast path whatever the compile_unet setting says


@dataclass
class JobOutcome:
    """A finished job. ``result`` is the (first) generation's core result; ``processed`` holds what
    the user sees: the grid first when there is one, then the images, with their infotexts and the
    files they were saved to."""

    result: GenerationResult
    model: LoadedModel
    processed: Processed
    job_timestamp: str = ""  # A1111's YYYYmmddHHMMSS of the job's start

    @property
    def saved(self) -> list[Path | None]:
        return self.processed.saved



class GenerationService:
    def __init__(self, paths: Paths, settings: Settings, models: ModelService, flags: ServiceFlags = ServiceFlags(),
                 scripts: ScriptRegistry | None = None, hypernetworks: HypernetworkLibrary | None = None,
                 callbacks: Callbacks | None = None, upscalers: UpscalerLibrary | None = None):
        self.paths = paths
        self.hypernetworks = hypernetworks or HypernetworkLibrary(
            paths.hypernetworks, models.memory, models.hashes, models.hashing, models.allow_unsafe)
        self.embeddings = EmbeddingLibrary(paths.embeddings, models.hashes, models.hashing, models.allow_unsafe)
        self.loras = LoraLibrary(paths.lora_dirs, models.hashes, models.hashing, models.allow_unsafe)
        self.scripts = scripts if scripts is not None else ScriptRegistry()
        self.settings = settings
        self.models = models
        self.flags = flags
        self.state = JobState(console_bar=flags.console_progress)
        self.queue = JobQueue(lambda: self.settings.get("queue_limit"))
        self.callbacks = callbacks or Callbacks()  # extensions' script_callbacks
        self.styles = StyleLibrary(paths.styles_file)
        self.upscalers = upscalers or UpscalerLibrary(paths, models.memory, settings.get, models.allow_unsafe)
        self.interrogator = Interrogator(paths, models.memory, settings.get, models.allow_unsafe)
        self._announced_model: int | None = None

    # -- models ---------------------------------------------------------------------------------
    def select_checkpoint(self, title: str) -> LoadedModel:
        """Load a checkpoint and make it the ``sd_model_checkpoint`` setting."""
        loaded = self.run_exclusive("checkpoint", lambda: self.models.ensure_loaded(title, self._residency(self.settings)))
        self.settings.set("sd_model_checkpoint", loaded.info.title)
        self._announce(loaded)
        return loaded

    def _announce(self, loaded: LoadedModel) -> None:
        """A model that became the current one: A1111's ``sd_checkpoint_hash`` setting (its full
        sha256, empty with --no-hashing) follows it, then extensions' ``on_model_loaded`` hear it."""
        if self._announced_model == id(loaded.model):
            return
        self._announced_model = id(loaded.model)
        sha = loaded.info.sha256 or ""
        if self.settings.get("sd_checkpoint_hash") != sha:
            self.settings.set("sd_checkpoint_hash", sha)
        self.callbacks.call("model_loaded", loaded.model)

    def before_restart(self) -> None:
        """Hanga is about to start again (Reload UI, extensions applied): extensions'
        ``on_before_reload`` then ``on_script_unloaded`` callbacks undo what they set up."""
        self.callbacks.call("before_reload")
        self.callbacks.call("script_unloaded")

    def current_checkpoint_title(self) -> str:
        loaded = self.models.loaded
        return loaded.info.title if loaded else self.settings.get("sd_model_checkpoint")

    # -- jobs -----------------------------------------------------------------------------------
    def txt2img(self, request: Txt2ImgRequest, save_images: bool | None = None, override_settings: dict | None = None,
                restore_afterwards: bool = True, on_progress: Callable[[ProgressSnapshot], None] | None = None,
                script: tuple[str, Sequence] | None = None, job_id: str | None = None,
                alwayson: dict[str, Sequence] | None = None) -> JobOutcome:
        """Run a txt2img job; ``override_settings`` apply to this job only unless
        ``restore_afterwards`` is false (then they are saved, as in A1111). ``script`` is a
        (title, args) pair naming one of the Script dropdown's scripts and its control values."""
        return self.submit_txt2img(request, save_images, override_settings, restore_afterwards, on_progress, script,
                                   job_id, alwayson).result()

    def img2img(self, request: Img2ImgRequest, save_images: bool | None = None, override_settings: dict | None = None,
                restore_afterwards: bool = True, on_progress: Callable[[ProgressSnapshot], None] | None = None,
                script: tuple[str, Sequence] | None = None, job_id: str | None = None,
                alwayson: dict[str, Sequence] | None = None) -> JobOutcome:
        """img2img, sketch and inpainting; the same contract as ``txt2img``."""
        return self.submit_img2img(request, save_images, override_settings, restore_afterwards, on_progress, script,
                                   job_id, alwayson).result()

    def submit_txt2img(self, request: Txt2ImgRequest, save_images: bool | None = None,
                       override_settings: dict | None = None, restore_afterwards: bool = True,
                       on_progress: Callable[[ProgressSnapshot], None] | None = None,
                       script: tuple[str, Sequence] | None = None, job_id: str | None = None,
                       alwayson: dict[str, Sequence] | None = None) -> Job:
        """Queue a txt2img job and return at once; the request is checked before it is queued."""
        return self._job(request, False, save_images, override_settings, restore_afterwards, on_progress, script,
                         job_id=job_id, alwayson=alwayson)

    def submit_img2img(self, request: Img2ImgRequest, save_images: bool | None = None,
                       override_settings: dict | None = None, restore_afterwards: bool = True,
                       on_progress: Callable[[ProgressSnapshot], None] | None = None,
                       script: tuple[str, Sequence] | None = None, job_id: str | None = None,
                       alwayson: dict[str, Sequence] | None = None) -> Job:
        return self._job(request, True, save_images, override_settings, restore_afterwards, on_progress, script,
                         job_id=job_id, alwayson=alwayson)

    def upscale_image(self, request: Txt2ImgRequest, image, infotext: str = "", save_images: bool | None = None,
                      on_progress: Callable[[ProgressSnapshot], None] | None = None) -> JobOutcome:
        """✨: run only the hires pass of ``request`` on a finished ``image``, with the seed (and
        variation seed) its ``infotext`` names, as one image."""
        return self.submit_upscale(request, image, infotext, save_images, on_progress).result()

    def submit_upscale(self, request: Txt2ImgRequest, image, infotext: str = "", save_images: bool | None = None,
                       on_progress: Callable[[ProgressSnapshot], None] | None = None) -> Job:
        params = parse_infotext(infotext) if infotext else {}
        try:
            seed = int(params.get("Seed", request.seed))
            subseed = int(params.get("Variation seed", -1))
        except (TypeError, ValueError):
            raise InvalidRequest("infotext", "has an unreadable Seed or Variation seed") from None
        request = replace(request, enable_hr=True, batch_size=1, n_iter=1, seed=seed, subseed=subseed)
        return self._job(request, False, save_images, None, True, on_progress, None, first_pass_image=image)

    def interrogate(self, image, model: str = "clip") -> str:
        """The prompt DeepBooru ("deepdanbooru") or CLIP ("clip") reads off ``image`` (a queue turn)."""
        return self.run_exclusive("interrogate", lambda: self.interrogator.interrogate(image, model))

    def extras(self, images: Sequence, request: ExtrasRequest, save: bool = True, directory: Path | None = None,
               names: Sequence[str] = ()) -> list[tuple]:
        """The Extras tab: each picture upscaled; with ``save`` written to ``directory`` (default: the
        extras folder) keeping its ``parameters`` and adding the ``extras`` text, named after
        ``names`` when given. Returns (picture, extras text, saved path) per picture."""
        request = request.validate(self.upscalers.names())

        def work() -> list[tuple]:
            made = []
            folder = directory or self.output_dir(tab="extras")
            output = OutputFormat.from_settings(self.settings.get, "samples_format")
            for index, image in enumerate(images):
                source_text, _ = read_infotext(image)
                picture, text = postprocess(image, request, self.upscalers.upscale)
                path = None
                if save:
                    stem = sanitize_filename_part(names[index]) if index < len(names) else ""
                    path = save_image(picture, folder, stem, source_text, output,
                                      extra={"extras": text} if text else None)
                made.append((picture, text, path))
            return made
        return self.run_exclusive("extras", work)

    def run_exclusive(self, kind: str, work: Callable[[], T]) -> T:
        """Other work that needs the GPU (loading a checkpoint, an upscale) takes its turn in the queue."""
        return self.queue.run(kind, lambda job: work())

    def cancel(self, job_id: str) -> bool:
        """Take a waiting job out of the queue (False when it is running or unknown)."""
        return self.queue.cancel(job_id)

    def _job(self, request, is_img2img: bool, save_images, override_settings, restore_afterwards, on_progress, script,
             first_pass_image=None, job_id: str | None = None, alwayson: dict[str, Sequence] | None = None) -> Job:
        request = request.validate(self.upscalers.names())
        self.limits().check(request)
        chosen = self.scripts.select(script[0], is_img2img) if script and script[0] not in ("", "None") else None
        always = self._always_on(is_img2img, alwayson)
        tab = "img2img" if is_img2img else "txt2img"
        self.settings.with_overrides(override_settings)  # bad overrides are refused before queueing
        self._check_checkpoints(request, override_settings)

        def work(job: Job) -> JobOutcome:
            return self._run_job(job, request, is_img2img, chosen, tab, save_images, override_settings,
                                 restore_afterwards, on_progress, script, first_pass_image, always)

        return self.queue.submit(tab, work, request, job_id)

    def limits(self) -> RequestLimits:
        """What one job may ask for: the ``limit_*`` settings (a job cannot override them)."""
        get = self.settings.get
        return RequestLimits(max_side=get("limit_max_side"), max_steps=get("limit_max_steps"),
                             max_batch_size=get("limit_max_batch_size"), max_batch_count=get("limit_max_batch_count"),
                             max_prompt_length=get("limit_max_prompt_length"))

    def _check_checkpoints(self, request, override_settings: dict | None) -> None:
        """Checkpoints the job names exist (a mistake is the caller's, answered before queueing)."""
        named = [("override_settings.sd_model_checkpoint", (override_settings or {}).get("sd_model_checkpoint"))]
        if getattr(request, "enable_hr", False):
            named.append(("hr_checkpoint_name", request.hr_checkpoint_name))
        named.append(("refiner_checkpoint", request.refiner_checkpoint))
        for field, name in named:
            if name and name not in ("Use same checkpoint", "None") and self.models.find(str(name)) is None:
                raise InvalidRequest(field, f"checkpoint {name!r} not found; available: "
                                            f"{', '.join(self.models.titles()) or 'none'}")
        self.check_vae_name((override_settings or {}).get("sd_vae"), "override_settings.sd_vae")

    def check_vae_name(self, name, field: str) -> None:
        """A VAE named by a request is one of the files in models/VAE (or Automatic / None)."""
        if name is None or name in ("Automatic", "None"):
            return
        known = self.models.vaes()
        if name not in known:
            raise InvalidRequest(field, f"VAE {name!r} not found; available: {', '.join(['Automatic', 'None', *known])}")

    def _always_on(self, is_img2img: bool, given: dict[str, Sequence] | None) -> list[tuple[object, list]]:
        """The tab's always-on scripts with their arguments: those ``given`` by title (any case),
        else the script's defaults. A title no always-on script has is the caller's mistake."""
        scripts = self.scripts.always_on(is_img2img)
        by_title = {script.title().lower(): script for script in scripts}
        given = {title.strip().lower(): args for title, args in (given or {}).items()}
        unknown = sorted(set(given) - set(by_title))
        if unknown:
            raise InvalidRequest("alwayson_scripts", f"always-on script(s) {', '.join(map(repr, unknown))} not found; "
                                                     f"available: {', '.join(sorted(by_title)) or 'none'}")
        chosen = []
        for title, script in by_title.items():
            if title in given:
                args = list(given[title])
            else:
                defaults = getattr(script, "default_args", None)
                args = list(defaults(is_img2img)) if callable(defaults) else []
            chosen.append((script, args))
        return chosen

    def _hooks(self, always: list[tuple[object, list]], hook: str, *leading, **named) -> None:
        """One always-on hook of every script; a script that raises is reported and skipped."""
        for script, args in always:
            method = getattr(script, hook, None)
            if method is None:
                continue
            try:
                method(*leading, *args, **named)
            except InvalidRequest:
                raise
            except Exception:  # noqa: BLE001 - one extension's bug must not fail the job
                log.exception("Script %r failed in %s", script.title(), hook)

    def _run_job(self, job: Job, request, is_img2img: bool, chosen, tab: str, save_images, override_settings,
                 restore_afterwards, on_progress, script, first_pass_image, always=()) -> JobOutcome:
        runs: list[tuple[GenerationResult, LoadedModel, SettingsView]] = []

        def runner(p: Processing) -> Processed:
            return self._process(p, tab, save_images, runs, always)

        p = Processing(request, is_img2img=is_img2img, runner=runner, override_settings=override_settings)
        p.firstpass_image = first_pass_image  # A1111's name
        if save_images is False:  # A1111's API: neither the images nor a grid are saved
            p.do_not_save_samples = p.do_not_save_grid = True
        base = self.settings.with_overrides(override_settings)
        p.n_rows = base.get("n_rows")
        p.save_grid = lambda image, infotext, basename="grid": self._save_grid(image, infotext, basename, tab, base)

        def save_sample(image, infotext: str, seed: int, prompt: str) -> Path | None:
            if not _saves_samples(base, save_images):
                return None
            sample = GeneratedImage(image=image, infotext=infotext, index=0, seed=seed, subseed=-1, prompt=prompt,
                                    negative_prompt="")
            return self._save(sample, p.request, base, tab)

        p.save_sample = save_sample
        selectable = self.scripts.selectable(is_img2img)
        chosen_index = selectable.index(chosen) + 1 if chosen in selectable else 0
        p.scripts, p.script_args = script_layout(is_img2img, list(always), chosen, list(script[1]) if chosen else (),
                                                 chosen_index)
        started = _dt.datetime.now().strftime("%Y%m%d%H%M%S")
        clock = time.perf_counter()
        self.state.begin(tab, on_progress, job_id=job.id, preview=self._preview_plan(base))
        out_of_memory = None
        try:
            self._hooks(always, "setup", p)
            processed = self._run_script(chosen, p, script[1]) if chosen is not None else None
            if processed is None:
                processed = runner(p)
            self._hooks(always, "postprocess", p, processed)
            steps_done = self.state.snapshot().steps_done
        except torch.OutOfMemoryError as error:
            out_of_memory = str(error).strip().splitlines()[0] if str(error).strip() else "out of memory"
        finally:
            self.state.end()
        if out_of_memory is not None:
            # Outside the except block: the error's traceback (frames holding activations) is gone,
            # so collecting here gives the memory back before the next job.
            del p, runs
            self.models.memory.collect()
            raise OutOfMemory(out_of_memory_advice(request, out_of_memory, self.models.memory.tiers))
        if not runs:
            raise RuntimeError(f"the script {chosen.title()!r} generated nothing")
        # A script may switch checkpoints per cell (its own overrides); only the job's checkpoint is remembered.
        wanted = base.get("sd_model_checkpoint")
        own = [loaded for _, loaded, settings in runs if settings.get("sd_model_checkpoint") == wanted]
        loaded = (own or [runs[0][1]])[-1]
        if own:
            self._remember(loaded, base, restore_afterwards)
        first = runs[0][0]
        if first.images and self.flags.prompt_history:
            write_text(self.paths.params_file, first.images[0].infotext)
        seconds = time.perf_counter() - clock
        log.info("Job #%d %s %s: %dx%d, %d steps, %s, %d image(s) in %.1f s (%.2f it/s)%s", job.number, job.id, tab,
                 request.width, request.height, request.steps, first.sampler_name, len(processed.images), seconds,
                 steps_done / seconds if seconds > 0 else 0.0, ", interrupted" if processed.interrupted else "")
        return JobOutcome(first, loaded, processed, started)

    def _preview_plan(self, settings: SettingsView) -> PreviewPlan | None:
        """Live previews per the settings: the cheap latent→RGB map, or the full VAE."""
        every = settings.get("show_progress_every_n_steps")
        if not settings.get("live_previews_enable") or every <= 0:
            return None
        full = settings.get("show_progress_type") == "Full"

        def render(denoised):
            loaded = self.models.loaded
            if full and loaded is not None:
                return decode_latents(loaded.model, denoised[:1])[0]
            return cheap_approximation(denoised, sdxl=loaded is not None and loaded.model.sdxl is not None)

        return PreviewPlan(every, render)

    @staticmethod
    def _residency(settings: Settings | SettingsView) -> Residency:
        return Residency(limit=settings.get("sd_checkpoints_limit"), keep_in_cpu=settings.get("sd_checkpoints_keep_in_cpu"),
                         cache=settings.get("sd_checkpoint_cache"))

    def _ready(self, checkpoint: str | None, settings: SettingsView) -> LoadedModel:
        """The checkpoint loaded, with the VAE the settings resolve to for it in place."""
        loaded = self.models.ensure_loaded(checkpoint, self._residency(settings))
        self._announce(loaded)
        choice = self.flags.attention or settings.get("cross_attention_optimization")
        if loaded.attention != choice:
            backend = apply_attention(loaded.model.unet, choice, loaded.model.device)
            loaded.attention = choice
            log.info("Cross attention: %s (%s)", backend, choice)
        if self.flags.compile or settings.get("compile_unet"):
            unet = loaded.model.unet
            if self.models.memory.tier_of.get(id(unet), "default") == "default":
                enable_fast_path(unet, loaded.model.device)
        return self.models.ensure_vae(loaded, settings.get("sd_vae"), settings.get("sd_vae_overrides_per_model_preferences"),
                                      settings.get("sd_vae_as_default"))

    def _checkpoint(self, field: str, name: str) -> CheckpointInfo:
        info = self.models.find(name)
        if info is None:
            raise InvalidRequest(field, f"checkpoint {name!r} not found; available: {', '.join(self.models.titles())}")
        return self.models.hashed(info)

    def _model_switch(self, request: Txt2ImgRequest, loaded: LoadedModel, settings: SettingsView) -> ModelSwitch | None:
        """Checkpoints other than the first pass's (a hires checkpoint, the refiner): they are
        loaded in turn, one at a time."""
        hires = refiner = None
        if request.enable_hr and request.hr_checkpoint_name not in ("", "Use same checkpoint"):
            hires = self._checkpoint("hr_checkpoint_name", request.hr_checkpoint_name)
        if request.refiner_checkpoint not in ("", "None"):
            refiner = self._checkpoint("refiner_checkpoint", request.refiner_checkpoint)
        hires = None if hires is None or hires.path == loaded.info.path else hires
        refiner = None if refiner is None or refiner.path == loaded.info.path else refiner
        if hires is None and refiner is None:
            return None
        first_title = loaded.info.title

        def short(info: CheckpointInfo) -> str:
            return f"{info.stem} [{info.shorthash}]" if info.shorthash else info.stem

        def load(info: CheckpointInfo | None):
            return None if info is None else (lambda: self._ready(info.title, settings).model)

        return ModelSwitch(first=lambda: self._ready(first_title, settings).model,
                           hires=load(hires), hires_title=short(hires) if hires else None,
                           refiner=load(refiner), refiner_title=short(refiner) if refiner else None)

    def new_processing(self, is_img2img: bool, values: dict) -> Processing:
        """A ``p`` an extension builds itself (A1111's ``StableDiffusionProcessingImg2Img(...)`` with
        its keyword names), for ``process_images(p)``, also from inside another job's hooks (as
        ADetailer does). Request fields come from ``values`` (None keeps the default); the rest
        become ``p``'s attributes (``do_not_save_samples``, ``override_settings``, …). The scripts
        it names in ``p.scripts`` / ``p.script_args`` run their hooks; by default none does."""
        kind = Img2ImgRequest if is_img2img else Txt2ImgRequest
        names = {f.name for f in fields(kind)}
        given = {key: value for key, value in values.items() if key in names and value is not None}
        if isinstance(given.get("init_images"), list):
            given["init_images"] = tuple(given["init_images"])
        try:
            request = kind(**given)
        except TypeError as error:
            raise InvalidRequest("processing", str(error)) from error
        tab = "img2img" if is_img2img else "txt2img"

        def runner(p: Processing) -> Processed:
            scripts = getattr(getattr(p, "scripts", None), "alwayson_scripts", None) or []
            script_args = list(getattr(p, "script_args", None) or [])
            always = [(script, script_args[script.args_from:script.args_to]) for script in scripts
                      if getattr(script, "args_from", None) is not None]
            processed = self._process(p, tab, False if p.do_not_save_samples else None, [], always)
            self._hooks(always, "postprocess", p, processed)
            return processed

        p = Processing(request, is_img2img=is_img2img, runner=runner,
                       override_settings=values.get("override_settings") or {},
                       outpath_samples=values.get("outpath_samples") or "", outpath_grids=values.get("outpath_grids") or "")
        p.scripts, p.script_args = None, ()
        for key, value in values.items():
            if key in names or key in ("override_settings", "outpath_samples", "outpath_grids"):
                continue
            if key == "extra_generation_params":
                value = dict(value or {})
            setattr(p, key, value)
        return p

    @staticmethod
    def _run_script(script, p: Processing, args: Sequence) -> Processed | None:
        """A script's own argument errors (ValueError naming the value) are the request's errors."""
        try:
            return script.run(p, *args)
        except InvalidRequest:
            raise
        except (ValueError, TypeError) as error:
            raise InvalidRequest("script_args", f"{script.title()}: {error}") from error

    def _prompt_lists(self, p: Processing, options: GenerationOptions, always) -> PromptLists | None:
        """A1111's ``p.all_prompts``, ``all_negative_prompts``, ``all_seeds`` and ``all_subseeds``,
        filled before the scripts' ``process`` hook, which may rewrite them (dynamic prompts does).
        None when no script touched them: the request's own (a script that changed ``p.prompt``
        or ``p.seed`` instead gets those, with a seed of -1 drawn once)."""
        if not always:
            return None
        request = p.request
        made = expand_prompts(request, options)
        p.all_prompts, p.all_negative_prompts = list(made.prompts), list(made.negative_prompts)
        p.all_seeds, p.all_subseeds = list(made.seeds), list(made.subseeds)
        self._hooks(always, "process", p)
        given = PromptLists(p.all_prompts, p.all_negative_prompts, p.all_seeds, p.all_subseeds)
        if given != made:
            return given
        changed = p.request
        if changed == request:
            return made
        # The script changed p's fields, not the lists: the lists follow the fields (the seeds
        # drawn for -1 stay drawn).
        if changed.seed == request.seed:
            changed = replace(changed, seed=made.seeds[0])
        if changed.subseed == request.subseed:
            changed = replace(changed, subseed=made.subseeds[0])
        return expand_prompts(changed, options)

    def _batch_hooks(self, p: Processing, always, batch_size: int) -> BatchHooks:
        """A1111's per-batch hooks of the always-on scripts, in its order. ``p.prompts``,
        ``p.negative_prompts``, ``p.seeds`` and ``p.subseeds`` are the batch's; what the hooks add to
        ``p.extra_generation_params`` reaches the infotexts of this batch and the next ones."""

        def start(number: int, prompts: list, seeds: list, subseeds: list, extra_params: dict) -> None:
            span = slice(number * batch_size, (number + 1) * batch_size)
            p.prompts, p.seeds, p.subseeds = list(prompts), list(seeds), list(subseeds)
            p.negative_prompts = list(getattr(p, "all_negative_prompts", [])[span])
            p.iteration = number
            own = p.extra_generation_params
            p.extra_generation_params = extra_params
            batch = {"batch_number": number, "prompts": prompts, "seeds": seeds, "subseeds": subseeds}
            try:
                self._hooks(always, "before_process_batch", p, **batch)
                self._hooks(always, "after_extra_networks_activate", p, **batch, extra_network_data={})
                self._hooks(always, "process_batch", p, **batch)
            finally:
                p.extra_generation_params = own

        def decoded(number: int, pictures: torch.Tensor) -> torch.Tensor:
            self._hooks(always, "postprocess_batch", p, images=pictures, batch_number=number)
            listed = PostprocessBatchListArgs(list(pictures))
            self._hooks(always, "postprocess_batch_list", p, listed, batch_number=number)
            return _batch_from_list(listed.images, pictures)

        def before_sampling(number: int, x: torch.Tensor, noise: torch.Tensor, c, uc) -> None:
            self._hooks(always, "process_before_every_sampling", p, x=x, noise=noise, c=c, uc=uc)

        if not always:
            return BatchHooks(denoiser=self._denoiser_hooks())
        return BatchHooks(start=start, decoded=decoded, before_hires=lambda number: self._hooks(always, "before_hr", p),
                          before_sampling=before_sampling, denoiser=self._denoiser_hooks())

    def _denoiser_hooks(self) -> DenoiserHooks | None:
        """Extensions' ``on_cfg_denoiser``, ``on_cfg_denoised`` and ``on_cfg_after_cfg`` callbacks,
        around every U-Net prediction; None when none is registered (the plain, fastest path)."""
        events = ("cfg_denoiser", "cfg_denoised", "cfg_after_cfg")
        if not any(self.callbacks.count(event) for event in events):
            return None

        def fire(event: str):
            return (lambda params: self.callbacks.call(event, params)) if self.callbacks.count(event) else None

        return DenoiserHooks(*(fire(event) for event in events))

    def _process(self, p: Processing, tab: str, save_images: bool | None, runs: list, always=()) -> Processed:
        """``process_images`` for one (copy of a) job, in A1111's order: the scripts'
        ``before_process`` hook, the job's settings and checkpoint, the ``process`` hook, then
        generate, save each image, build the grid."""
        self._hooks(always, "before_process", p)
        settings = self.settings.with_overrides(p.override_settings)
        options = self.generation_options(settings)
        save = _saves_samples(settings, save_images) and not p.do_not_save_samples
        loaded = self._ready(settings.get("sd_model_checkpoint") or None, settings)
        p.sd_model = loaded.model
        lists = self._prompt_lists(p, options, always)  # `process` may read the loaded model (shared.sd_model)
        saved: list[Path | None] = []
        request = p.request

        def on_image(image: GeneratedImage) -> None:
            if always and not image.incomplete:  # A1111's postprocess_image: a script may replace the picture
                args = PostprocessImageArgs(image.image)
                self._hooks(always, "postprocess_image", p, args)
                image.image = args.image
            path = self._save(image, request, settings, tab, self._before_saving(p)) \
                if save and not image.incomplete else None
            saved.append(path)
            if path is not None and self.callbacks.count("image_saved"):
                self.callbacks.call("image_saved", ImageSaveParams(image.image, p, str(path), {"parameters": image.infotext}))

        embeddings = self.embeddings.for_width(loaded.model.text_width)
        hooks = self._batch_hooks(p, always, request.batch_size)
        common = (loaded.model, loaded.identity, request, options, self.state, on_image, embeddings)
        if p.is_img2img:
            result = run_img2img(*common, extra_generation_params=p.extra_generation_params,
                                 hypernetworks=self.hypernetworks, loras=self.loras,
                                 model_switch=self._model_switch(request, loaded, settings),
                                 hooks=hooks, prompt_lists=lists)
        else:
            result = run_txt2img(*common, extra_generation_params=p.extra_generation_params,
                                 hypernetworks=self.hypernetworks, loras=self.loras,
                                 first_pass_image=getattr(p, "firstpass_image", None),
                                 model_switch=self._model_switch(request, loaded, settings),
                                 hooks=hooks, prompt_lists=lists)
        runs.append((result, loaded, settings))
        processed = Processed(
            images=[image.image for image in result.images], infotexts=result.infotexts,
            all_prompts=result.all_prompts, all_negative_prompts=result.all_negative_prompts,
            all_seeds=result.all_seeds, all_subseeds=result.all_subseeds, width=request.width, height=request.height,
            interrupted=result.interrupted, saved=saved,
        )
        wanted = settings.get("return_grid") or settings.get("grid_save")
        too_few = len(processed.images) < 2 and settings.get("grid_only_if_multiple")
        if wanted and not too_few and not p.do_not_save_grid and processed.images:
            grid = image_grid(processed.images, request.batch_size, n_rows=settings.get("n_rows"),
                              prevent_empty_spots=settings.get("grid_prevent_empty_spots"))
            info = processed.infotexts[0]
            path = self._save_grid(grid, info, "grid", tab, settings)
            if settings.get("return_grid"):
                processed.images.insert(0, grid)
                processed.infotexts.insert(0, info)
                processed.saved.insert(0, path)
                processed.index_of_first_image = 1
        return processed

    def _remember(self, loaded: LoadedModel, settings: SettingsView, restore_afterwards: bool) -> None:
        if not restore_afterwards:
            for key, value in settings.overrides.items():
                self.settings.set(key, value)
        if "sd_model_checkpoint" not in settings.overrides or not restore_afterwards:
            if self.settings.get("sd_model_checkpoint") != loaded.info.title:
                self.settings.set("sd_model_checkpoint", loaded.info.title)

    # -- infotext paste and the token counter ------------------------------------------------------
    def paste(self, text: str) -> Pasted:
        announce = (lambda infotext, params: self.callbacks.call("infotext_pasted", infotext, params)) \
            if self.callbacks.count("infotext_pasted") else None
        return paste(text, self.settings, announce)

    def last_infotext(self) -> str:
        """The last generation's infotext (``params.txt``), for ↙ with an empty prompt box."""
        try:
            return self.paths.params_file.read_text(encoding="utf-8")
        except OSError:
            return ""

    def overrides_from_entries(self, entries: list[str] | None) -> dict:
        return overrides_from_entries(entries or [], self.settings)

    def token_count(self, text: str, steps: int, positive: bool = True) -> tuple[int, int]:
        loaded = self.models.loaded
        tokenizer = loaded.model.tokenizer if loaded else load_clip_tokenizer(tokenizer_file(self.paths.configs))
        return prompt_token_count(tokenizer, text, steps, positive, self.generation_options().text)

    def interrupt(self) -> None:
        self.state.interrupt()

    def skip(self) -> None:
        self.state.skip()

    def generation_options(self, settings: Settings | SettingsView | None = None) -> GenerationOptions:
        s = (settings or self.settings).get
        return GenerationOptions(
            text=TextOptions(
                clip_skip=s("CLIP_stop_at_last_layers"),
                emphasis=s("emphasis"),
                comma_padding_backtrack=s("comma_padding_backtrack"),
                refiner_aesthetic=(s("sdxl_refiner_high_aesthetic_score"), s("sdxl_refiner_low_aesthetic_score")),
                sdxl_clip_l_skip=s("sdxl_clip_l_skip"),
            ),
            sampler=SamplerOptions(
                eta_ancestral=s("eta_ancestral"), eta_ddim=s("eta_ddim"), s_churn=s("s_churn"), s_tmin=s("s_tmin"),
                s_tmax=s("s_tmax"), s_noise=s("s_noise"), sigma_min=s("sigma_min"), sigma_max=s("sigma_max"), rho=s("rho"),
                beta_alpha=s("beta_dist_alpha"), beta_beta=s("beta_dist_beta"),
                always_discard_penultimate=s("always_discard_next_to_last_sigma"),
                uni_pc_variant=s("uni_pc_variant"), uni_pc_skip_type=s("uni_pc_skip_type"),
                uni_pc_order=s("uni_pc_order"), uni_pc_lower_order_final=s("uni_pc_lower_order_final"),
            ),
            randn_source=s("randn_source"),
            eta_noise_seed_delta=s("eta_noise_seed_delta"),
            add_model_hash=s("add_model_hash_to_info"),
            add_model_name=s("add_model_name_to_info"),
            add_vae_hash=s("add_vae_hash_to_info"),
            add_vae_name=s("add_vae_name_to_info"),
            version=infotext_version() if s("add_version_to_infotext") else None,
            nan_check=self.flags.nan_check,
            strip_comments=s("enable_prompt_comments"),
            img2img_fix_steps=s("img2img_fix_steps"),
            img2img_background_color=s("img2img_background_color"),
            inpainting_mask_weight=s("inpainting_mask_weight"),
            hypernetwork=s("sd_hypernetwork"),
            auto_vae_precision=s("auto_vae_precision"),
            sdxl_crop=(s("sdxl_crop_top"), s("sdxl_crop_left")),
            hires_refiner_pass=s("hires_fix_refiner_pass"),
            default_multiplier=s("extra_networks_default_multiplier"),
            old_prompt_timelines=s("use_old_scheduling"),
            upscaler_models=self.upscalers.models(),
        )

    # -- saving ---------------------------------------------------------------------------------
    def output_dir(self, settings: Settings | SettingsView | None = None, tab: str = "txt2img") -> Path:
        settings = settings or self.settings
        configured = settings.get("outdir_samples") or settings.get(f"outdir_{tab}_samples")
        return self.paths.resolve_output(configured)

    def _save_grid(self, grid, infotext: str, basename: str, tab: str, settings: SettingsView) -> Path | None:
        """``<basename>-NNNN.<grid_format>`` in the grids folder, when the grid_save setting is on."""
        if not settings.get("grid_save"):
            return None
        configured = settings.get("outdir_grids") or settings.get(f"outdir_{tab}_grids")
        return save_grid(grid, self.paths.resolve_output(configured), basename, infotext or None,
                         OutputFormat.from_settings(settings.get, "grid_format"))

    def _before_saving(self, p: Processing):
        """A1111's ``on_before_image_saved``, as the file's path is chosen: the callbacks see that
        path and may change the picture or its infotext in the file (what the page and the API show
        stays as generated). None when no extension listens."""
        if not self.callbacks.count("before_image_saved"):
            return None

        def before_write(path: Path, picture, infotext):
            params = ImageSaveParams(picture, p, str(path), {"parameters": infotext or ""})
            self.callbacks.call("before_image_saved", params)
            return params.image, str(params.pnginfo.get("parameters", ""))

        return before_write

    def _save(self, image: GeneratedImage, request: Txt2ImgRequest, settings: SettingsView, tab: str = "txt2img",
              before_write=None) -> Path:
        loaded = self.models.loaded
        fields = name_fields(
            image, request, model_name=loaded.info.stem if loaded else "", vae_path=loaded.vae.path if loaded else None,
            model_hash=loaded.info.shorthash if loaded else None, clip_skip=settings.get("CLIP_stop_at_last_layers"),
            job_timestamp=self.state.snapshot().job_timestamp,
            max_prompt_words=settings.get("directories_max_prompt_words"),
        )
        base = self.output_dir(settings, tab)
        directory = base
        if settings.get("save_to_dirs"):
            pattern = settings.get("directories_filename_pattern") or "[prompt_words]"
            directory = _inside(base, base / apply_pattern(pattern, fields).lstrip(" ").rstrip("\\ /"),
                                "directories_filename_pattern")
        pattern = settings.get("samples_filename_pattern") or "[seed]-[prompt_spaces]"
        decoration = apply_pattern(pattern, fields).replace("/", "_").replace("\\", "_")  # a name, never a path
        return save_image(image.image, directory, decoration, image.infotext,
                          OutputFormat.from_settings(settings.get, "samples_format"), before_write=before_write)


class OutOfMemory(RuntimeError):
    """A job ran out of (GPU) memory; the message says what to try. The server goes on."""


def out_of_memory_advice(request, detail: str, tiers) -> str:
    """What to try, in the order that usually helps most, for a job that ran out of memory."""
    size = f"{request.width}x{request.height}"
    if getattr(request, "enable_hr", False):
        size += " with the hires fix to {}x{}".format(*hires_size(request))
    tips = ["a smaller width and height" + (" or hires-fix scale" if getattr(request, "enable_hr", False) else ""),
            "a smaller batch size (more batches instead)" if request.batch_size > 1 else None]
    if not (tiers.medvram or tiers.lowvram):
        tips.append("restarting with --medvram (or --lowvram on cards with 4 GB or less)")
    elif not tiers.lowvram:
        tips.append("restarting with --lowvram")
    tips.append("closing other programs that use the GPU")
    return (f"Out of GPU memory while generating {size}, batch size {request.batch_size} ({detail}). The memory was "
            f"freed and the server goes on. Try {'; '.join(tip for tip in tips if tip)}. (The VAE already works in "
            "tiles when a whole picture would not fit.)")


def _inside(base: Path, wanted: Path, setting: str) -> Path:
    """``wanted`` when it stays inside ``base`` (a pattern may make subfolders, never leave)."""
    if not wanted.resolve().is_relative_to(base.resolve()):
        raise InvalidRequest(setting, f"leads outside the output folder {base} ({wanted}); use a relative pattern "
                                      "without '..'")
    return wanted


def _batch_from_list(images: list, pictures: torch.Tensor) -> torch.Tensor:
    """``postprocess_batch_list``'s pictures back into one batch. Hanga keeps one picture per seed,
    so a list of another length or shape is ignored, with a warning."""
    try:
        stacked = torch.stack([torch.as_tensor(image, dtype=torch.float32) for image in images]) if images else None
    except (TypeError, ValueError, RuntimeError):
        stacked = None
    if stacked is None or stacked.shape != pictures.shape:
        log.warning("A script's postprocess_batch_list left %d picture(s) that do not match the batch's %d of "
                    "shape %s; the batch is kept as decoded (Hanga cannot add or drop pictures there)",
                    len(images), pictures.shape[0], tuple(pictures.shape[1:]))
        return pictures
    return stacked.clamp(0.0, 1.0)


def _saves_samples(settings: SettingsView, save_images: bool | None) -> bool:
    """A job's explicit choice (the API's ``save_images``), else the samples_save setting."""
    return settings.get("samples_save") if save_images is None else save_images
