"""img2img, sketch and inpainting (A1111's ``StableDiffusionProcessingImg2Img``).

Once per job the input pictures are flattened, resized (or, for "only masked", cropped around the
mask and scaled up), filled where the masked content asks for it, and VAE-encoded; the mask becomes
a latent blend and, for inpainting U-Nets, extra input channels. Each batch then noises the
initial latent to the point the denoising strength picks and samples down from there; the kept area
is blended back after every step and at the end, and the untouched original is composited over the
decoded picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from modules.core.conditioning.textual_inversion import TextualInversion
from modules.core.generation import image_ops
from modules.core.generation.job import (
    Batch, BatchHooks, Conditioning, GeneratedImage, GenerationOptions, GenerationResult, ModelIdentity, Progress, PromptLists, batch_rng,
    encode_images, image_tensor, make_conditioner, reserve_network_keys, run_job, seeded_result,
)
from modules.core.generation.passes import ModelSwitch, RefinerSwitch, cfg_denoiser, prepare_sampling
from modules.core.generation.request import Img2ImgRequest
from modules.core.models.hypernetwork import HypernetworkSource
from modules.core.models.loader import StableDiffusionModel
from modules.core.models.lora import LoraSource
from modules.core.sampling.denoiser import LatentBlend
from modules.core.sampling.run import img2img_steps, sample_img2img


def binary_mask(mask: Image.Image) -> Image.Image:
    """An RGBA mask with real transparency means its alpha (rounded at 128); anything else its grey."""
    if mask.mode == "RGBA" and mask.getextrema()[-1] != (255, 255):
        return mask.split()[-1].convert("L").point(lambda value: 255 if value > 128 else 0)
    return mask.convert("L")


def image_conditioning(model: StableDiffusionModel, latent_shape: Sequence[int], pixels: torch.Tensor | None,
                       mask: Image.Image | None, mask_weight: float) -> torch.Tensor | None:
    """The extra U-Net input of inpainting models (9 channels): the (rounded) mask at latent size and
    the encoded picture with the masked part greyed out by ``mask_weight``. None for other models."""
    if model.unet.config.in_channels != 9:
        return None
    if pixels is None:  # a whole new picture: everything masked, the masked picture plain grey
        pixels = torch.full((1, 3, latent_shape[2] * model.vae_downscale, latent_shape[3] * model.vae_downscale), 0.5)
        mask, mask_weight = None, 1.0
    if mask is None:
        cond_mask = torch.ones(1, 1, *pixels.shape[-2:])
    else:
        cond_mask = torch.from_numpy(np.round(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)[None, None])
    source = pixels * 2.0 - 1.0
    masked = torch.lerp(source, source * (1.0 - cond_mask), mask_weight)
    encoded = encode_images(model, (masked + 1.0) / 2.0)
    cond_mask = torch.nn.functional.interpolate(cond_mask, size=tuple(latent_shape[-2:])).to(encoded)
    rows = torch.cat([cond_mask.expand(encoded.shape[0], -1, -1, -1), encoded], dim=1)
    return rows.expand(latent_shape[0], -1, -1, -1) if rows.shape[0] == 1 else rows


@dataclass
class PreparedImages:
    """The job-wide inputs of an img2img job."""

    init_latent: torch.Tensor
    pixels: torch.Tensor  # the processed pictures in [0, 1], (B, 3, H, W)
    image_mask: Image.Image | None = None  # at processing size, after blur
    blend: LatentBlend | None = None
    overlays: list[Image.Image] | None = None
    paste_to: tuple[int, int, int, int] | None = None
    extra: dict = field(default_factory=dict)


def prepare_images(model: StableDiffusionModel, request: Img2ImgRequest, options: GenerationOptions,
                   seeds: Sequence[int]) -> PreparedImages:
    width, height = request.width, request.height
    extra: dict = {}
    image_mask = binary_mask(request.mask) if request.mask is not None else None
    crop = None
    paste_to = None
    mask_for_overlay = None
    if image_mask is not None:
        if request.inpainting_mask_invert:
            image_mask = ImageOps.invert(image_mask)
            extra["Mask mode"] = "Inpaint not masked"
        if request.mask_blur > 0:
            image_mask = image_ops.blur_mask(image_mask, request.mask_blur)
            extra["Mask blur"] = request.mask_blur
        if request.inpaint_full_res:
            mask_for_overlay = image_mask
            crop = image_ops.crop_region(image_mask, request.inpaint_full_res_padding)
            if crop is not None:
                crop = image_ops.expand_crop_region(crop, width, height, image_mask.width, image_mask.height)
                x1, y1, x2, y2 = crop
                image_mask = image_ops.resize_image(2, image_mask.crop(crop), width, height)
                paste_to = (x1, y1, x2 - x1, y2 - y1)
                extra["Inpaint area"] = "Only masked"
                extra["Masked area padding"] = request.inpaint_full_res_padding
            else:  # nothing masked: plain img2img, as A1111
                image_mask = mask_for_overlay = None
        else:
            image_mask = image_ops.resize_image(request.resize_mode, image_mask, width, height)
            doubled = np.clip(np.asarray(image_mask.convert("L"), dtype=np.float32) * 2, 0, 255).astype(np.uint8)
            mask_for_overlay = Image.fromarray(doubled)
    latent_mask = request.latent_mask if request.latent_mask is not None else image_mask

    pictures, overlays = [], []
    for source in request.init_images:
        picture = image_ops.flatten(source, options.img2img_background_color)
        if crop is None and request.resize_mode != 3:
            picture = image_ops.resize_image(request.resize_mode, picture, width, height)
        if image_mask is not None:
            if mask_for_overlay.size != picture.size:
                mask_for_overlay = image_ops.resize_image(request.resize_mode, mask_for_overlay, *picture.size)
            overlays.append(image_ops.overlay_image(picture, mask_for_overlay))
        if crop is not None:
            picture = image_ops.resize_image(2, picture.crop(crop), width, height)
        if image_mask is not None and request.inpainting_fill != 1:
            picture = image_ops.fill(picture, latent_mask)
            if request.inpainting_fill == 0:
                extra["Masked content"] = "fill"
        pictures.append(picture)
    if len(pictures) == 1:
        pictures, overlays = pictures * request.batch_size, overlays * request.batch_size
    pixels = image_tensor(pictures)
    init_latent = encode_images(model, pixels)
    factor = model.vae_downscale
    if request.resize_mode == 3:
        init_latent = torch.nn.functional.interpolate(init_latent, size=(height // factor, width // factor), mode="bilinear")

    blend = None
    if image_mask is not None:
        size = (init_latent.shape[3], init_latent.shape[2])
        keep = np.asarray(latent_mask.convert("RGB").resize(size), dtype=np.float32)[..., 0] / 255.0
        nmask = torch.from_numpy(np.around(keep)).to(init_latent)[None, None].expand_as(init_latent[:1])
        mask = 1.0 - nmask
        if request.inpainting_fill == 2:
            noise = batch_rng(model, request, options, seeds[: init_latent.shape[0]], [], init_latent.shape[1:]).first()
            init_latent = init_latent * mask + noise.to(init_latent) * nmask
            extra["Masked content"] = "latent noise"
        elif request.inpainting_fill == 3:
            init_latent = init_latent * mask
            extra["Masked content"] = "latent nothing"
        blend = LatentBlend(init_latent, mask, nmask)
    return PreparedImages(init_latent, pixels, image_mask, blend, overlays or None, paste_to, extra)


def run_img2img(
    model: StableDiffusionModel,
    identity: ModelIdentity,
    request: Img2ImgRequest,
    options: GenerationOptions,
    progress: Progress,
    on_image: Callable[[GeneratedImage], None] = lambda image: None,
    embeddings: Sequence[TextualInversion] = (),
    extra_generation_params: dict | None = None,
    hypernetworks: HypernetworkSource | None = None,
    loras: LoraSource | None = None,
    model_switch: ModelSwitch | None = None,
    hooks: BatchHooks | None = None,
    prompt_lists: PromptLists | None = None,
) -> GenerationResult:
    """``model_switch`` (a ``txt2img.ModelSwitch``) carries the refiner checkpoint, if any;
    ``prompt_lists`` and ``hooks`` as for ``run_txt2img``."""
    request = request.validate(options.upscaler_models.keys())
    sampling, schedule, unet = prepare_sampling(model, request, options, request.sampler_name, request.scheduler, request.steps)
    current = model
    result = seeded_result(request, sampling.sampler.name, options, prompt_lists)
    prepared = prepare_images(model, request, options, result.all_seeds)
    image_cond = image_conditioning(model, prepared.init_latent.shape, prepared.pixels, prepared.image_mask,
                                    options.inpainting_mask_weight)
    extra = result.extra_generation_params = dict(extra_generation_params or {})
    extra["Denoising strength"] = request.denoising_strength
    if image_cond is not None:
        extra["Conditional mask weight"] = options.inpainting_mask_weight
    extra.update(prepared.extra)
    if request.initial_noise_multiplier != 1.0:
        extra["Noise multiplier"] = request.initial_noise_multiplier
    reserve_network_keys(extra)
    extra.update(sampling.infotext)
    conditioning = Conditioning(
        make_conditioner(model, options, embeddings),
        steps=request.steps * (2 if sampling.sampler.second_order else 1),
        old_timelines=options.old_prompt_timelines,
    )
    factor = model.vae_downscale

    def first_model() -> StableDiffusionModel:
        """The job's own checkpoint, loaded again for each batch after the refiner took over."""
        nonlocal current, sampling, schedule, unet
        loaded = model_switch.first()
        if loaded is not current:
            current = loaded
            sampling, schedule, unet = prepare_sampling(loaded, request, options, request.sampler_name, request.scheduler,
                                                        request.steps)
            conditioning.rebind(make_conditioner(loaded, options, embeddings))
        return loaded

    def refiner(batch: Batch):
        if model_switch is None or model_switch.refiner is None:
            return None

        def prepare(refiner_model: StableDiffusionModel, shape):
            _, _, refined = prepare_sampling(refiner_model, request, options, request.sampler_name, request.scheduler,
                                             request.steps)
            encoder = conditioning.with_conditioner(make_conditioner(refiner_model, options, embeddings))
            rows = slice(0, batch.span.stop - batch.span.start)
            return (refined, encoder.cond(result.all_prompts[batch.span]), encoder.uncond(result.all_negative_prompts[batch.span]),
                    None if image_cond is None else image_cond[rows])

        return RefinerSwitch(request.refiner_switch_at, model_switch.refiner, prepare, model_switch.refiner_title, batch, result)

    def sample_batch(batch: Batch) -> tuple[torch.Tensor, bool]:
        rows = slice(0, batch.span.stop - batch.span.start)
        init_latent = prepared.init_latent[rows]
        blend = prepared.blend
        if blend is not None:
            blend = LatentBlend(init_latent, blend.mask, blend.nmask)
        noise = batch.rng.next() * request.initial_noise_multiplier
        denoiser = cfg_denoiser(unet, sampling, batch.cond, batch.uncond, request.cfg_scale, progress,
                                image_cond=None if image_cond is None else image_cond[rows], blend=blend,
                                before_step=refiner(batch), hooks=hooks.denoiser if hooks is not None else None)
        if hooks is not None and hooks.before_sampling is not None:
            hooks.before_sampling(batch.number, init_latent, noise, batch.cond, batch.uncond)
        latent, stopped = sample_img2img(sampling, request.steps, denoiser, noise, init_latent, request.denoising_strength,
                                         options.img2img_fix_steps, batch.rng, schedule, options.sampler, progress.step)
        return (latent if blend is None else blend(latent)), stopped

    def finish_image(offset: int, image: Image.Image) -> Image.Image:
        overlays = prepared.overlays
        overlay = overlays[offset] if overlays is not None and offset < len(overlays) else None
        return image_ops.apply_overlay(image, prepared.paste_to, overlay)

    _, t_enc = img2img_steps(request.steps, request.denoising_strength, options.img2img_fix_steps)
    return run_job(model, identity, request, options, progress, on_image, result, sampling, conditioning,
                   (request.width // factor, request.height // factor), sample_batch, finish_image,
                   progress_steps=t_enc + 1 if request.denoising_strength > 0 else 0, hypernetworks=hypernetworks,
                   loras=loras, before_batch=first_model if model_switch is not None else None, hooks=hooks)
