"""The file-name pattern values of one generated image: what A1111's ``FilenameGenerator`` reads from
``p``, the picture and the loaded model, gathered from the request and the image."""

from __future__ import annotations

from pathlib import Path

from modules.core.conditioning.prompt_parser import extract_extra_networks
from modules.core.generation.job import GeneratedImage
from modules.core.generation.request import Img2ImgRequest, Txt2ImgRequest
from modules.core.images import NameFields
from modules.core.sampling.samplers import UnknownSamplerError, resolve_sampler


def name_fields(image: GeneratedImage, request: Txt2ImgRequest, *, model_name: str = "", model_hash: str | None = None,
                vae_path: Path | None = None, clip_skip: int = 1, job_timestamp: str = "", max_prompt_words: int = 8,
                style_prompts: tuple[str, ...] = ()) -> NameFields:
    sampler, scheduler = sampler_and_scheduler(request.sampler_name, request.scheduler)
    # The job's seeds as A1111 lays them out (``seeded_result``): seed + k, or one seed for all
    # images when a variation seed is mixed in.
    vary = request.subseed_strength == 0
    first_seed = image.seed - (image.index if vary else 0)
    count = request.batch_size * request.n_iter
    hires = isinstance(request, Img2ImgRequest) or request.enable_hr
    return NameFields(
        seed=image.seed,
        prompt=extract_extra_networks(image.prompt)[0],  # A1111 names files after p.prompts, tags parsed out
        steps=request.steps, cfg=request.cfg_scale, width=image.image.width, height=image.image.height,
        sampler=sampler, scheduler=scheduler, model_name=model_name, model_hash=model_hash,
        vae_filename=vae_filename(vae_path), job_timestamp=job_timestamp,
        request_prompt=request.prompt, negative_prompt=request.negative_prompt, style_prompts=style_prompts,
        seed_first=first_seed, seed_last=first_seed + (count - 1 if vary else 0),
        batch_size=request.batch_size, n_iter=request.n_iter, index=image.index, clip_skip=clip_skip,
        denoising=request.denoising_strength if hires else None, max_prompt_words=max_prompt_words,
    )


def sampler_and_scheduler(sampler_name: str, scheduler_name: str) -> tuple[str, str]:
    """The sampler's name and A1111's file-name text for the scheduler: "Automatic" resolved to the
    sampler's own default where it has one, then ``str.capitalize``d ("Karras", "Sgm uniform")."""
    try:
        sampler, scheduler = resolve_sampler(sampler_name, scheduler_name)
    except UnknownSamplerError:
        return sampler_name, (scheduler_name or "Automatic").capitalize()
    text = scheduler.label if scheduler.function is not None else sampler.default_scheduler or "Automatic"
    return sampler.name, text.capitalize()


def vae_filename(path: Path | None) -> str:
    """A1111's ``[vae_filename]``: the VAE file's name up to its first dot (after a leading one),
    ``NoneType`` while the checkpoint's own VAE is in use."""
    if path is None:
        return "NoneType"
    parts = Path(path).name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "" else parts[0]
