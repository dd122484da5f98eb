"""Sampler step rules as small pure functions with one signature (k-diffusion's formulation).

Sigma samplers: ``fn(denoise, x, sigmas, noise, callback, **options) -> x`` where
``denoise(x, sigma_batch)`` returns the CFG-combined x0 prediction, ``noise.next()`` draws the next
per-image noise tensor shaped like ``x`` (ancestral samplers take it from the same per-image
generators as the initial latent, which keeps a batch identical to its images made one by one),
and ``callback(step, x, denoised)`` reports progress and previews.

Timestep samplers (DDIM) take ``timesteps`` and ``alphas_cumprod`` instead, and their ``denoise``
returns the CFG-combined noise prediction.
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import torch


class NoiseSource(Protocol):
    def next(self) -> torch.Tensor: ...


Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


def _expand(value: torch.Tensor, ndim: int) -> torch.Tensor:
    return value[(...,) + (None,) * (ndim - value.ndim)]


def _to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    return (x - denoised) / _expand(sigma, x.ndim)


def sigma_of(t: torch.Tensor) -> torch.Tensor:
    """σ of log-SNR time t = −log σ (DPM-Solver's time variable)."""
    return t.neg().exp()


def t_of(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.log().neg()


def ancestral_step(sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float = 1.0):
    """Split a step into a deterministic part down to ``sigma_down`` and fresh noise ``sigma_up``."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = torch.minimum(
        sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    )
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def churn(x, sigmas, i, noise: NoiseSource, s_churn, s_tmin, s_tmax, s_noise):
    """Karras et al.'s "churn": raise sigma by gamma and add matching noise. k-diffusion draws the
    noise on every step, used or not, so the per-image generators advance once per step."""
    gamma = min(s_churn / (len(sigmas) - 1), 2**0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
    eps = noise.next() * s_noise
    sigma_hat = sigmas[i] * (gamma + 1)
    if gamma > 0:
        x = x + eps * (sigma_hat**2 - sigmas[i] ** 2) ** 0.5
    return x, sigma_hat


@torch.no_grad()
def sample_euler(denoise: Denoise, x, sigmas, noise: NoiseSource, callback: StepCallback,
                 s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = churn(x, sigmas, i, noise, s_churn, s_tmin, s_tmax, s_noise)
        denoised = denoise(x, sigma_hat * s_in)
        callback(i, x, denoised)
        x = x + _to_d(x, sigma_hat, denoised) * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_euler_ancestral(denoise: Denoise, x, sigmas, noise: NoiseSource, callback: StepCallback,
                           eta=1.0, s_noise=1.0):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        callback(i, x, denoised)
        x = x + _to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise.next() * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoise: Denoise, x, sigmas, noise: NoiseSource, callback: StepCallback):
    """DPM-Solver++(2M): a second-order multistep solver in log-sigma time."""
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        callback(i, x, denoised)
        t, t_next = t_of(sigmas[i]), t_of(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigma_of(t_next) / sigma_of(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - t_of(sigmas[i - 1])) / h
            corrected = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_of(t_next) / sigma_of(t)) * x - (-h).expm1() * corrected
        old_denoised = denoised
    return x


def ddim_timesteps(steps: int) -> torch.Tensor:
    """A1111's timesteps for timestep samplers: every (1000 // steps)-th, shifted by one."""
    return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)


def ddim_tables(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor):
    """ᾱ at each timestep, ᾱ at the timestep before it (ᾱ₀ for the first) in float64, and √(1−ᾱ)."""
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    return alphas, alphas_prev, torch.sqrt(1 - alphas)


@torch.no_grad()
def sample_ddim(denoise_eps: Denoise, x, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor,
                noise: NoiseSource, callback: StepCallback, eta=0.0):
    """DDIM as A1111 runs it: ``len(timesteps) - 1`` model calls, ending at ᾱ of the first timestep."""
    alphas, alphas_prev, sqrt_one_minus_alphas = ddim_tables(timesteps, alphas_cumprod)
    sigmas = eta * np.sqrt((1 - alphas_prev.numpy()) / (1 - alphas.numpy()) * (1 - alphas.numpy() / alphas_prev.numpy()))
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = denoise_eps(x, timesteps[index].item() * s_in)
        a_t = alphas[index].item() * s_in
        a_prev = alphas_prev[index].item() * s_in
        sigma_t = float(sigmas[index]) * s_in
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_in
        pred_x0 = (x - _expand(sqrt_one_minus_at, x.ndim) * e_t) / _expand(a_t.sqrt(), x.ndim)
        dir_xt = _expand((1.0 - a_prev - sigma_t**2).sqrt(), x.ndim) * e_t
        x = _expand(a_prev.sqrt(), x.ndim) * pred_x0 + dir_xt + _expand(sigma_t, x.ndim) * noise.next()
        callback(i, x, pred_x0)
    return x
