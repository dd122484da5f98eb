"""txt2img: prompts → conditioning → seeded noise → sampler → VAE decode → images with infotext.

A job of ``n_iter`` batches of ``batch_size`` images; image k gets seed ``seed + k`` (or ``seed``
with a variation seed) and its own generator, so batches reproduce single images exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
from PIL import Image

from modules.core.conditioning.clip_text import ClipTextConditioner, TextOptions
from modules.core.conditioning.prompt_parser import extract_extra_networks, strip_comments
from modules.core.conditioning.textual_inversion import EmbeddingLookup, TextualInversion
from modules.core.conditioning.scheduled import CondBatch, UncondBatch, encode_cond, encode_uncond
from modules.core.generation.request import InvalidRequest, Txt2ImgRequest
from modules.core.infotext import build_infotext, order_params
from modules.core.models.loader import StableDiffusionModel
from modules.core.rng import ImageRNG, fix_seed
from modules.core.sampling.denoiser import CFGDenoiser, LCMDenoiser, UNetDenoiser
from modules.core.sampling.noise_schedule import DiscreteSchedule, LCMSchedule
from modules.core.sampling.run import SamplerOptions, SamplingPlan, plan, sample, schedule_label
from modules.core.sampling.samplers import resolve_sampler


class NansError(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelIdentity:
    name: str  # file name without folder or extension, as the infotext's "Model"
    short_hash: str | None  # first 10 hex of the file's sha256; None with --no-hashing


@dataclass(frozen=True)
class GenerationOptions:
    """Settings that shape generation (A1111 setting keys in comments)."""

    text: TextOptions = TextOptions()
    sampler: SamplerOptions = SamplerOptions()
    randn_source: str = "GPU"  # randn_source
    eta_noise_seed_delta: int = 0  # eta_noise_seed_delta
    add_model_hash: bool = True  # add_model_hash_to_info
    add_model_name: bool = True  # add_model_name_to_info
    version: str | None = None  # written as "Version" when add_version_to_infotext
    nan_check: bool = True  # off with --disable-nan-check
    strip_comments: bool = True  # enable_prompt_comments: "# …" to the end of a line is not prompt
    old_prompt_timelines: bool = False  # use_old_scheduling (pre-1.6 prompt-editing step rules)


class Progress(Protocol):
    def start_batch(self, batch_index: int, batch_count: int, steps: int) -> None: ...
    def step(self, step: int, denoised: torch.Tensor) -> None: ...
    def stop_requested(self) -> bool: ...  # interrupt or skip: end the current sampling now
    def interrupted(self) -> bool: ...  # do not start further batches


@dataclass
class GeneratedImage:
    image: Image.Image
    infotext: str
    index: int
    seed: int
    subseed: int
    prompt: str
    negative_prompt: str
    incomplete: bool = False


@dataclass
class GenerationResult:
    request: Txt2ImgRequest
    sampler_name: str
    all_prompts: list[str]
    all_negative_prompts: list[str]
    all_seeds: list[int]
    all_subseeds: list[int]
    extra_generation_params: dict = field(default_factory=dict)
    images: list[GeneratedImage] = field(default_factory=list)
    interrupted: bool = False

    @property
    def seed(self) -> int:
        return self.all_seeds[0]

    @property
    def subseed(self) -> int:
        return self.all_subseeds[0]

    @property
    def infotexts(self) -> list[str]:
        return [image.infotext for image in self.images]


def run_txt2img(
    model: StableDiffusionModel,
    identity: ModelIdentity,
    request: Txt2ImgRequest,
    options: GenerationOptions,
    progress: Progress,
    on_image: Callable[[GeneratedImage], None] = lambda image: None,
    embeddings: Sequence[TextualInversion] = (),
) -> GenerationResult:
    """``embeddings`` are the textual inversions prompts may name (loaded by the model zoo)."""
    request = request.validate()
    sampler, scheduler = resolve_sampler(request.sampler_name, request.scheduler)
    schedule = (LCMSchedule if sampler.consistency else DiscreteSchedule)(model.alphas_cumprod)
    sampling = plan(sampler, scheduler, options.sampler, request.eta, schedule)
    if "uni_pc_order" in sampler.params and options.sampler.uni_pc_order > request.steps:
        raise InvalidRequest(
            "steps", f"must be at least {options.sampler.uni_pc_order} with UniPC (its order setting); got {request.steps}"
        )
    result = _seeded_result(request, sampler.name, options)
    result.extra_generation_params = dict(sampling.infotext)
    conditioning = _Conditioning(
        ClipTextConditioner(model.tokenizer, model.text_encoder, options.text, EmbeddingLookup(model.tokenizer, embeddings)),
        steps=request.steps * (2 if sampler.second_order else 1),
        old_timelines=options.old_prompt_timelines,
    )
    unet = (LCMDenoiser if sampler.consistency else UNetDenoiser)(model.unet, schedule, model.prediction_type)
    size = request.batch_size
    for batch in range(request.n_iter):
        if progress.interrupted():
            break
        span = slice(batch * size, (batch + 1) * size)
        cond = conditioning.cond(result.all_prompts[span])
        uncond = conditioning.uncond(result.all_negative_prompts[span])
        progress.start_batch(batch, request.n_iter, request.steps)
        rng = ImageRNG(
            shape=(model.latent_channels, request.height // model.vae_downscale, request.width // model.vae_downscale),
            seeds=result.all_seeds[span],
            device=model.unet.device,
            source=options.randn_source,
            subseeds=result.all_subseeds[span],
            subseed_strength=request.subseed_strength,
            seed_resize_from=(request.seed_resize_from_w, request.seed_resize_from_h),
            eta_noise_seed_delta=options.eta_noise_seed_delta,
        )
        denoiser = CFGDenoiser(
            unet, cond.at, uncond.at, request.cfg_scale * sampler.cfg_scale_multiplier,
            timestep_kind=sampler.kind == "timestep", should_stop=progress.stop_requested,
        )
        latent, stopped = sample(sampling, request.steps, denoiser, rng, schedule, options.sampler, progress.step)
        if options.nan_check and not stopped:
            _check_for_nans(latent)
        for offset, image in enumerate(decode_latents(model, latent)):
            index = batch * size + offset
            params = infotext_params(request, sampling, identity, options, result, index)
            generated = GeneratedImage(
                image=image,
                infotext=build_infotext(result.all_prompts[index], result.all_negative_prompts[index], params),
                index=index,
                seed=result.all_seeds[index],
                subseed=result.all_subseeds[index],
                prompt=result.all_prompts[index],
                negative_prompt=result.all_negative_prompts[index],
                incomplete=stopped,
            )
            result.images.append(generated)
            on_image(generated)
    result.interrupted = progress.interrupted()
    return result


def _seeded_result(request: Txt2ImgRequest, sampler_name: str, options: GenerationOptions) -> GenerationResult:
    count = request.batch_size * request.n_iter
    seed, subseed = fix_seed(request.seed), fix_seed(request.subseed)
    vary = request.subseed_strength == 0
    prompt, negative = request.prompt, request.negative_prompt
    if options.strip_comments:
        prompt, negative = strip_comments(prompt), strip_comments(negative)
    return GenerationResult(
        request=request,
        sampler_name=sampler_name,
        all_prompts=[prompt] * count,
        all_negative_prompts=[negative] * count,
        all_seeds=[seed + (k if vary else 0) for k in range(count)],
        all_subseeds=[subseed + k for k in range(count)],
    )


class _Conditioning:
    """Encodes a batch's prompts into per-step conditioning; consecutive batches with the same
    prompts (batch count > 1) reuse the previous encoding."""

    def __init__(self, conditioner: ClipTextConditioner, steps: int, old_timelines: bool):
        self.encode = conditioner.encode
        self.steps = steps
        self.old_timelines = old_timelines
        self._last: dict[str, tuple[tuple[str, ...], object]] = {}

    def _cached(self, kind: str, key: tuple[str, ...], make):
        last = self._last.get(kind)
        if last is None or last[0] != key:
            last = self._last[kind] = (key, make())
        return last[1]

    def cond(self, prompts: list[str]) -> CondBatch:
        # Extra-network tags (<lora:…>, <hypernet:…>) are not text for the encoder; the networks
        # themselves are applied by the model-zoo code. The negative prompt keeps its tags (A1111).
        texts = [extract_extra_networks(prompt)[0] for prompt in prompts]
        return self._cached("cond", tuple(texts), lambda: encode_cond(self.encode, texts, self.steps, None, self.old_timelines))

    def uncond(self, prompts: list[str]) -> UncondBatch:
        return self._cached("uncond", tuple(prompts), lambda: encode_uncond(self.encode, prompts, self.steps, None, self.old_timelines))


def _check_for_nans(latent: torch.Tensor) -> None:
    if torch.isnan(latent).all():
        raise NansError(
            "A tensor with all NaNs was produced by the U-Net. Your card may not support half precision: "
            "try --no-half (or --precision full), or --disable-nan-check to see the image anyway."
        )


@torch.no_grad()
def decode_latents(model: StableDiffusionModel, latent: torch.Tensor) -> list[Image.Image]:
    """One image at a time (peak memory of a single decode); 8-bit values truncated like A1111."""
    vae = model.vae
    images = []
    for index in range(latent.shape[0]):
        z = latent[index : index + 1].to(device=vae.device, dtype=vae.dtype)
        pixels = vae.decode(z * (1.0 / model.latent_scale_factor), return_dict=False)[0].float()
        pixels = torch.clamp((pixels + 1.0) / 2.0, min=0.0, max=1.0)
        array = (255.0 * np.moveaxis(pixels[0].cpu().numpy(), 0, 2)).astype(np.uint8)
        images.append(Image.fromarray(array))
    return images


def infotext_params(
    request: Txt2ImgRequest,
    sampling: SamplingPlan,
    identity: ModelIdentity,
    options: GenerationOptions,
    result: GenerationResult,
    index: int,
) -> dict:
    varied = request.subseed_strength != 0
    resized = request.seed_resize_from_w > 0 and request.seed_resize_from_h > 0
    clip_skip = options.text.clip_skip
    ensd = options.eta_noise_seed_delta
    uses_ensd = bool(ensd) and sampling.sampler.uses_ensd and sampling.eta != 0
    fixed = {
        "Steps": request.steps,
        "Sampler": sampling.sampler.name,
        "Schedule type": schedule_label(sampling),
        "CFG scale": request.cfg_scale,
        "Seed": result.all_seeds[index],
        "Size": f"{request.width}x{request.height}",
        "Model hash": identity.short_hash if options.add_model_hash else None,
        "Model": identity.name if options.add_model_name else None,
        "Variation seed": result.all_subseeds[index] if varied else None,
        "Variation seed strength": request.subseed_strength if varied else None,
        "Seed resize from": f"{request.seed_resize_from_w}x{request.seed_resize_from_h}" if resized else None,
        "Clip skip": clip_skip if clip_skip > 1 else None,
        "ENSD": ensd if uses_ensd else None,
        "RNG": options.randn_source if options.randn_source != "GPU" else None,
    }
    extra = dict(sampling.infotext)
    emphasis = options.text.emphasis
    prompts = result.all_prompts[index] + result.all_negative_prompts[index]
    if emphasis != "Original" and any(ch in prompts for ch in "(["):
        extra["Emphasis"] = emphasis
    return order_params(fixed, extra, options.version)
