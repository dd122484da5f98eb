"""Setting up one sampling pass (first pass, hires pass or img2img): sampler plan, noise schedule,
U-Net wrapper and the CFG denoiser over a batch's conditioning."""

from __future__ import annotations

from modules.core.generation.job import GenerationOptions, Progress
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
    unet = (LCMDenoiser if sampler.consistency else UNetDenoiser)(model.unet, schedule, model.prediction_type)
    return sampling, schedule, unet


def cfg_denoiser(unet: UNetDenoiser, sampling: SamplingPlan, cond, uncond, cfg_scale: float, progress: Progress,
                 **extra) -> CFGDenoiser:
    return CFGDenoiser(
        unet, cond.at, uncond.at, cfg_scale * sampling.sampler.cfg_scale_multiplier,
        timestep_kind=sampling.sampler.kind == "timestep", should_stop=progress.stop_requested, **extra,
    )
