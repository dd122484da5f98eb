"""Run one sampler over one batch: build the sigma (or timestep) schedule, scale the initial noise,
call the sampler function, and return the latent (the last x0 prediction when interrupted)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch

from modules.core.rng import ImageRNG
from modules.core.sampling.brownian import BrownianTreeNoise
from modules.core.sampling.denoiser import CFGDenoiser, SamplingInterrupted
from modules.core.sampling.noise_schedule import DiscreteSchedule
from modules.core.sampling.sampler_functions import ddim_timesteps
from modules.core.sampling.samplers import SamplerInfo, effective_scheduler
from modules.core.sampling.schedulers import Scheduler, uniform
from modules.core.sampling.timestep_samplers import UNIPC_SETTING_KWARGS


@dataclass(frozen=True)
class SamplerOptions:
    """Sampler parameters from settings (A1111 keys in comments)."""

    eta_ancestral: float = 1.0  # eta_ancestral
    eta_ddim: float = 0.0  # eta_ddim
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = 0.0  # 0 means infinity
    s_noise: float = 1.0
    sigma_min: float = 0.0  # 0 = the model's own
    sigma_max: float = 0.0
    rho: float = 0.0
    beta_alpha: float = 0.6  # beta_dist_alpha
    beta_beta: float = 0.6  # beta_dist_beta
    always_discard_penultimate: bool = False  # always_discard_next_to_last_sigma
    uni_pc_variant: str = "bh1"
    uni_pc_skip_type: str = "time_uniform"
    uni_pc_order: int = 3
    uni_pc_lower_order_final: bool = True


# The k-diffusion defaults A1111 compares the sigma settings with; a setting that differs is used
# and written to the infotext under the key beside it.
_CHURN_DEFAULTS = (
    ("s_churn", 0.0, "Sigma churn"),
    ("s_tmin", 0.0, "Sigma tmin"),
    ("s_tmax", float("inf"), "Sigma tmax"),
    ("s_noise", 1.0, "Sigma noise"),
)


@dataclass
class SamplingPlan:
    """What the sampler will run and what the infotext must say about it."""

    sampler: SamplerInfo
    scheduler: Scheduler  # as chosen ("Automatic" stays Automatic)
    resolved: Scheduler  # what actually produced the sigmas
    eta: float | None  # None when the sampler takes no eta
    infotext: dict = field(default_factory=dict)


def plan(
    sampler: SamplerInfo,
    scheduler: Scheduler,
    options: SamplerOptions,
    eta: float | None = None,
    schedule: DiscreteSchedule | None = None,
) -> SamplingPlan:
    """Resolve "Automatic" and collect the infotext keys A1111 writes for these settings (a sigma
    range setting counts only where it differs from ``schedule``'s own range)."""
    resolved = effective_scheduler(sampler, scheduler)
    extra: dict = {}
    chosen_eta = None
    if sampler.takes_eta:
        default = options.eta_ddim if sampler.kind == "timestep" else options.eta_ancestral
        chosen_eta = default if eta is None else eta
        reference = 0.0 if sampler.kind == "timestep" else 1.0
        if chosen_eta != reference:
            extra["Eta DDIM" if sampler.kind == "timestep" else "Eta"] = chosen_eta
    for name, default, key in _CHURN_DEFAULTS:
        value = _option_value(options, name)
        if name in sampler.params and value != default:
            extra[key] = value
    if sampler.kind == "sigma" and options.always_discard_penultimate and not sampler.discard_penultimate:
        extra["Discard penultimate sigma"] = True
    if sampler.kind == "sigma" and resolved.function is not None:
        extra.update(_schedule_infotext(resolved, options, schedule))
    return SamplingPlan(sampler, scheduler, resolved, chosen_eta, extra)


def _option_value(options: SamplerOptions, name: str):
    value = getattr(options, name)
    return (value or float("inf")) if name == "s_tmax" else value  # s_tmax 0 means infinity


def _schedule_infotext(resolved: Scheduler, options: SamplerOptions,
                       schedule: DiscreteSchedule | None) -> dict:
    extra: dict = {}
    if options.sigma_min and (schedule is None or options.sigma_min != schedule.sigma_min):
        extra["Schedule min sigma"] = options.sigma_min
    if options.sigma_max and (schedule is None or options.sigma_max != schedule.sigma_max):
        extra["Schedule max sigma"] = options.sigma_max
    if resolved.default_rho != -1 and options.rho and options.rho != resolved.default_rho:
        extra["Schedule rho"] = options.rho
    if resolved.name == "beta":
        extra["Beta schedule alpha"] = options.beta_alpha
        extra["Beta schedule beta"] = options.beta_beta
    return extra


def schedule_label(p: SamplingPlan) -> str:
    """``Schedule type`` in the infotext: the resolved label when a schedule function ran."""
    if p.sampler.kind == "sigma" and p.resolved.function is not None:
        return p.resolved.label
    return p.scheduler.label


def sigmas_for(p: SamplingPlan, steps: int, schedule: DiscreteSchedule, options: SamplerOptions) -> torch.Tensor:
    sigma_min = options.sigma_min or schedule.sigma_min
    sigma_max = options.sigma_max or schedule.sigma_max
    function = p.resolved.function or uniform
    kwargs = {}
    if p.resolved.default_rho != -1 and options.rho:
        kwargs["rho"] = options.rho
    if p.resolved.name == "beta":
        kwargs.update(alpha=options.beta_alpha, beta=options.beta_beta)
    if p.sampler.discard_penultimate or options.always_discard_penultimate:
        sigmas = function(steps + 1, sigma_min, sigma_max, schedule, **kwargs)
        return torch.cat([sigmas[:-2], sigmas[-1:]])
    return function(steps, sigma_min, sigma_max, schedule, **kwargs)


def sample(
    p: SamplingPlan,
    steps: int,
    denoiser: CFGDenoiser,
    rng: ImageRNG,
    schedule: DiscreteSchedule,
    options: SamplerOptions,
    on_step: Callable[[int, torch.Tensor], None],
    first_noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, bool]:
    """Returns (latent, interrupted). ``first_noise`` is ``rng.next()`` when the caller drew it."""
    last = {}

    def callback(step: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        last["denoised"] = denoised
        denoiser.sampling_step = step
        on_step(step, denoised)

    x = rng.next() if first_noise is None else first_noise
    last["denoised"] = x
    denoiser.sampling_step, denoiser.total_sampling_steps = 0, steps
    try:
        kwargs = _sampler_kwargs(p, options, schedule)
        if p.sampler.kind == "timestep":
            timesteps = ddim_timesteps(steps)
            return p.sampler.function(denoiser, x, timesteps, schedule.alphas_cumprod, rng, callback, **kwargs), False
        sigmas = sigmas_for(p, steps, schedule, options).to(x.device)
        x = x * sigmas[0]
        if p.sampler.brownian:
            kwargs["noise_sampler"] = BrownianTreeNoise(x, sigmas, rng.seeds, rng.draw_device)
        return p.sampler.function(denoiser, x, sigmas, rng, callback, **kwargs), False
    except SamplingInterrupted:
        return last["denoised"], True


def img2img_steps(steps: int, denoising_strength: float, fix_steps: bool) -> tuple[int, int]:
    """A1111's ``setup_img2img_steps``: (schedule length, t_enc). Normally the schedule has ``steps``
    entries and sampling starts ``denoising_strength`` of the way down it; with fixed steps (setting
    img2img_fix_steps, and always for hires) the schedule is lengthened so exactly ``steps`` run."""
    strength = min(denoising_strength, 0.999)
    if fix_steps:
        return (int(steps / strength) if denoising_strength > 0 else 0), steps - 1
    return steps, int(strength * steps)


def sample_img2img(
    p: SamplingPlan,
    steps: int,
    denoiser: CFGDenoiser,
    noise: torch.Tensor,
    init_latent: torch.Tensor,
    denoising_strength: float,
    fix_steps: bool,
    rng: ImageRNG,
    schedule: DiscreteSchedule,
    options: SamplerOptions,
    on_step: Callable[[int, torch.Tensor], None],
) -> tuple[torch.Tensor, bool]:
    """Noise ``init_latent`` to the schedule point the strength picks and sample from there down.
    Returns (latent, interrupted); a strength of 0 samples nothing and returns ``init_latent``."""
    total, t_enc = img2img_steps(steps, denoising_strength, fix_steps)
    if denoising_strength <= 0 or total <= 0:
        return init_latent, False
    last = {"denoised": init_latent}

    def callback(step: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        last["denoised"] = denoised
        denoiser.sampling_step = step
        on_step(step, denoised)

    denoiser.sampling_step, denoiser.total_sampling_steps = 0, t_enc + 1  # A1111 counts t_enc + 1 steps

    try:
        kwargs = _sampler_kwargs(p, options, schedule)
        if p.sampler.kind == "timestep":
            timesteps = ddim_timesteps(total)
            alpha = schedule.alphas_cumprod.to(init_latent.device)[timesteps[t_enc]]
            x = init_latent * alpha.sqrt() + noise * (1 - alpha).sqrt()
            if "is_img2img" in inspect.signature(p.sampler.function).parameters:
                kwargs["is_img2img"] = True
            # A1111 noises to timesteps[t_enc] but hands the sampler only timesteps[:t_enc].
            return p.sampler.function(denoiser, x, timesteps[:t_enc], schedule.alphas_cumprod, rng, callback, **kwargs), False
        sigmas = sigmas_for(p, total, schedule, options).to(init_latent.device)
        sigma_sched = sigmas[total - t_enc - 1 :]
        x = init_latent + noise * sigma_sched[0]
        for name, value in (("sigma_min", sigma_sched[-2]), ("sigma_max", sigma_sched[0]), ("n", len(sigma_sched) - 1)):
            if name in kwargs:
                kwargs[name] = value
        if p.sampler.brownian:
            kwargs["noise_sampler"] = BrownianTreeNoise(x, sigmas, rng.seeds, rng.draw_device)
        return p.sampler.function(denoiser, x, sigma_sched, rng, callback, **kwargs), False
    except SamplingInterrupted:
        return last["denoised"], True


def _sampler_kwargs(p: SamplingPlan, options: SamplerOptions, schedule: DiscreteSchedule) -> dict:
    values = {
        "eta": p.eta,
        "s_churn": options.s_churn,
        "s_tmin": options.s_tmin,
        "s_tmax": _option_value(options, "s_tmax"),
        "s_noise": options.s_noise,
        "sigma_min": schedule.sigma_min,
        "sigma_max": schedule.sigma_max,
        **{key: getattr(options, key) for key in UNIPC_SETTING_KWARGS},
    }
    kwargs = {UNIPC_SETTING_KWARGS.get(name, name): values[name] for name in p.sampler.params}
    return {**kwargs, **p.sampler.fixed}
