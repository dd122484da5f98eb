"""The training noise schedule of LDM-family models and the discrete sigma table built from it."""

from __future__ import annotations

import numpy as np
import torch


def training_alphas_cumprod(beta_start: float, beta_end: float, steps: int) -> torch.Tensor:
    """LDM's "linear" schedule (diffusers: scaled_linear), computed in float64 like the original
    code and stored as float32, so sigmas match A1111's to the last bit."""
    betas = np.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=np.float64) ** 2
    return torch.tensor(np.cumprod(1.0 - betas, axis=0), dtype=torch.float32)


class DiscreteSchedule:
    """Sigmas of the model's training timesteps, with continuous conversions between t and sigma
    (k-diffusion's DiscreteSchedule, non-quantized, as A1111 uses it by default)."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        self.alphas_cumprod = alphas_cumprod.float()
        self.sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()

    @property
    def sigma_min(self) -> float:
        return self.sigmas[0].item()

    @property
    def sigma_max(self) -> float:
        return self.sigmas[-1].item()

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigmas = self.log_sigmas.to(sigma.device)
        log_sigma = sigma.log()
        dists = log_sigma - log_sigmas[:, None]
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = log_sigmas[low_idx], log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        return ((1 - w) * low_idx + w * high_idx).view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        log_sigmas = self.log_sigmas.to(t.device)
        t = t.float()
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * log_sigmas[low_idx] + w * log_sigmas[high_idx]).exp()

    def get_sigmas(self, n: int) -> torch.Tensor:
        """``n`` sigmas at evenly spaced timesteps from the last to the first, then 0 (what "Uniform"
        and a sampler without a default schedule use)."""
        t = torch.linspace(len(self.sigmas) - 1, 0, n)
        return torch.cat([self.t_to_sigma(t), t.new_zeros([1])])


class LCMSchedule(DiscreteSchedule):
    """The schedule A1111's LCM sampler runs on (``LCMCompVisDenoiser``): the 50 training timesteps
    19, 39, …, 999 that LCM was distilled on. A sigma maps to the nearest of them (a whole training
    timestep), and a timestep back to a sigma by log-sigma interpolation over the 50."""

    ORIGINAL_STEPS = 50

    def __init__(self, alphas_cumprod: torch.Tensor):
        self.skip = len(alphas_cumprod) // self.ORIGINAL_STEPS
        super().__init__(alphas_cumprod[self.skip - 1 :: self.skip][: self.ORIGINAL_STEPS])

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        dists = sigma.log() - self.log_sigmas.to(sigma.device)[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape) * self.skip + (self.skip - 1)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        index = torch.clamp(((t - (self.skip - 1)) / self.skip).float(), min=0, max=len(self.sigmas) - 1)
        return super().t_to_sigma(index)

    def get_sigmas(self, n: int) -> torch.Tensor:
        start = self.sigma_to_t(self.sigmas[-1])
        end = self.sigma_to_t(self.sigmas[0])
        sigmas = self.t_to_sigma(torch.linspace(start, end, n))
        return torch.cat([sigmas, sigmas.new_zeros([1])])
