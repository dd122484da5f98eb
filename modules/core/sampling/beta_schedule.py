"""The "Beta" schedule type (A1111 1.10 ``sd_schedulers.beta_scheduler``, after "Beta Sampling is All
You Need", Lee et al. 2024, arXiv:2407.12173).

A1111 places the Beta(α, β) quantiles of an even ramp *linearly between sigma_min and sigma_max* — it
does not map them through the model's timesteps (ComfyUI and Forge do; their sigmas differ). The
quantiles are taken in float64 and the list is stored as float32, as A1111 does.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from modules.core.sampling.noise_schedule import DiscreteSchedule


def beta(n: int, sigma_min: float, sigma_max: float, model: DiscreteSchedule,
         alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """``n`` sigmas from ``sigma_max`` down to ``sigma_min``, then 0; ``alpha``/``beta`` come from the
    ``beta_dist_alpha``/``beta_dist_beta`` settings. ``model`` is unused (A1111 asks for it all the same)."""
    quantiles = stats.beta.ppf(1 - np.linspace(0, 1, n), alpha, beta)
    sigmas = sigma_min + quantiles * (sigma_max - sigma_min)
    return torch.FloatTensor([*sigmas.tolist(), 0.0])
