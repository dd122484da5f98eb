"""The denoiser wrappers between samplers and the U-Net.

``UNetDenoiser`` turns the U-Net's eps or v output into an x0 prediction for a sigma (k-diffusion's
DiscreteEpsDDPMDenoiser / DiscreteVDDPMDenoiser), or into eps for a timestep (DDIM family).
``CFGDenoiser`` runs cond and uncond through it in one batch when their token lengths agree,
combines them with the CFG scale on the x0 (or eps) predictions as A1111 does, counts steps for
prompt schedules, and stops sampling when asked to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from diffusers import UNet2DConditionModel

from modules.core.conditioning import cond as conds
from modules.core.conditioning.cond import Cond, SdxlConditioning
from modules.core.conditioning.scheduled import CondsList
from modules.core.sampling.noise_schedule import DiscreteSchedule, LCMSchedule


class SamplingInterrupted(Exception):
    """Raised inside the denoiser when the user interrupts or skips; the runner catches it."""


class UNetDenoiser:
    def __init__(self, unet: UNet2DConditionModel, schedule: DiscreteSchedule, prediction_type: str,
                 sdxl: SdxlConditioning | None = None):
        self.unet = unet
        self.schedule = schedule
        self.v_prediction = prediction_type == "v_prediction"
        self.sdxl = sdxl

    def _unet(self, x: torch.Tensor, t: torch.Tensor, context: Cond, image_cond: torch.Tensor | None) -> torch.Tensor:
        dtype = self.unet.dtype
        if self.sdxl is not None:
            kwargs = self.sdxl.unet_kwargs(context, x, dtype)
        else:
            kwargs = {"encoder_hidden_states": context.to(dtype)}
        if image_cond is not None:  # inpainting U-Nets take the mask and masked image as extra channels
            x = torch.cat([x, image_cond.to(x)], dim=1)
        out = self.unet(x.to(dtype), t, return_dict=False, **kwargs)[0]
        return out.float()

    def x0(self, x: torch.Tensor, sigma: torch.Tensor, context: Cond,
           image_cond: torch.Tensor | None = None) -> torch.Tensor:
        sigma_b = sigma[:, None, None, None]
        c_in = 1 / (sigma_b**2 + 1) ** 0.5
        out = self._unet(x * c_in, self.schedule.sigma_to_t(sigma), context, image_cond)
        if self.v_prediction:
            c_skip = 1 / (sigma_b**2 + 1)
            c_out = -sigma_b / (sigma_b**2 + 1) ** 0.5
            return out * c_out + x * c_skip
        return x + out * -sigma_b

    def eps(self, x: torch.Tensor, timestep: torch.Tensor, context: Cond,
            image_cond: torch.Tensor | None = None) -> torch.Tensor:
        out = self._unet(x, timestep, context, image_cond)
        if not self.v_prediction:
            return out
        alphas = self.schedule.alphas_cumprod.to(x.device)[timestep.to(torch.long)][:, None, None, None]
        return alphas.sqrt() * out + (1 - alphas).sqrt() * x


class LCMDenoiser(UNetDenoiser):
    """A1111's LCM denoiser: the eps-model x0 prediction at the nearest LCM timestep, blended with
    the input by the consistency-model boundary condition (σ_data 0.5, timestep scaled by 10)."""

    schedule: LCMSchedule

    def x0(self, x: torch.Tensor, sigma: torch.Tensor, context: Cond,
           image_cond: torch.Tensor | None = None) -> torch.Tensor:
        predicted = super().x0(x, sigma, context, image_cond)
        scaled_t = self.schedule.sigma_to_t(sigma)[:, None, None, None] * 10.0
        c_skip = 0.5**2 / (scaled_t**2 + 0.5**2)
        c_out = scaled_t / (scaled_t**2 + 0.5**2) ** 0.5
        return c_out * predicted + c_skip * x


@dataclass
class CFGDenoiserParams:
    """What a ``before`` denoiser hook gets (A1111's ``CFGDenoiserParams``): the U-Net batch about to
    run (every image's cond rows, then the uncond rows) as ``x``, ``sigma`` and ``image_cond`` (None
    without image conditioning), and the text conditioning ``text_cond`` / ``text_uncond`` (a tensor,
    or for SDXL a dict with "crossattn" and "vector"). A hook may change any of them in place or
    replace them; the batch runs with what they hold afterwards."""

    x: torch.Tensor
    image_cond: torch.Tensor | None
    sigma: torch.Tensor
    sampling_step: int
    total_sampling_steps: int
    text_cond: Cond
    text_uncond: Cond
    denoiser: Any = None


@dataclass
class CFGDenoisedParams:
    """What a ``denoised`` hook gets (A1111's ``CFGDenoisedParams``): ``x``, the U-Net batch's
    predictions (cond rows, then uncond rows) before guidance combines them; ``inner_model`` the
    U-Net wrapper."""

    x: torch.Tensor
    sampling_step: int
    total_sampling_steps: int
    inner_model: Any = None


@dataclass
class AfterCFGCallbackParams:
    """What an ``after_cfg`` hook gets (A1111's ``AfterCFGCallbackParams``): ``x``, the guided
    prediction handed to the sampler, which a hook may replace."""

    x: torch.Tensor
    sampling_step: int
    total_sampling_steps: int


@dataclass(frozen=True)
class DenoiserHooks:
    """Callables run around each prediction (A1111's ``on_cfg_denoiser``, ``on_cfg_denoised`` and
    ``on_cfg_after_cfg`` events)."""

    before: Callable[[CFGDenoiserParams], None] | None = None
    denoised: Callable[[CFGDenoisedParams], None] | None = None
    after_cfg: Callable[[AfterCFGCallbackParams], None] | None = None


class CFGDenoiser:
    """Classifier-free guidance over composable prompts, as A1111's CFGDenoiser.

    ``conditioning(step)`` gives the stacked cond rows and, per image, its (row, weight) list;
    ``uncond_at(step)`` one uncond row per image. The U-Net batch is each image's cond rows in
    order, then the uncond rows; one call when the token lengths agree, otherwise cond rows and
    uncond rows go separately. Result per image: ``uncond + Σ weight·scale·(cond − uncond)``.

    ``image_cond`` (one row per image) is fed to inpainting U-Nets beside every row of that image.
    With a ``blend`` (inpainting), the kept area is reset to the initial latent after each
    prediction, or, for timestep samplers, in the input before it (A1111's ``mask_before_denoising``).

    ``hooks`` see (and may change) each U-Net batch, its predictions and the guided result.
    ``sampling_step`` and ``total_sampling_steps`` are what they are told: the sampler sets the
    total when it starts and the step from its per-step callback (A1111's ``state.sampling_step``,
    the last finished step's index, 0 until the first finishes).
    """

    def __init__(
        self,
        model: UNetDenoiser,
        conditioning: Callable[[int], tuple[Cond, CondsList]],
        uncond_at: Callable[[int], Cond],
        cfg_scale: float,
        timestep_kind: bool = False,
        should_stop: Callable[[], bool] = lambda: False,
        image_cond: torch.Tensor | None = None,
        blend: "LatentBlend | None" = None,
        before_step: Callable[["CFGDenoiser", torch.Tensor, torch.Tensor], None] | None = None,
        hooks: DenoiserHooks | None = None,
    ):
        """``before_step(denoiser, x, sigma)`` runs before each prediction; it may hand the rest of
        the sampling to another model with ``switch_model`` (the SDXL refiner)."""
        self.before_step = before_step
        self.timestep_kind = timestep_kind
        self.model = model
        self.conditioning = conditioning
        self.uncond_at = uncond_at
        self.cfg_scale = cfg_scale
        self.predict = model.eps if timestep_kind else model.x0
        self.should_stop = should_stop
        self.image_cond = image_cond
        self.blend = blend
        self.blend_input = timestep_kind
        self.step = 0
        self.hooks = hooks
        self.sampling_step = 0
        self.total_sampling_steps = 0
        self.last_uncond: torch.Tensor | None = None  # CFG++ samplers step along the uncond prediction

    def switch_model(self, model: UNetDenoiser, conditioning: Callable[[int], tuple[Cond, CondsList]],
                     uncond_at: Callable[[int], Cond], image_cond: torch.Tensor | None) -> None:
        """Go on sampling with another model (and its own text conditioning); the step count and
        the sampler's state carry on."""
        self.model = model
        self.predict = model.eps if self.timestep_kind else model.x0
        self.conditioning, self.uncond_at, self.image_cond = conditioning, uncond_at, image_cond

    def completed_ratio(self, sigma: torch.Tensor) -> float:
        """How far sampling has come, read from the noise level as A1111 reads it for the refiner:
        (999 − the training timestep nearest to the largest sigma) / 1000."""
        if self.timestep_kind:
            timestep = int(sigma.max())
        else:
            sigmas = self.model.schedule.sigmas.to(sigma.device)
            timestep = int(torch.argmin((sigmas - sigma.max()).abs()))
        return (999 - timestep) / 1000

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.should_stop():
            raise SamplingInterrupted()
        if self.before_step is not None:
            self.before_step(self, x, sigma)
        if self.blend is not None and self.blend_input:
            x = self.blend(x)
        cond, conds_list = self.conditioning(self.step)
        uncond = self.uncond_at(self.step)
        repeats = torch.tensor([len(rows) for rows in conds_list], device=x.device)
        x_cond = torch.repeat_interleave(x, repeats, dim=0)
        sigma_cond = torch.repeat_interleave(sigma, repeats, dim=0)
        image = self.image_cond
        image_cond = None if image is None else torch.repeat_interleave(image, repeats, dim=0)
        x_uncond, sigma_uncond = x, sigma
        hooks = self.hooks
        if hooks is not None and hooks.before is not None:
            rows = x_cond.shape[0]
            params = CFGDenoiserParams(torch.cat([x_cond, x]), None if image is None else torch.cat([image_cond, image]),
                                       torch.cat([sigma_cond, sigma]), self.sampling_step, self.total_sampling_steps,
                                       cond, uncond, self)
            hooks.before(params)
            x_cond, x_uncond = params.x[:rows], params.x[rows:]
            sigma_cond, sigma_uncond = params.sigma[:rows], params.sigma[rows:]
            if params.image_cond is not None:
                image_cond, image = params.image_cond[:rows], params.image_cond[rows:]
            cond, uncond = params.text_cond, params.text_uncond
        if conds.token_count(cond) == conds.token_count(uncond):
            both = None if image is None else torch.cat([image_cond, image])
            out = self.predict(torch.cat([x_cond, x_uncond]), torch.cat([sigma_cond, sigma_uncond]),
                               conds.cat([cond, uncond]), both)
        else:
            out = torch.cat([self.predict(x_cond, sigma_cond, cond, image_cond),
                             self.predict(x_uncond, sigma_uncond, uncond, image)])
        if hooks is not None and hooks.denoised is not None:
            params = CFGDenoisedParams(out, self.sampling_step, self.total_sampling_steps, self.model)
            hooks.denoised(params)
            out = params.x
        out_cond, out_uncond = out[: x_cond.shape[0]], out[x_cond.shape[0] :]
        self.step += 1
        self.last_uncond = out_uncond
        denoised = self._combine(out_cond, out_uncond, conds_list)
        if self.blend is not None and not self.blend_input:
            denoised = self.blend(denoised)
        if hooks is not None and hooks.after_cfg is not None:
            params = AfterCFGCallbackParams(denoised, self.sampling_step, self.total_sampling_steps)
            hooks.after_cfg(params)
            denoised = params.x
        return denoised

    def _combine(self, out_cond: torch.Tensor, out_uncond: torch.Tensor, conds_list: CondsList) -> torch.Tensor:
        if all(len(rows) == 1 and rows[0][1] == 1.0 for rows in conds_list):
            return out_uncond + (out_cond - out_uncond) * self.cfg_scale  # the common case, one fused op
        denoised = out_uncond.clone()
        for image, rows in enumerate(conds_list):
            for row, weight in rows:
                denoised[image] += (out_cond[row] - out_uncond[image]) * (weight * self.cfg_scale)
        return denoised


class LatentBlend:
    """Inpainting's latent mask: ``mask`` 1 where the original stays, ``nmask`` = 1 − mask."""

    def __init__(self, init_latent: torch.Tensor, mask: torch.Tensor, nmask: torch.Tensor):
        self.init_latent = init_latent
        self.mask = mask
        self.nmask = nmask

    def __call__(self, latent: torch.Tensor) -> torch.Tensor:
        return latent * self.nmask + self.init_latent * self.mask
