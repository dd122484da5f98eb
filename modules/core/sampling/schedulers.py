"""Sigma schedules ("Schedule type" in the UI), by A1111's names and labels.

Each function returns ``steps`` sigmas from high to low followed by a final 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from modules.core.sampling.beta_schedule import beta
from modules.core.sampling.noise_schedule import DiscreteSchedule

ScheduleFn = Callable[[int, float, float, DiscreteSchedule], torch.Tensor]


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def uniform(n: int, sigma_min: float, sigma_max: float, model: DiscreteSchedule) -> torch.Tensor:
    """The model's own evenly spaced timesteps (k-diffusion's ``get_sigmas``)."""
    return model.get_sigmas(n)


def karras(n: int, sigma_min: float, sigma_max: float, model: DiscreteSchedule, rho: float = 7.0) -> torch.Tensor:
    ramp = torch.linspace(0, 1, n)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential(n: int, sigma_min: float, sigma_max: float, model: DiscreteSchedule) -> torch.Tensor:
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def polyexponential(n: int, sigma_min: float, sigma_max: float, model: DiscreteSchedule, rho: float = 1.0) -> torch.Tensor:
    ramp = torch.linspace(1, 0, n) ** rho
    return _append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def sgm_uniform(n: int, sigma_min: float, sigma_max: float, model: DiscreteSchedule) -> torch.Tensor:
    start = model.sigma_to_t(torch.tensor(sigma_max))
    end = model.sigma_to_t(torch.tensor(sigma_min))
    sigmas = [float(model.t_to_sigma(t)) for t in torch.linspace(start, end, n + 1)[:-1]]
    return torch.FloatTensor(sigmas + [0.0])


def kl_optimal(n: int, sigma_min: float, sigma_max: float, model: DiscreteSchedule) -> torch.Tensor:
    alpha_min = torch.arctan(torch.tensor(sigma_min))
    alpha_max = torch.arctan(torch.tensor(sigma_max))
    steps = torch.arange(n + 1)
    return torch.tan(steps / n * alpha_min + (1.0 - steps / n) * alpha_max)


# NVIDIA's "Align Your Steps" 10-step schedule for SD1 (SDXL has its own list; added with SDXL).
_AYS_SD1 = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]


def align_your_steps(n: int, sigma_min: float, sigma_max: float, model: DiscreteSchedule) -> torch.Tensor:
    sigmas = list(_AYS_SD1)
    if n != len(sigmas):
        xs = np.linspace(0, 1, len(sigmas))
        ys = np.log(sigmas[::-1])
        interpolated = np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1]
        return torch.FloatTensor(np.append(interpolated, [0.0]))
    return torch.FloatTensor(sigmas + [0.0])


def simple(n: int, sigma_min: float, sigma_max: float, model: DiscreteSchedule) -> torch.Tensor:
    stride = len(model.sigmas) / n
    sigmas = [float(model.sigmas[-(1 + int(i * stride))]) for i in range(n)]
    return torch.FloatTensor(sigmas + [0.0])


def normal(n: int, sigma_min: float, sigma_max: float, model: DiscreteSchedule) -> torch.Tensor:
    start = model.sigma_to_t(torch.tensor(sigma_max))
    end = model.sigma_to_t(torch.tensor(sigma_min))
    sigmas = [float(model.t_to_sigma(t)) for t in torch.linspace(start, end, n)]
    return torch.FloatTensor(sigmas + [0.0])


def ddim_uniform(n: int, sigma_min: float, sigma_max: float, model: DiscreteSchedule) -> torch.Tensor:
    stride = max(len(model.sigmas) // n, 1)
    sigmas = [float(model.sigmas[i]) for i in range(1, len(model.sigmas), stride)]
    return torch.FloatTensor(sigmas[::-1] + [0.0])


@dataclass(frozen=True)
class Scheduler:
    name: str
    label: str
    function: ScheduleFn | None
    default_rho: float = -1.0
    need_inner_model: bool = False
    aliases: tuple[str, ...] = ()


SCHEDULERS: tuple[Scheduler, ...] = (
    Scheduler("automatic", "Automatic", None),
    Scheduler("uniform", "Uniform", uniform, need_inner_model=True),
    Scheduler("karras", "Karras", karras, default_rho=7.0),
    Scheduler("exponential", "Exponential", exponential),
    Scheduler("polyexponential", "Polyexponential", polyexponential, default_rho=1.0),
    Scheduler("sgm_uniform", "SGM Uniform", sgm_uniform, need_inner_model=True, aliases=("SGMUniform",)),
    Scheduler("kl_optimal", "KL Optimal", kl_optimal),
    Scheduler("align_your_steps", "Align Your Steps", align_your_steps),
    Scheduler("simple", "Simple", simple, need_inner_model=True),
    Scheduler("normal", "Normal", normal, need_inner_model=True),
    Scheduler("ddim", "DDIM", ddim_uniform, need_inner_model=True),
    Scheduler("beta", "Beta", beta, need_inner_model=True),
)


def find_scheduler(name: str | None) -> Scheduler | None:
    """Accepts a name (``karras``), a label (``Karras``) or an alias, case-insensitively."""
    if not name:
        return SCHEDULERS[0]
    wanted = name.strip().lower()
    for scheduler in SCHEDULERS:
        if wanted in (scheduler.name, scheduler.label.lower(), *(a.lower() for a in scheduler.aliases)):
            return scheduler
    return None
