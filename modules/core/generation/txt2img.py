"""txt2img: prompts → conditioning → seeded noise → sampler → (hires fix) → VAE decode → images.

A job of ``n_iter`` batches of ``batch_size`` images; image k gets seed ``seed + k`` (or ``seed``
with a variation seed) and its own generator, so batches reproduce single images exactly.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from PIL import Image

from modules.core.conditioning.textual_inversion import TextualInversion
from modules.core.generation.hires import HiresPass
from modules.core.generation.job import (
    Batch, Conditioning, GeneratedImage, GenerationOptions, GenerationResult, ModelIdentity, NansError,  # noqa: F401
    Progress, make_conditioner, run_job, seeded_result,
)
from modules.core.generation.img2img import image_conditioning
from modules.core.generation.passes import cfg_denoiser, prepare_sampling
from modules.core.generation.request import InvalidRequest, Txt2ImgRequest
from modules.core.models.loader import StableDiffusionModel
from modules.core.sampling.run import sample


def run_txt2img(
    model: StableDiffusionModel,
    identity: ModelIdentity,
    request: Txt2ImgRequest,
    options: GenerationOptions,
    progress: Progress,
    on_image: Callable[[GeneratedImage], None] = lambda image: None,
    embeddings: Sequence[TextualInversion] = (),
    extra_generation_params: dict | None = None,
    first_pass_image: Image.Image | None = None,
) -> GenerationResult:
    """``embeddings`` are the textual inversions prompts may name (loaded by the model zoo);
    ``extra_generation_params`` are infotext pairs a script adds (written before the job's own).
    ``first_pass_image`` (✨ upscale) replaces the first pass: only the hires pass runs, on it."""
    request = request.validate()
    if first_pass_image is not None and not request.enable_hr:
        raise InvalidRequest("enable_hr", "must be on to upscale an image with hires fix")
    sampling, schedule, unet = prepare_sampling(model, request, options, request.sampler_name, request.scheduler, request.steps)
    result = seeded_result(request, sampling.sampler.name, options)
    result.extra_generation_params = dict(extra_generation_params or {})
    conditioner = make_conditioner(model, options, embeddings)
    hires = HiresPass.create(model, request, options, conditioner, result, sampling) if request.enable_hr else None
    result.extra_generation_params.update(sampling.infotext)
    conditioning = Conditioning(
        conditioner,
        steps=request.steps * (2 if sampling.sampler.second_order else 1),
        old_timelines=options.old_prompt_timelines,
    )
    latent_size = (request.width // model.vae_downscale, request.height // model.vae_downscale)

    def sample_batch(batch: Batch) -> tuple[torch.Tensor, bool]:
        if first_pass_image is not None:
            return hires.run(None, batch, progress, pictures=[first_pass_image.convert("RGB")] * len(batch.rng.seeds))
        x = batch.rng.next()
        denoiser = cfg_denoiser(unet, sampling, batch.cond, batch.uncond, request.cfg_scale, progress,
                                image_cond=image_conditioning(model, x.shape, None, None, 1.0))
        latent, stopped = sample(sampling, request.steps, denoiser, batch.rng, schedule, options.sampler, progress.step,
                                 first_noise=x)
        if hires is None or stopped:
            return latent, stopped
        return hires.run(latent, batch, progress)

    steps = (0 if first_pass_image is not None else request.steps) + (hires.steps if hires else 0)
    return run_job(model, identity, request, options, progress, on_image, result, sampling, conditioning, latent_size,
                   sample_batch, progress_steps=steps)
