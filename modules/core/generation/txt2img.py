"""txt2img: prompts → conditioning → seeded noise → sampler → (hires fix) → VAE decode → images.

A job of ``n_iter`` batches of ``batch_size`` images; image k gets seed ``seed + k`` (or ``seed``
with a variation seed) and its own generator, so batches reproduce single images exactly.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from PIL import Image

from modules.core.conditioning.textual_inversion import TextualInversion
from modules.core.generation.hires import HiresPass, add_hires_infotext
from modules.core.generation.job import (
    Batch, BatchHooks, Conditioning, GeneratedImage, GenerationOptions, GenerationResult, ModelIdentity, Progress, PromptLists, decode_to_pixels, make_conditioner, reserve_network_keys, run_job, seeded_result, to_pixels,
)
from modules.core.generation.img2img import image_conditioning
from modules.core.generation.passes import ModelSwitch, RefinerSwitch, cfg_denoiser, prepare_sampling
from modules.core.generation.request import LATENT_UPSCALE_MODES, InvalidRequest, Txt2ImgRequest
from modules.core.models.hypernetwork import HypernetworkSource
from modules.core.models.loader import StableDiffusionModel
from modules.core.models.lora import LoraSource
from modules.core.sampling.run import sample


class _FirstPass:
    """Everything of the first pass that belongs to one loaded model."""

    def __init__(self, model: StableDiffusionModel, request: Txt2ImgRequest, options: GenerationOptions,
                 embeddings: Sequence[TextualInversion]):
        self.model = model
        self.sampling, self.schedule, self.unet = prepare_sampling(
            model, request, options, request.sampler_name, request.scheduler, request.steps)
        self.conditioner = make_conditioner(model, options, embeddings)


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
    model_switch: ModelSwitch | None = None,
    hypernetworks: HypernetworkSource | None = None,
    loras: LoraSource | None = None,
    hooks: BatchHooks | None = None,
    prompt_lists: PromptLists | None = None,
) -> GenerationResult:
    """``embeddings`` are the textual inversions prompts may name (loaded by the model zoo);
    ``extra_generation_params`` are infotext pairs a script adds (written before the job's own).
    ``first_pass_image`` (✨ upscale) replaces the first pass: only the hires pass runs, on it.
    ``model_switch`` runs the hires pass on another checkpoint (``model`` is the first pass's).
    ``prompt_lists`` (a script's rewrite) replace the per-image prompts and seeds the request
    implies; ``hooks`` hear each batch start and may change its decoded pictures."""
    request = request.validate(options.upscaler_models.keys())
    if first_pass_image is not None and not request.enable_hr:
        raise InvalidRequest("enable_hr", "must be on to upscale an image with hires fix")
    first = _FirstPass(model, request, options, embeddings)
    sampling = first.sampling
    result = seeded_result(request, sampling.sampler.name, options, prompt_lists)
    result.extra_generation_params = dict(extra_generation_params or {})
    hires = None
    if request.enable_hr:
        hires_title = model_switch.hires_title if model_switch else None
        add_hires_infotext(request, options, result, sampling, hires_title)
        hires = HiresPass(model, request, options, first.conditioner, result)
    reserve_network_keys(result.extra_generation_params)
    result.extra_generation_params.update(sampling.infotext)
    conditioning = Conditioning(
        first.conditioner,
        steps=request.steps * (2 if sampling.sampler.second_order else 1),
        old_timelines=options.old_prompt_timelines,
    )
    latent_size = (request.width // model.vae_downscale, request.height // model.vae_downscale)

    def first_model() -> StableDiffusionModel:
        nonlocal first
        current = model_switch.first()
        if current is not first.model:
            first = _FirstPass(current, request, options, embeddings)
            conditioning.rebind(first.conditioner)
        return current

    def hires_pass(batch: Batch) -> HiresPass:
        """The second pass on the hires checkpoint, else on whatever model ended the first pass
        (the refiner, when it took over there)."""
        nonlocal hires
        has_hires_model = model_switch is not None and model_switch.hires is not None
        current = model_switch.hires() if has_hires_model else (batch.decoder or first.model)
        if has_hires_model:
            batch.enter_model(current)
        if current is not hires.model:
            hires = HiresPass(current, request, options, make_conditioner(current, options, embeddings), result)
        return hires

    def refiner(batch: Batch, in_hires_pass: bool) -> RefinerSwitch | None:
        """Without hires fix the refiner acts in the only pass; with it, in the pass(es) the
        ``hires_fix_refiner_pass`` setting names (A1111's default: the second). One that took over
        the first pass also runs the whole second pass (the model is already loaded)."""
        if model_switch is None or model_switch.refiner is None:
            return None
        mode = options.hires_refiner_pass
        if request.enable_hr:
            wanted = mode == "both passes" or mode == ("second pass" if in_hires_pass else "first pass")
        else:
            wanted = not in_hires_pass
        if not wanted or (in_hires_pass and batch.decoder is not None):
            return None
        span = batch.span

        def prepare(refiner_model: StableDiffusionModel, shape):
            image_cond = image_conditioning(refiner_model, shape, None, None, 1.0)
            if in_hires_pass:
                second = HiresPass(refiner_model, request, options, make_conditioner(refiner_model, options, embeddings), result)
                return (second.unet, second.conditioning.cond(second.prompts[span]),
                        second.conditioning.uncond(second.negatives[span]), image_cond)
            refined = _FirstPass(refiner_model, request, options, embeddings)
            encoder = conditioning.with_conditioner(refined.conditioner)
            return refined.unet, encoder.cond(result.all_prompts[span]), encoder.uncond(result.all_negative_prompts[span]), image_cond

        extra = {"Hires refiner": mode} if request.enable_hr and mode != "second pass" else {}
        return RefinerSwitch(request.refiner_switch_at, model_switch.refiner, prepare, model_switch.refiner_title, batch,
                             result, extra)

    def announce_hires(batch: Batch) -> None:
        if hooks is not None and hooks.before_hires is not None:
            hooks.before_hires(batch.number)

    denoiser_hooks = hooks.denoiser if hooks is not None else None

    def sample_batch(batch: Batch) -> tuple[torch.Tensor, bool]:
        if first_pass_image is not None:
            announce_hires(batch)
            refine = refiner(batch, in_hires_pass=True)
            second = hires_pass(batch)
            batch.decoder = second.model
            return second.run(None, batch, progress, pictures=[first_pass_image.convert("RGB")] * len(batch.rng.seeds),
                              before_step=refine, hooks=hooks)
        x = batch.rng.next()
        denoiser = cfg_denoiser(first.unet, first.sampling, batch.cond, batch.uncond, request.cfg_scale, progress,
                                image_cond=image_conditioning(first.model, x.shape, None, None, 1.0),
                                before_step=refiner(batch, in_hires_pass=False), hooks=denoiser_hooks)
        if hooks is not None and hooks.before_sampling is not None:
            hooks.before_sampling(batch.number, x, x, batch.cond, batch.uncond)
        latent, stopped = sample(first.sampling, request.steps, denoiser, batch.rng, first.schedule, options.sampler,
                                 progress.step, first_noise=x)
        if hires is None or stopped:
            return latent, stopped
        if model_switch is not None and model_switch.hires is not None and LATENT_UPSCALE_MODES.get(request.hr_upscaler) is None:
            pictures, latent = to_pixels(decode_to_pixels(batch.decoder or first.model, latent, options.auto_vae_precision)), None
        else:
            pictures = None
        announce_hires(batch)
        refine = refiner(batch, in_hires_pass=True)  # before the pass below marks the batch as decoded by its model
        second = hires_pass(batch)
        batch.decoder = second.model
        return second.run(latent, batch, progress, pictures=pictures, before_step=refine, hooks=hooks)

    steps = (0 if first_pass_image is not None else request.steps) + (hires.steps if hires else 0)
    return run_job(model, identity, request, options, progress, on_image, result, sampling, conditioning, latent_size,
                   sample_batch, progress_steps=steps, before_batch=first_model if model_switch else None,
                   hypernetworks=hypernetworks, loras=loras, hooks=hooks)
