"""The sampler list under A1111's names, and name resolution (aliases, legacy "X Karras" names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from modules.core.sampling import sampler_functions as fn
from modules.core.sampling.schedulers import SCHEDULERS, Scheduler, find_scheduler


@dataclass(frozen=True)
class SamplerInfo:
    name: str
    function: Callable
    aliases: tuple[str, ...] = ()
    kind: str = "sigma"  # "sigma" (k-diffusion style) or "timestep" (DDIM family)
    default_scheduler: str | None = None  # what "Automatic" means for this sampler
    uses_ensd: bool = False  # its step noise comes from the (ENSD-reseeded) per-image generators
    params: tuple[str, ...] = ()  # option keywords the function takes: eta, s_churn, s_tmin, s_tmax, s_noise
    second_order: bool = False

    @property
    def takes_eta(self) -> bool:
        return "eta" in self.params


SAMPLERS: tuple[SamplerInfo, ...] = (
    SamplerInfo("DPM++ 2M", fn.sample_dpmpp_2m, ("k_dpmpp_2m",), default_scheduler="karras"),
    SamplerInfo("Euler a", fn.sample_euler_ancestral, ("k_euler_a", "k_euler_ancestral"),
                uses_ensd=True, params=("eta", "s_noise")),
    SamplerInfo("Euler", fn.sample_euler, ("k_euler",), params=("s_churn", "s_tmin", "s_tmax", "s_noise")),
    SamplerInfo("DDIM", fn.sample_ddim, ("ddim",), kind="timestep", params=("eta",)),
)


class UnknownSamplerError(ValueError):
    pass


def _by_name(name: str) -> SamplerInfo | None:
    wanted = name.strip().lower()
    for sampler in SAMPLERS:
        if wanted == sampler.name.lower() or wanted in (a.lower() for a in sampler.aliases):
            return sampler
    return None


def resolve_sampler(sampler_name: str, scheduler_name: str | None = "Automatic") -> tuple[SamplerInfo, Scheduler]:
    """Find a sampler and scheduler; a legacy combined name ("DPM++ 2M Karras") sets the scheduler."""
    scheduler = find_scheduler(scheduler_name)
    if scheduler is None:
        labels = ", ".join(s.label for s in SCHEDULERS)
        raise UnknownSamplerError(f"unknown scheduler {scheduler_name!r}; choose one of: {labels}")
    sampler = _by_name(sampler_name)
    if sampler is None:
        for candidate in SCHEDULERS[1:]:
            for suffix in (candidate.label, candidate.name, *candidate.aliases):
                if sampler_name.lower().endswith(" " + suffix.lower()):
                    sampler = _by_name(sampler_name[: -len(suffix) - 1])
                    if sampler is not None:
                        return sampler, candidate
    if sampler is None:
        names = ", ".join(s.name for s in SAMPLERS)
        raise UnknownSamplerError(f"unknown sampler {sampler_name!r}; choose one of: {names}")
    return sampler, scheduler


def effective_scheduler(sampler: SamplerInfo, scheduler: Scheduler) -> Scheduler:
    """What "Automatic" resolves to for this sampler (itself when the sampler has no default)."""
    if scheduler.function is None and sampler.default_scheduler:
        return find_scheduler(sampler.default_scheduler) or scheduler
    return scheduler
