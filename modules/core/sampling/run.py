"""Run one sampler over one batch: build the sigma (or timestep) schedule, scale the initial noise,
call the sampler function, and return the latent (the last x0 prediction when interrupted)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from modules.core.rng import ImageRNG
from modules.core.sampling.denoiser import CFGDenoiser, SamplingInterrupted
from modules.core.sampling.noise_schedule import DiscreteSchedule
from modules.core.sampling.sampler_functions import ddim_timesteps
from modules.core.sampling.samplers import SamplerInfo, effective_scheduler
from modules.core.sampling.schedulers import Scheduler, uniform


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


@dataclass
class SamplingPlan:
    """What the sampler will run and what the infotext must say about it."""

    sampler: SamplerInfo
    scheduler: Scheduler  # as chosen ("Automatic" stays Automatic)
    resolved: Scheduler  # what actually produced the sigmas
    eta: float | None  # None when the sampler takes no eta
    infotext: dict = field(default_factory=dict)


def plan(sampler: SamplerInfo, scheduler: Scheduler, options: SamplerOptions, eta: float | None = None) -> SamplingPlan:
    resolved = effective_scheduler(sampler, scheduler)
    extra: dict = {}
    chosen_eta = None
    if sampler.takes_eta:
        default = options.eta_ddim if sampler.kind == "timestep" else options.eta_ancestral
        chosen_eta = default if eta is None else eta
        reference = 0.0 if sampler.kind == "timestep" else 1.0
        if chosen_eta != reference:
            extra["Eta DDIM" if sampler.kind == "timestep" else "Eta"] = chosen_eta
    return SamplingPlan(sampler, scheduler, resolved, chosen_eta, extra)


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
    return function(steps, sigma_min, sigma_max, schedule, **kwargs)


def sample(
    p: SamplingPlan,
    steps: int,
    denoiser: CFGDenoiser,
    rng: ImageRNG,
    schedule: DiscreteSchedule,
    options: SamplerOptions,
    on_step: Callable[[int, torch.Tensor], None],
) -> tuple[torch.Tensor, bool]:
    """Returns (latent, interrupted)."""
    last = {}

    def callback(step: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        last["denoised"] = denoised
        on_step(step, denoised)

    x = rng.next()
    last["denoised"] = x
    try:
        kwargs = _sampler_kwargs(p, options)
        if p.sampler.kind == "timestep":
            timesteps = ddim_timesteps(steps)
            return p.sampler.function(denoiser, x, timesteps, schedule.alphas_cumprod, rng, callback, **kwargs), False
        sigmas = sigmas_for(p, steps, schedule, options).to(x.device)
        return p.sampler.function(denoiser, x * sigmas[0], sigmas, rng, callback, **kwargs), False
    except SamplingInterrupted:
        return last["denoised"], True


def _sampler_kwargs(p: SamplingPlan, options: SamplerOptions) -> dict:
    values = {
        "eta": p.eta,
        "s_churn": options.s_churn,
        "s_tmin": options.s_tmin,
        "s_tmax": options.s_tmax or float("inf"),
        "s_noise": options.s_noise,
    }
    return {name: values[name] for name in p.sampler.params}
