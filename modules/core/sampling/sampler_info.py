"""What the runner needs to know about one sampler (its own module so the sampler lists can import it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class SamplerInfo:
    name: str
    function: Callable
    aliases: tuple[str, ...] = ()
    kind: str = "sigma"  # "sigma" (k-diffusion style) or "timestep" (DDIM family)
    default_scheduler: str | None = None  # what "Automatic" means for this sampler
    uses_ensd: bool = False  # its step noise comes from the (ENSD-reseeded) per-image generators
    # Option keywords the function takes, filled by the runner: eta, s_churn, s_tmin, s_tmax, s_noise,
    # sigma_min and sigma_max (the model's range, for DPM fast/adaptive).
    params: tuple[str, ...] = ()
    second_order: bool = False  # two model calls per step (prompt schedules count both)
    brownian: bool = False  # SDE sampler: gets ``noise_sampler(sigma, sigma_next)``, a per-image Brownian tree
    discard_penultimate: bool = False  # schedule for steps+1, then drop the next-to-last sigma
    fixed: dict = field(default_factory=dict)  # constant keyword arguments (e.g. solver_type="heun")
    cfg_scale_multiplier: float = 1.0  # CFG++ samplers guide with cfg_scale × this
    consistency: bool = False  # LCM: runs on LCMSchedule with the LCMDenoiser

    @property
    def takes_eta(self) -> bool:
        return "eta" in self.params
