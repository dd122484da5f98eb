"""The generation service: the functions both the UI and the HTTP API call.

One lock serialises jobs, so one worker at a time owns the GPU; the job queue (with queue
positions, cancelling and previews) will replace it without changing these functions' callers.
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from modules.core.atomic import write_text
from modules.core.conditioning.clip_text import TextOptions
from modules.core.conditioning.token_count import prompt_token_count
from modules.core.generation.request import Txt2ImgRequest
from modules.core.generation.txt2img import GeneratedImage, GenerationOptions, GenerationResult, run_txt2img
from modules.core.images import NameFields, apply_pattern, save_png
from modules.core.paths import Paths
from modules.core.png_meta import pnginfo_for
from modules.core.sampling.run import SamplerOptions
from modules.core.tokenizer import load_clip_tokenizer, tokenizer_file
from modules.core.version import infotext_version
from modules.service.models import LoadedModel, ModelService
from modules.service.paste import Pasted, overrides_from_entries, paste
from modules.service.progress import JobState, ProgressSnapshot
from modules.service.settings import Settings, SettingsView

log = logging.getLogger("hanga")


@dataclass(frozen=True)
class ServiceFlags:
    """The command-line flags the service acts on."""

    nan_check: bool = True  # --disable-nan-check turns it off
    prompt_history: bool = True  # --no-prompt-history turns it off
    console_progress: bool = True  # --disable-console-progressbars turns it off


@dataclass
class Txt2ImgOutcome:
    result: GenerationResult
    model: LoadedModel
    saved: list[Path | None] = field(default_factory=list)
    job_timestamp: str = ""  # A1111's YYYYmmddHHMMSS of the job's start


class GenerationService:
    def __init__(self, paths: Paths, settings: Settings, models: ModelService, flags: ServiceFlags = ServiceFlags()):
        self.paths = paths
        self.settings = settings
        self.models = models
        self.flags = flags
        self.state = JobState(console_bar=flags.console_progress)
        self._gpu = threading.Lock()

    # -- models ---------------------------------------------------------------------------------
    def select_checkpoint(self, title: str) -> LoadedModel:
        """Load a checkpoint and make it the ``sd_model_checkpoint`` setting."""
        with self._gpu:
            loaded = self.models.ensure_loaded(title)
        self.settings.set("sd_model_checkpoint", loaded.info.title)
        return loaded

    def current_checkpoint_title(self) -> str:
        loaded = self.models.loaded
        return loaded.info.title if loaded else self.settings.get("sd_model_checkpoint")

    # -- jobs -----------------------------------------------------------------------------------
    def txt2img(
        self,
        request: Txt2ImgRequest,
        save_images: bool | None = None,
        override_settings: dict | None = None,
        restore_afterwards: bool = True,
        on_progress: Callable[[ProgressSnapshot], None] | None = None,
    ) -> Txt2ImgOutcome:
        """Run a txt2img job; ``override_settings`` apply to this job only unless
        ``restore_afterwards`` is false (then they are saved, as in A1111)."""
        request = request.validate()
        settings = self.settings.with_overrides(override_settings)
        save = settings.get("samples_save") if save_images is None else save_images
        with self._gpu:
            loaded = self.models.ensure_loaded(settings.get("sd_model_checkpoint") or None)
            saved: list[Path | None] = []

            def on_image(image: GeneratedImage) -> None:
                saved.append(self._save(image, request, settings) if save and not image.incomplete else None)

            started = _dt.datetime.now().strftime("%Y%m%d%H%M%S")
            self.state.begin("txt2img", on_progress)
            try:
                options = self.generation_options(settings)
                result = run_txt2img(loaded.model, loaded.identity, request, options, self.state, on_image)
            finally:
                self.state.end()
        self._remember(loaded, settings, restore_afterwards)
        if result.images and self.flags.prompt_history:
            write_text(self.paths.params_file, result.images[0].infotext)
        return Txt2ImgOutcome(result, loaded, saved, started)

    def _remember(self, loaded: LoadedModel, settings: SettingsView, restore_afterwards: bool) -> None:
        if not restore_afterwards:
            for key, value in settings.overrides.items():
                self.settings.set(key, value)
        if "sd_model_checkpoint" not in settings.overrides or not restore_afterwards:
            if self.settings.get("sd_model_checkpoint") != loaded.info.title:
                self.settings.set("sd_model_checkpoint", loaded.info.title)

    # -- infotext paste and the token counter ------------------------------------------------------
    def paste(self, text: str) -> Pasted:
        return paste(text, self.settings)

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
            version=infotext_version() if s("add_version_to_infotext") else None,
            nan_check=self.flags.nan_check,
            strip_comments=s("enable_prompt_comments"),
            old_prompt_timelines=s("use_old_scheduling"),
        )

    # -- saving ---------------------------------------------------------------------------------
    def output_dir(self, settings: Settings | SettingsView | None = None, tab: str = "txt2img") -> Path:
        settings = settings or self.settings
        configured = settings.get("outdir_samples") or settings.get(f"outdir_{tab}_samples")
        return self.paths.resolve_output(configured)

    def _save(self, image: GeneratedImage, request: Txt2ImgRequest, settings: SettingsView) -> Path:
        fields = NameFields(
            seed=image.seed, prompt=image.prompt, steps=request.steps, cfg=request.cfg_scale,
            width=request.width, height=request.height, sampler=request.sampler_name,
        )
        directory = self.output_dir(settings)
        if settings.get("save_to_dirs"):
            directory = directory / apply_pattern(settings.get("directories_filename_pattern") or "[date]", fields)
        pattern = settings.get("samples_filename_pattern") or "[seed]-[prompt_spaces]"
        info = pnginfo_for(image.infotext) if settings.get("enable_pnginfo") else None
        return save_png(image.image, directory, apply_pattern(pattern, fields), info)
