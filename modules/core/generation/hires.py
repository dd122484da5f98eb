"""Hires fix: the second pass of txt2img (A1111's ``StableDiffusionProcessingTxt2Img.sample_hr_pass``).

The first pass's latents are upscaled (in latent space by interpolation, or decoded, upscaled as
pictures and encoded again), cropped to the target, noised with a fresh generator of the same seeds
at the new size, and sampled again as img2img with fixed steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from modules.core.conditioning.clip_text import ClipTextConditioner
from modules.core.conditioning.prompt_parser import strip_comments
from modules.core.generation.image_ops import resize_image
from modules.core.generation.img2img import image_conditioning
from modules.core.generation.job import (
    Batch, BatchHooks, Conditioning, GenerationOptions, GenerationResult, Progress, batch_rng, decode_to_pixels, encode_images,
    image_tensor, to_pixels,
)
from modules.core.generation.passes import cfg_denoiser, prepare_sampling
from modules.core.generation.request import IMAGE_UPSCALERS, LATENT_UPSCALE_MODES, InvalidRequest, Txt2ImgRequest
from modules.core.models.loader import StableDiffusionModel
from modules.core.sampling.run import SamplingPlan, plan, sample_img2img, schedule_label
from modules.core.sampling.samplers import resolve_sampler


@dataclass(frozen=True)
class HiresTarget:
    width: int  # what the first pass is upscaled to
    height: int
    truncate_x: int = 0  # latent columns/rows cut off to reach a "resize to W×H" that changes the aspect
    truncate_y: int = 0

    @property
    def final_size(self) -> tuple[int, int]:
        return self.width - 8 * self.truncate_x, self.height - 8 * self.truncate_y


def hires_target(width: int, height: int, scale: float, resize_x: int, resize_y: int, latent_factor: int = 8) -> HiresTarget:
    """A1111's target rule: scale when both resize values are 0; one resize value keeps the aspect
    ratio; both cover the box and the latent is cropped symmetrically to it."""
    if resize_x == 0 and resize_y == 0:
        return HiresTarget(int(width * scale), int(height * scale))
    if resize_y == 0:
        return HiresTarget(resize_x, resize_x * height // width)
    if resize_x == 0:
        return HiresTarget(resize_y * width // height, resize_y)
    if width / height < resize_x / resize_y:
        w, h = resize_x, resize_x * height // width
    else:
        w, h = resize_y * width // height, resize_y
    return HiresTarget(w, h, (w - resize_x) // latent_factor, (h - resize_y) // latent_factor)


def add_hires_infotext(request: Txt2ImgRequest, options: GenerationOptions, result: GenerationResult,
                       first_pass: SamplingPlan, hires_checkpoint: str | None = None) -> None:
    """The hires keys, in A1111's order, after the script's and before the samplers' own."""
    steps = request.hr_second_pass_steps or request.steps
    sampler, scheduler = resolve_sampler(request.hr_sampler_name or request.sampler_name, request.hr_scheduler or request.scheduler)
    sampling = plan(sampler, scheduler, options.sampler, request.eta)
    hr_prompt, hr_negative = _hires_prompts(request, options)
    extra = result.extra_generation_params
    extra["Denoising strength"] = request.denoising_strength
    if hires_checkpoint:
        extra["Hires checkpoint"] = hires_checkpoint
    if sampler.name != first_pass.sampler.name:
        extra["Hires sampler"] = sampler.name
    if hr_prompt and hr_prompt != result.all_prompts[0]:
        extra["Hires prompt"] = hr_prompt
    if hr_negative and hr_negative != result.all_negative_prompts[0]:
        extra["Hires negative prompt"] = hr_negative
    hires_label, first_label = schedule_label(sampling), schedule_label(first_pass)
    extra["Hires schedule type"] = hires_label if hires_label != first_label else None
    if request.hr_resize_x == 0 and request.hr_resize_y == 0:
        extra["Hires upscale"] = request.hr_scale
    else:
        extra["Hires resize"] = f"{request.hr_resize_x}x{request.hr_resize_y}"
    if request.hr_second_pass_steps:
        extra["Hires steps"] = steps
    extra["Hires upscaler"] = request.hr_upscaler


