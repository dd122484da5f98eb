"""Setting up one sampling pass (first pass, hires pass or img2img): sampler plan, noise schedule,
U-Net wrapper and the CFG denoiser over a batch's conditioning."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from modules.core.generation.job import Batch, GenerationOptions, GenerationResult, Progress
from modules.core.generation.request import InvalidRequest, Txt2ImgRequest
from modules.core.models.loader import StableDiffusionModel
from modules.core.sampling.denoiser import CFGDenoiser, LCMDenoiser, UNetDenoiser
from modules.core.sampling.noise_schedule import DiscreteSchedule, LCMSchedule
from modules.core.sampling.run import SamplingPlan, plan
from modules.core.sampling.samplers import resolve_sampler


def prepare_sampling(model: StableDiffusionModel, request: Txt2ImgRequest, options: GenerationOptions,
                     sampler_name: str, scheduler_name: str, steps: int, steps_field: str = "steps"):
    """The sampler plan, noise schedule and U-Net wrapper for one pass."""
    sampler, scheduler = resolve_sampler(sampler_name, scheduler_name)
    schedule = (LCMSchedule if sampler.consistency else DiscreteSchedule)(model.alphas_cumprod)
    sampling = plan(sampler, scheduler, options.sampler, request.eta, schedule)
    if "uni_pc_order" in sampler.params and options.sampler.uni_pc_order > steps:
        raise InvalidRequest(
            steps_field, f"must be at least {options.sampler.uni_pc_order} with UniPC (its order setting); got {steps}"
        )
    sdxl = None if model.sdxl is None else replace(model.sdxl, crop=options.sdxl_crop)
    unet = (LCMDenoiser if sampler.consistency else UNetDenoiser)(model.unet, schedule, model.prediction_type, sdxl)
    return sampling, schedule, unet


def cfg_denoiser(unet: UNetDenoiser, sampling: SamplingPlan, cond, uncond, cfg_scale: float, progress: Progress,
                 **extra) -> CFGDenoiser:
    return CFGDenoiser(
        unet, cond.at, uncond.at, cfg_scale * sampling.sampler.cfg_scale_multiplier,
        timestep_kind=sampling.sampler.kind == "timestep", should_stop=progress.stop_requested, **extra,
    )


@dataclass(frozen=True)
class ModelSwitch:
    """Other checkpoints a job uses, for a hires pass or as the refiner: each callable returns its
    model, loading it (and so unloading the other) when it is not the current one."""

    first: Callable[[], StableDiffusionModel]
    hires: Callable[[], StableDiffusionModel] | None = None
    hires_title: str | None = None  # "Hires checkpoint" in the infotext: "name [hash]"
    refiner: Callable[[], StableDiffusionModel] | None = None
    refiner_title: str | None = None  # "Refiner" in the infotext: "name [hash]"


class RefinerSwitch:
    """Hands a batch's sampling to the refiner checkpoint once it is ``switch_at`` of the way
    (A1111's ``apply_refiner``, by noise level): the refiner is loaded, ``prepare`` gives its U-Net
    wrapper and the batch's conditioning encoded by its text encoder, and the sampler goes on with
    it; its VAE decodes the batch. "Refiner" and "Refiner switch at" are written once it switched.
    ``prepare(model, latent_shape)`` → (U-Net wrapper, cond, uncond, image conditioning or None)."""

    def __init__(self, switch_at: float, load: Callable[[], StableDiffusionModel], prepare, title: str | None,
                 batch: Batch, result: GenerationResult, extra: dict | None = None):
        """``extra``: infotext pairs written with the switch, before "Refiner" ("Hires refiner")."""
        self.switch_at, self.load, self.prepare, self.title = switch_at, load, prepare, title
        self.batch, self.result, self.extra = batch, result, extra or {}
        self.done = False

    def __call__(self, denoiser, x: torch.Tensor, sigma: torch.Tensor) -> None:
        if self.done or denoiser.completed_ratio(sigma) < self.switch_at:
            return
        self.done = True
        model = self.load()
        self.batch.enter_model(model)
        unet, cond, uncond, image_cond = self.prepare(model, x.shape)
        denoiser.switch_model(unet, cond.at, uncond.at, image_cond)
        self.batch.decoder = model
        self.result.extra_generation_params.update(self.extra)
        self.result.extra_generation_params["Refiner"] = self.title
        self.result.extra_generation_params["Refiner switch at"] = self.switch_at
