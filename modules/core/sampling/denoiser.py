"""The denoiser wrappers between samplers and the U-Net.

``UNetDenoiser`` turns the U-Net's eps or v output into an x0 prediction for a sigma (k-diffusion's
DiscreteEpsDDPMDenoiser / DiscreteVDDPMDenoiser), or into eps for a timestep (DDIM family).
``CFGDenoiser`` runs cond and uncond through it in one batch when their token lengths agree,
combines them with the CFG scale on the x0 (or eps) predictions as A1111 does, counts steps for
prompt schedules, and stops sampling when asked to.
"""

from __future__ import annotations

from typing import Callable

import torch
from diffusers import UNet2DConditionModel

from modules.core.sampling.noise_schedule import DiscreteSchedule


class SamplingInterrupted(Exception):
    """Raised inside the denoiser when the user interrupts or skips; the runner catches it."""


class UNetDenoiser:
    def __init__(self, unet: UNet2DConditionModel, schedule: DiscreteSchedule, prediction_type: str):
        self.unet = unet
        self.schedule = schedule
        self.v_prediction = prediction_type == "v_prediction"

    def _unet(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        dtype = self.unet.dtype
        out = self.unet(x.to(dtype), t, encoder_hidden_states=context.to(dtype), return_dict=False)[0]
        return out.float()

    def x0(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        sigma_b = sigma[:, None, None, None]
        c_in = 1 / (sigma_b**2 + 1) ** 0.5
        out = self._unet(x * c_in, self.schedule.sigma_to_t(sigma), context)
        if self.v_prediction:
            c_skip = 1 / (sigma_b**2 + 1)
            c_out = -sigma_b / (sigma_b**2 + 1) ** 0.5
            return out * c_out + x * c_skip
        return x + out * -sigma_b

    def eps(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        out = self._unet(x, timestep, context)
        if not self.v_prediction:
            return out
        alphas = self.schedule.alphas_cumprod.to(x.device)[timestep.to(torch.long)][:, None, None, None]
        return alphas.sqrt() * out + (1 - alphas).sqrt() * x


class CFGDenoiser:
    """Classifier-free guidance: ``uncond + cfg_scale · (cond − uncond)`` per image."""

    def __init__(
        self,
        model: UNetDenoiser,
        cond_at: Callable[[int], torch.Tensor],
        uncond_at: Callable[[int], torch.Tensor],
        cfg_scale: float,
        timestep_kind: bool = False,
        should_stop: Callable[[], bool] = lambda: False,
    ):
        self.model = model
        self.cond_at = cond_at
        self.uncond_at = uncond_at
        self.cfg_scale = cfg_scale
        self.predict = model.eps if timestep_kind else model.x0
        self.should_stop = should_stop
        self.step = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.should_stop():
            raise SamplingInterrupted()
        cond, uncond = self.cond_at(self.step), self.uncond_at(self.step)
        batch = x.shape[0]
        if cond.shape[1] == uncond.shape[1]:
            out = self.predict(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([cond, uncond]))
            out_cond, out_uncond = out[:batch], out[batch:]
        else:
            out_cond = self.predict(x, sigma, cond)
            out_uncond = self.predict(x, sigma, uncond)
        self.step += 1
        return out_uncond + (out_cond - out_uncond) * self.cfg_scale