def _hires_prompts(request: Txt2ImgRequest, options: GenerationOptions) -> tuple[str, str]:
    clean = strip_comments if options.strip_comments else (lambda text: text)
    return clean(request.hr_prompt), clean(request.hr_negative_prompt)


class HiresPass:
    """The second pass on one loaded model."""

    def __init__(self, model: StableDiffusionModel, request: Txt2ImgRequest, options: GenerationOptions,
                 conditioner: ClipTextConditioner, result: GenerationResult):
        self.model = model
        self.request = request
        self.options = options
        self.steps = request.hr_second_pass_steps or request.steps
        self.sampling, self.schedule, self.unet = prepare_sampling(
            model, request, options, request.hr_sampler_name or request.sampler_name,
            request.hr_scheduler or request.scheduler, self.steps, "hr_second_pass_steps")
        self.target = hires_target(request.width, request.height, request.hr_scale, request.hr_resize_x,
                                   request.hr_resize_y, model.vae_downscale)
        total = self.steps * (2 if self.sampling.sampler.second_order else 1)
        self.conditioning = Conditioning(conditioner, request.steps, options.old_prompt_timelines, hires_steps=total)
        hr_prompt, hr_negative = _hires_prompts(request, options)
        self.prompts = [hr_prompt or prompt for prompt in result.all_prompts]
        self.negatives = [hr_negative or negative for negative in result.all_negative_prompts]

    def upscale(self, latent: torch.Tensor | None, pictures: list | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """First-pass latents, or first-pass ``pictures`` (✨ on a finished image) → (latents at the
        target size, inpainting-model image conditioning)."""
        model, target = self.model, self.target
        factor = model.vae_downscale
        mode = LATENT_UPSCALE_MODES.get(self.request.hr_upscaler)
        if mode is not None and latent is None:
            latent = encode_images(model, image_tensor(pictures))
        if mode is not None:
            interpolation, antialias = mode
            upscaled = torch.nn.functional.interpolate(
                latent, size=(target.height // factor, target.width // factor), mode=interpolation, antialias=antialias
            )
            pixels = None
        else:
            if pictures is None:
                pictures = to_pixels(decode_to_pixels(model, latent, self.options.auto_vae_precision))
            name = self.request.hr_upscaler
            upscaler = self.options.upscaler_models.get(name) if name not in IMAGE_UPSCALERS else None
            if name not in IMAGE_UPSCALERS and upscaler is None:
                raise InvalidRequest("hr_upscaler", f"upscaler {name!r} not found")
            pictures = [resize_image(0, picture, target.width, target.height, name, upscaler) for picture in pictures]
            pixels = image_tensor(pictures)
            upscaled = encode_images(model, pixels)
        tx, ty = target.truncate_x, target.truncate_y
        upscaled = upscaled[:, :, ty // 2 : upscaled.shape[2] - (ty + 1) // 2, tx // 2 : upscaled.shape[3] - (tx + 1) // 2]
        return upscaled, image_conditioning(model, upscaled.shape, pixels, None, self.options.inpainting_mask_weight)

    def run(self, latent: torch.Tensor | None, batch: Batch, progress: Progress,
            pictures: list | None = None, before_step=None, hooks: BatchHooks | None = None) -> tuple[torch.Tensor, bool]:
        """``hooks``: the job's, whose ``before_sampling`` and ``denoiser`` hooks hear this pass too."""
        upscaled, image_cond = self.upscale(latent, pictures)
        rng = batch_rng(self.model, self.request, self.options, batch.rng.seeds, batch.rng.subseeds, upscaled.shape[1:])
        noise = rng.next()
        cond = self.conditioning.cond(self.prompts[batch.span])
        uncond = self.conditioning.uncond(self.negatives[batch.span])
        denoiser = cfg_denoiser(self.unet, self.sampling, cond, uncond, self.request.cfg_scale, progress, image_cond=image_cond,
                                before_step=before_step, hooks=hooks.denoiser if hooks is not None else None)
        if hooks is not None and hooks.before_sampling is not None:
            hooks.before_sampling(batch.number, upscaled, noise, cond, uncond)
        return sample_img2img(self.sampling, self.steps, denoiser, noise, upscaled, self.request.denoising_strength, True,
                              rng, self.schedule, self.options.sampler, progress.step)
