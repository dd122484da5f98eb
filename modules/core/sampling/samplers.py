"""The sampler list under A1111's names, and name resolution (aliases, legacy "X Karras" names).

``SamplerInfo`` is re-exported from here."""

from __future__ import annotations

from modules.core.sampling import sampler_functions as fn
from modules.core.sampling.kdiffusion import KDIFFUSION_SAMPLERS
from modules.core.sampling.sampler_info import SamplerInfo
from modules.core.sampling.schedulers import SCHEDULERS, Scheduler, find_scheduler
from modules.core.sampling.timestep_samplers import TIMESTEP_SAMPLERS


# A1111 v1.10.1's sampler list, in its order (UI dropdown, /sdapi/v1/samplers).
_K = {s.name: s for s in KDIFFUSION_SAMPLERS}
_T = {s.name: s for s in TIMESTEP_SAMPLERS}
SAMPLERS: tuple[SamplerInfo, ...] = (
    SamplerInfo("DPM++ 2M", fn.sample_dpmpp_2m, ("k_dpmpp_2m",), default_scheduler="karras"),
    _K["DPM++ SDE"], _K["DPM++ 2M SDE"], _K["DPM++ 2M SDE Heun"], _K["DPM++ 2S a"], _K["DPM++ 3M SDE"],
    SamplerInfo("Euler a", fn.sample_euler_ancestral, ("k_euler_a", "k_euler_ancestral"),
                uses_ensd=True, params=("eta",)),  # A1111 passes no s_noise to Euler a
    SamplerInfo("Euler", fn.sample_euler, ("k_euler",), params=("s_churn", "s_tmin", "s_tmax", "s_noise")),
    _K["LMS"], _K["Heun"], _K["DPM2"], _K["DPM2 a"], _K["DPM fast"], _K["DPM adaptive"], _K["Restart"],
    SamplerInfo("DDIM", fn.sample_ddim, ("ddim",), kind="timestep", params=("eta",)),
    _T["DDIM CFG++"], _T["PLMS"], _T["UniPC"],
    _K["LCM"],
)
del _K, _T


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
