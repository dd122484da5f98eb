"""What every generation job shares: options, the per-job result, seeds, prompt conditioning, the
batch loop (seeded noise → sampling → NaN check → VAE decode → infotext), and VAE encode/decode.

``run_job`` owns the loop; the kind of job (txt2img with or without hires fix, img2img, inpainting)
supplies ``sample_batch``, which turns one batch's noise source and conditioning into latents, and
``finish_image``, which may touch each decoded picture (the inpainting overlay).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np
import torch
from PIL import Image

from modules.core.conditioning.clip_text import ClipTextConditioner, SdxlTextConditioner, TextOptions
from modules.core.conditioning.prompt_parser import extract_extra_networks, strip_comments
from modules.core.conditioning.scheduled import CondBatch, UncondBatch, encode_cond, encode_uncond
from modules.core.conditioning.textual_inversion import EmbeddingLookup, TextualInversion
from modules.core.generation.request import InvalidRequest, Txt2ImgRequest
from modules.core.devices import in_float32
from modules.core.infotext import build_infotext, order_params
from modules.core.models.hypernetwork import HypernetworkSource
from modules.core.models.hypernetwork import applied as applied_hypernetworks
from modules.core.models.loader import StableDiffusionModel
from modules.core.models.tiled_vae import decode_memory_estimate, decode_tiled, encode_tiled
from modules.core.models.lora import LoraPatch, LoraSource, lora_calls
from modules.core.rng import ImageRNG, fix_seed
from modules.core.sampling.denoiser import DenoiserHooks
from modules.core.sampling.run import SamplerOptions, SamplingPlan, schedule_label

log = logging.getLogger("hanga")


class NansError(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelIdentity:
    name: str  # file name without folder or extension, as the infotext's "Model"
    short_hash: str | None  # first 10 hex of the file's sha256; None with --no-hashing
    vae_name: str | None = None  # an external VAE's file name ("VAE"); None for the baked-in one
    vae_hash: str | None = None  # its first 10 hex of sha256 ("VAE hash")


@dataclass(frozen=True)
class GenerationOptions:
    """Settings that shape generation (A1111 setting keys in comments)."""

    text: TextOptions = TextOptions()
    sampler: SamplerOptions = SamplerOptions()
    randn_source: str = "GPU"  # randn_source
    eta_noise_seed_delta: int = 0  # eta_noise_seed_delta
    add_model_hash: bool = True  # add_model_hash_to_info
    add_model_name: bool = True  # add_model_name_to_info
    add_vae_hash: bool = True  # add_vae_hash_to_info
    add_vae_name: bool = True  # add_vae_name_to_info
    version: str | None = None  # written as "Version" when add_version_to_infotext
    nan_check: bool = True  # off with --disable-nan-check
    strip_comments: bool = True  # enable_prompt_comments: "# …" to the end of a line is not prompt
    old_prompt_timelines: bool = False  # use_old_scheduling (pre-1.6 prompt-editing step rules)
    img2img_fix_steps: bool = False  # img2img_fix_steps: run exactly `steps` steps whatever the strength
    img2img_background_color: str = "#ffffff"  # img2img_background_color: under transparent pixels
    inpainting_mask_weight: float = 1.0  # inpainting_mask_weight ("Conditional mask weight")
    hypernetwork: str = "None"  # sd_hypernetwork: added to every prompt
    auto_vae_precision: bool = True  # auto_vae_precision: a NaN half-precision decode is redone in float32
    sdxl_crop: tuple[int, int] = (0, 0)  # sdxl_crop_top, sdxl_crop_left
    hires_refiner_pass: str = "second pass"  # hires_fix_refiner_pass
    default_multiplier: float = 1.0  # extra_networks_default_multiplier
    # Upscaler models by name (ESRGAN …): one pass each; looked up only when a job names one.
    upscaler_models: Mapping[str, Callable] = field(default_factory=dict)


class Progress(Protocol):
    def start_batch(self, batch_index: int, batch_count: int, steps: int) -> None: ...
    def step(self, step: int, denoised: torch.Tensor) -> None: ...
    def stop_requested(self) -> bool: ...  # interrupt or skip: end the current sampling now
    def interrupted(self) -> bool: ...  # do not start further batches


# A batch starts: (batch number, its prompts, seeds, variation seeds, the infotext's extra parameters
# as they stand, which the callee may extend) — extensions' batch hooks.
BatchStart = Callable[[int, list, list, list, dict], None]
# A batch is decoded: (batch number, its pictures as a (B, 3, H, W) float tensor in [0, 1]) → the
# pictures to keep, same shape (A1111's postprocess_batch hooks).
BatchDecoded = Callable[[int, torch.Tensor], torch.Tensor]
# A sampling pass is about to run (A1111's process_before_every_sampling): (batch number, the latent
# it starts from, its noise, the cond and uncond conditioning). Called for the first pass, the hires
# pass and img2img; for txt2img's first pass the latent is the noise.
BeforeSampling = Callable[[int, torch.Tensor, torch.Tensor, object, object], None]


@dataclass(frozen=True)
class BatchHooks:
    """What a job's caller hears per batch (extensions' always-on scripts)."""

    start: BatchStart | None = None
    decoded: BatchDecoded | None = None
    before_hires: Callable[[int], None] | None = None  # (batch number): its hires pass is about to run
    before_sampling: BeforeSampling | None = None
    denoiser: DenoiserHooks | None = None  # around each U-Net prediction of every pass


@dataclass(frozen=True)
class PromptLists:
    """Every image's prompt, negative prompt, seed and variation seed (A1111's ``p.all_prompts``,
    ``all_negative_prompts``, ``all_seeds``, ``all_subseeds``): made from the request, or given
    by a script that rewrote them (dynamic prompts)."""

    prompts: list[str]
    negative_prompts: list[str]
    seeds: list[int]
    subseeds: list[int]


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


def expand_prompts(request: Txt2ImgRequest, options: GenerationOptions) -> PromptLists:
    """The request's prompts and seeds for each of its ``batch_size × n_iter`` images; a seed of
    -1 is drawn now."""
    count = request.batch_size * request.n_iter
    seed, subseed = fix_seed(request.seed), fix_seed(request.subseed)
    vary = request.subseed_strength == 0
    prompt, negative = request.prompt, request.negative_prompt
    if options.strip_comments:
        prompt, negative = strip_comments(prompt), strip_comments(negative)
    return PromptLists(prompts=[prompt] * count, negative_prompts=[negative] * count,
                       seeds=[seed + (k if vary else 0) for k in range(count)],
                       subseeds=[subseed + k for k in range(count)])


def _checked_lists(lists: PromptLists, count: int) -> PromptLists:
    """Lists a script gave: at least one entry per image (the rest are not used), of the right types."""
    columns = {"all_prompts": (lists.prompts, str), "all_negative_prompts": (lists.negative_prompts, str),
               "all_seeds": (lists.seeds, int), "all_subseeds": (lists.subseeds, int)}
    for name, (values, kind) in columns.items():
        if not isinstance(values, (list, tuple)) or len(values) < count:
            length = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
            raise InvalidRequest(name, f"a script left {length} entries for {count} images (batch size × batch count)")
        wrong = [value for value in values[:count] if not isinstance(value, kind) or isinstance(value, bool)]
        if wrong:
            raise InvalidRequest(name, f"must hold {kind.__name__} values, not {wrong[0]!r}")
    return PromptLists(list(lists.prompts[:count]), list(lists.negative_prompts[:count]),
                       [int(seed) for seed in lists.seeds[:count]], [int(seed) for seed in lists.subseeds[:count]])


def seeded_result(request: Txt2ImgRequest, sampler_name: str, options: GenerationOptions,
                  lists: PromptLists | None = None) -> GenerationResult:
    count = request.batch_size * request.n_iter
    lists = expand_prompts(request, options) if lists is None else _checked_lists(lists, count)
    return GenerationResult(request=request, sampler_name=sampler_name, all_prompts=lists.prompts,
                            all_negative_prompts=lists.negative_prompts, all_seeds=lists.seeds,
                            all_subseeds=lists.subseeds)


class Conditioning:
    """Encodes a batch's prompts into per-step conditioning; consecutive batches with the same
    prompts (batch count > 1) reuse the previous encoding. ``hires_steps`` gives the prompt
    schedules of a hires pass (A1111 reads `[a:b:N]` against both step counts)."""

    def __init__(self, conditioner: ClipTextConditioner | SdxlTextConditioner, steps: int, old_timelines: bool,
                 hires_steps: int | None = None):
        self.steps = steps
        self.hires_steps = hires_steps
        self.old_timelines = old_timelines
        self._last: dict[str, tuple[tuple[str, ...], object]] = {}
        self._bind(conditioner)

    def _bind(self, conditioner: ClipTextConditioner | SdxlTextConditioner) -> None:
        self.conditioner, self.encode = conditioner, conditioner.encode
        # SDXL encodes negative prompts its own way (zeros for an empty one, the low aesthetic score)
        self.encode_negative = getattr(conditioner, "encode_negative", conditioner.encode)
        self._last.clear()

    def rebind(self, conditioner: ClipTextConditioner | SdxlTextConditioner) -> None:
        """Encode with another model's text encoder from now on (a job that switches checkpoints)."""
        if conditioner.encode != self.encode:
            self._bind(conditioner)

    def with_conditioner(self, conditioner: ClipTextConditioner | SdxlTextConditioner) -> "Conditioning":
        """The same prompt schedules encoded by another model's text encoder (the refiner's)."""
        return Conditioning(conditioner, self.steps, self.old_timelines, self.hires_steps)

    def ti_hashes(self) -> str | None:
        """"TI hashes" of the embeddings the prompts encoded so far named: "name: 12hex, …"."""
        used = self.conditioner.embeddings.used if self.conditioner.embeddings is not None else {}
        pairs = [f"{name}: {embedding.short_hash}" for name, embedding in used.items() if embedding.short_hash]
        return ", ".join(pairs) or None

    def _cached(self, kind: str, key: tuple[str, ...], make):
        last = self._last.get(kind)
        if last is None or last[0] != key:
            last = self._last[kind] = (key, make())
        return last[1]

    def cond(self, prompts: list[str]) -> CondBatch:
        # Extra-network tags (<lora:…>, <hypernet:…>) are not text for the encoder; the networks
        # themselves are applied by the model-zoo code. The negative prompt keeps its tags (A1111).
        texts = [extract_extra_networks(prompt)[0] for prompt in prompts]
        return self._cached("cond", tuple(texts), lambda: encode_cond(self.encode, texts, self.steps, self.hires_steps, self.old_timelines))

    def uncond(self, prompts: list[str]) -> UncondBatch:
        return self._cached("uncond", tuple(prompts), lambda: encode_uncond(self.encode_negative, prompts, self.steps, self.hires_steps, self.old_timelines))


def _check_for_nans(latent: torch.Tensor) -> None:
    if torch.isnan(latent).all():
        raise NansError(
            "A tensor with all NaNs was produced by the U-Net. Your card may not support half precision: "
            "try --no-half (or --precision full), or --disable-nan-check to see the image anyway."
        )


@dataclass
class Batch:
    """One batch of a job, as ``sample_batch`` sees it."""

    number: int
    span: slice  # the images of the job in this batch
    rng: ImageRNG
    cond: CondBatch
    uncond: UncondBatch
    decoder: StableDiffusionModel | None = None  # set by a pass that ran on another checkpoint
    # A pass that switches to another checkpoint calls this with it: the batch's LoRAs and
    # hypernetworks then act on that model too (A1111's networks follow the loaded model).
    enter_model: Callable[[StableDiffusionModel], None] = lambda model: None


SampleBatch = Callable[[Batch], tuple[torch.Tensor, bool]]  # → (latents, stopped early)
FinishImage = Callable[[int, Image.Image], Image.Image]  # (position in the batch, decoded picture)


def batch_rng(model: StableDiffusionModel, request: Txt2ImgRequest, options: GenerationOptions,
              seeds: Sequence[int], subseeds: Sequence[int], shape: Sequence[int]) -> ImageRNG:
    """The per-image noise generators of one batch (a hires pass makes a fresh one, same seeds)."""
    return ImageRNG(
        shape=tuple(shape),
        seeds=seeds,
        device=model.device,
        source=options.randn_source,
        subseeds=subseeds,
        subseed_strength=request.subseed_strength,
        seed_resize_from=(request.seed_resize_from_w, request.seed_resize_from_h),
        eta_noise_seed_delta=options.eta_noise_seed_delta,
    )


def make_conditioner(model: StableDiffusionModel, options: GenerationOptions,
                     embeddings: Sequence[TextualInversion] = ()) -> ClipTextConditioner | SdxlTextConditioner:
    """The prompt encoder for the model's family (§5.4, §5.5)."""
    lookup = EmbeddingLookup(model.tokenizer, embeddings)
    family = model.family.family
    if family == "sd2":
        return ClipTextConditioner(model.tokenizer, model.text_encoder, options.text, lookup, layer="last", pad_id=0)
    if family == "sdxl":
        return SdxlTextConditioner([
            ClipTextConditioner(model.tokenizer, model.text_encoder, options.text, lookup, layer="penultimate",
                                embedding_key="clip_l"),
            ClipTextConditioner(model.tokenizer, model.text_encoder_2, options.text, lookup, layer="penultimate", pad_id=0,
                                embedding_key="clip_g"),
        ])
    if family == "sdxl-refiner":
        return SdxlTextConditioner(
            [ClipTextConditioner(model.tokenizer, model.text_encoder, options.text, lookup, layer="penultimate", pad_id=0,
                                 embedding_key="clip_g")],
            refiner=True,
        )
    return ClipTextConditioner(model.tokenizer, model.text_encoder, options.text, lookup)


def run_job(
    model: StableDiffusionModel,
    identity: ModelIdentity,
    request: Txt2ImgRequest,
    options: GenerationOptions,
    progress: Progress,
    on_image: Callable[[GeneratedImage], None],
    result: GenerationResult,
    sampling: SamplingPlan,
    conditioning: Conditioning,
    latent_size: tuple[int, int],
    sample_batch: SampleBatch,
    finish_image: FinishImage | None = None,
    progress_steps: int | None = None,
    before_batch: Callable[[], StableDiffusionModel] | None = None,
    hypernetworks: HypernetworkSource | None = None,
    loras: LoraSource | None = None,
    hooks: BatchHooks | None = None,
) -> GenerationResult:
    """The batch loop: ``n_iter`` batches of ``batch_size`` images at ``latent_size`` (w, h).
    ``before_batch`` (a job that switches checkpoints) makes the first pass's model current and
    returns it; the pictures are decoded with whatever model the batch ended on. ``hypernetworks``
    supplies the ``<hypernet:name:multiplier>`` networks the batch's prompts name, ``loras`` the
    ``<lora:…>`` ones (merged into the weights for the job and taken out exactly afterwards).
    ``hooks.start(number, prompts, seeds, subseeds, extra_params)`` hears each batch start, networks
    applied; ``hooks.decoded(number, pictures)`` may change a batch's decoded pictures."""
    size = request.batch_size
    if hypernetworks is not None:
        _add_hypernetwork_setting(result, options, hypernetworks)
    latent_w, latent_h = latent_size
    merger = LoraMerger(loras, result) if loras is not None else None
    try:
        for number in range(request.n_iter):
            if progress.interrupted():
                break
            span = slice(number * size, (number + 1) * size)
            if before_batch is not None:
                model = before_batch()
            if merger is not None:
                merger.for_batch(model, result.all_prompts[span][0])
            active = _active_hypernetworks(result.all_prompts[span], hypernetworks, result) if hypernetworks else []
            with ExitStack() as networks:
                def enter_model(other: StableDiffusionModel, active=active, networks=networks) -> None:
                    if merger is not None:
                        merger.follow(other, required=False)
                    networks.enter_context(applied_hypernetworks(other.unet, active))

                networks.enter_context(applied_hypernetworks(model.unet, active))
                if hooks is not None and hooks.start is not None:
                    hooks.start(number, result.all_prompts[span], result.all_seeds[span], result.all_subseeds[span],
                             result.extra_generation_params)
                batch = Batch(
                    number=number,
                    span=span,
                    rng=batch_rng(model, request, options, result.all_seeds[span], result.all_subseeds[span],
                                  (model.latent_channels, latent_h, latent_w)),
                    cond=conditioning.cond(result.all_prompts[span]),
                    uncond=conditioning.uncond(result.all_negative_prompts[span]),
                    enter_model=enter_model,
                )
                progress.start_batch(number, request.n_iter, request.steps if progress_steps is None else progress_steps)
                if "TI hashes" in result.extra_generation_params:  # its place is reserved by the job (A1111's order)
                    result.extra_generation_params["TI hashes"] = conditioning.ti_hashes()
                latent, stopped = sample_batch(batch)
            if options.nan_check and not stopped:
                _check_for_nans(latent)
            pictures = to_unit(decode_to_pixels(batch.decoder or model, latent, options.auto_vae_precision))
            if hooks is not None and hooks.decoded is not None:
                pictures = hooks.decoded(number, pictures)
            for offset, image in enumerate(unit_to_images(pictures)):
                if finish_image is not None:
                    image = finish_image(offset, image)
                generated = _generated(image, number * size + offset, stopped, request, sampling, identity, options, result)
                result.images.append(generated)
                on_image(generated)
    finally:
        if merger is not None:
            merger.finish()
    result.interrupted = progress.interrupted()
    return result


def _generated(image: Image.Image, index: int, stopped: bool, request: Txt2ImgRequest, sampling: SamplingPlan,
               identity: ModelIdentity, options: GenerationOptions, result: GenerationResult) -> GeneratedImage:
    """Image ``index`` of the job with its infotext."""
    params = infotext_params(request, sampling, identity, options, result, index)
    return GeneratedImage(
        image=image,
        infotext=build_infotext(result.all_prompts[index], result.all_negative_prompts[index], params),
        index=index,
        seed=result.all_seeds[index],
        subseed=result.all_subseeds[index],
        prompt=result.all_prompts[index],
        negative_prompt=result.all_negative_prompts[index],
        incomplete=stopped,
    )


class LoraMerger:
    """A job's LoRAs: the ones the batch's first prompt names (A1111 reads a batch's networks from
    it) are merged into every model the batch runs on, and taken out exactly at the end of the job.
    "Lora hashes" records them. A job started from inside this one's hooks (a script's own
    ``process_images``) has its own LoRAs only, as in A1111: this job's come out while it runs and
    go back in when it ends."""

    def __init__(self, source: LoraSource, result: GenerationResult):
        self.source, self.result = source, result
        self.patch = LoraPatch()
        self.wanted: tuple = ()
        self.models: list[StableDiffusionModel] = []  # the models the wanted LoRAs are merged into
        self.suspended: list[StableDiffusionModel] = []  # models whose LoRAs a nested job took out
        self.registered: list[StableDiffusionModel] = []  # models whose ``lora_mergers`` list this one

    def suspend(self) -> None:
        """A nested job takes over: this job's LoRAs come out of every model until ``resume``."""
        if self.models:
            self.patch.restore()
            self.suspended, self.models = self.suspended + self.models, []

    def resume(self) -> None:
        models, self.suspended = self.suspended, []
        for model in models:
            self.follow(model, required=False)

    def finish(self) -> None:
        """The job ends: its LoRAs come out, and an outer job's go back in."""
        self.patch.restore()
        touched, self.registered = self.registered, []
        self.models, self.suspended = [], []
        for model in touched:
            if self in model.lora_mergers:
                model.lora_mergers.remove(self)
            if model.lora_mergers:
                model.lora_mergers[-1].resume()

    def for_batch(self, model: StableDiffusionModel, prompt: str) -> None:
        try:
            wanted = tuple(lora_calls(extract_extra_networks(prompt)[1]))
        except ValueError:
            raise InvalidRequest("prompt", "a <lora:name:multiplier> multiplier must be a number") from None
        if wanted != self.wanted:
            self.patch.restore()
            self.wanted, self.models = wanted, []
        self.follow(model)

    def follow(self, model: StableDiffusionModel, required: bool = True) -> None:
        """Merge the wanted LoRAs into ``model`` unless they are in it already. A model they do not
        fit (a refiner of another architecture) is left as it is unless ``required``."""
        if any(merged is model for merged in self.models):
            return
        for other in model.lora_mergers:
            if other is not self:
                other.suspend()
        if self not in model.lora_mergers:
            model.lora_mergers.append(self)
            self.registered.append(model)
        self.models.append(model)
        hashes = []
        for name, te, unet in self.wanted:
            try:
                lora = self.source.load(name, model)
            except InvalidRequest:
                if required:
                    raise
                log.info("LoRA %s does not fit %s; not applied to it", name, model.family.label)
                continue
            if lora is None:
                raise InvalidRequest("prompt", f"LoRA {name!r} not found")
            try:
                self.patch.merge(model.text_encoder, lora.text_encoder, te)
                if model.text_encoder_2 is not None:
                    self.patch.merge(model.text_encoder_2, lora.text_encoder_2, te)
                self.patch.merge(model.unet, lora.unet, unet)
            except (RuntimeError, ValueError) as error:  # shapes that do not fit (a damaged or foreign file)
                raise InvalidRequest("prompt", f"LoRA {name!r} cannot be used with this {model.family.label} model: "
                                               f"its weights do not fit ({str(error).splitlines()[0]})") from None
            short = self.source.short_hash(name)
            if short:
                hashes.append(f"{name}: {short}")
        if required and hashes and "Lora hashes" in self.result.extra_generation_params:
            self.result.extra_generation_params["Lora hashes"] = ", ".join(hashes)


def reserve_network_keys(extra: dict) -> None:
    """The places of the keys known only once the prompts are read (before the samplers' keys, as
    A1111 writes them); a key left None is not written."""
    extra.setdefault("Lora hashes", None)
    extra.setdefault("TI hashes", None)


def _add_hypernetwork_setting(result: GenerationResult, options: GenerationOptions, source: HypernetworkSource) -> None:
    """The sd_hypernetwork setting appends its tag to every prompt that does not name it (A1111)."""
    name = options.hypernetwork
    if name in ("", "None") or source.load(name) is None:
        return
    tag = f"<hypernet:{name}:{options.default_multiplier:g}>"
    result.all_prompts = [
        prompt if any(call.kind == "hypernet" and call.items[:1] == [name] for call in extract_extra_networks(prompt)[1])
        else prompt + tag
        for prompt in result.all_prompts
    ]


def _active_hypernetworks(prompts: Sequence[str], source: HypernetworkSource, result: GenerationResult):
    """The hypernetworks the batch's first prompt names (A1111 reads a batch's networks from it),
    with their multipliers; their hashes go into the infotext as "Hypernet hashes"."""
    active, hashes = [], []
    for call in extract_extra_networks(prompts[0])[1] if prompts else []:
        if call.kind != "hypernet" or not call.items:
            continue
        name = call.items[0]
        network = source.load(name)
        if network is None:
            raise InvalidRequest("prompt", f"hypernetwork {name!r} not found")
        try:
            multiplier = float(call.items[1]) if len(call.items) > 1 else 1.0
        except ValueError:
            raise InvalidRequest("prompt", f"<hypernet:{':'.join(call.items)}>: the multiplier must be a number") from None
        active.append((network, multiplier))
        short = source.short_hash(name)
        if short:
            hashes.append(f"{name}:{short}")
    if hashes:
        result.extra_generation_params["Hypernet hashes"] = ", ".join(hashes)
    return active


def to_pixels(latent: torch.Tensor) -> list[Image.Image]:
    """Decoded VAE output in [-1, 1] → 8-bit pictures, values truncated like A1111."""
    return unit_to_images(to_unit(latent))


def to_unit(decoded: torch.Tensor) -> torch.Tensor:
    """Decoded VAE output in [-1, 1] → float pictures in [0, 1] (A1111's ``x_samples_ddim``)."""
    return torch.clamp((decoded.float() + 1.0) / 2.0, min=0.0, max=1.0)


def unit_to_images(pixels: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) floats in [0, 1] → 8-bit pictures, values truncated like A1111."""
    return [Image.fromarray((255.0 * np.moveaxis(row.cpu().numpy(), 0, 2)).astype(np.uint8)) for row in pixels]


def image_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """RGB pictures → a (B, 3, H, W) float tensor in [0, 1]."""
    arrays = [np.moveaxis(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0, 2, 0) for image in images]
    return torch.from_numpy(np.stack(arrays))


@torch.no_grad()
def encode_images(model: StableDiffusionModel, pixels: torch.Tensor, tiled: bool | None = None) -> torch.Tensor:
    """(B, 3, H, W) pixels in [0, 1] → scaled latents, one image at a time. The posterior's mean is
    taken (A1111 samples it with the unseeded global generator; for a trained VAE the two differ by
    far less than one 8-bit step, and the mean keeps img2img reproducible). ``tiled`` as in
    ``decode_to_pixels``: tiles give the same latents."""
    vae = model.vae
    rows = []
    for index in range(pixels.shape[0]):
        x = (pixels[index : index + 1] * 2.0 - 1.0).to(device=model.device, dtype=vae.dtype)
        rows.append(_encode(model, x, tiled).float() * model.latent_scale_factor)
    return torch.cat(rows).to(model.device)


def _encode(model: StableDiffusionModel, x: torch.Tensor, tiled: bool | None) -> torch.Tensor:
    vae = model.vae
    factor = model.vae_downscale
    if x.shape[-1] % factor or x.shape[-2] % factor:  # tiles need the latent grid
        return vae.encode(x).latent_dist.mean
    return _whole_or_tiled(
        model, tiled, (x.shape[-2] // factor, x.shape[-1] // factor), "encoding",
        whole=lambda: vae.encode(x).latent_dist.mean,
        # the posterior's mean is the first half of the encoder's moments
        in_tiles=lambda store: encode_tiled(vae, x, store=store)[:, : model.latent_channels],
    )


def _whole_or_tiled(model: StableDiffusionModel, tiled: bool | None, latent_size: tuple[int, int], what: str,
                    whole, in_tiles) -> torch.Tensor:
    """``whole()`` or ``in_tiles(store)``: tiles when asked (``tiled``), or when the whole would not
    fit or runs out of memory (``tiled`` None; the tiles then wait in RAM)."""
    if tiled or (tiled is None and _wants_tiles(model, *latent_size)):
        return in_tiles(torch.device("cpu") if tiled is None else None)
    try:
        return whole()
    except torch.cuda.OutOfMemoryError:
        if tiled is not None:
            raise
        log.warning("Out of memory %s %dx%d; %s again in tiles", what, latent_size[1] * model.vae_downscale,
                    latent_size[0] * model.vae_downscale, what)
        torch.cuda.empty_cache()
        return in_tiles(torch.device("cpu"))


def _wants_tiles(model: StableDiffusionModel, latent_height: int, latent_width: int) -> bool:
    """Use tiles when a whole decode (or encode) would not fit in the device's free memory."""
    device = model.device
    if device.type != "cuda":
        return False
    free = torch.cuda.mem_get_info(device)[0]
    return decode_memory_estimate(model.vae, latent_height, latent_width) > 0.8 * free


def _decode(model: StableDiffusionModel, z: torch.Tensor, dtype: torch.dtype, tiled: bool | None) -> torch.Tensor:
    vae = model.vae
    z = z.to(device=model.device, dtype=dtype)
    return _whole_or_tiled(model, tiled, (z.shape[-2], z.shape[-1]), "decoding",
                           whole=lambda: vae.decode(z, return_dict=False)[0].float(),
                           in_tiles=lambda store: decode_tiled(vae, z, store=store).float())


@torch.no_grad()
def decode_to_pixels(model: StableDiffusionModel, latent: torch.Tensor, upcast_on_nans: bool = True,
                     tiled: bool | None = None) -> torch.Tensor:
    """Latents → VAE output in [-1, 1], one image at a time (peak memory of a single decode). A
    half-precision decode that gives NaNs is done again in float32 (A1111's auto_vae_precision;
    the SDXL VAE overflows in fp16). ``tiled``: None decodes in tiles when a whole decode would
    not fit (or ran out of memory), True always, False never; tiles give the same picture."""
    vae = model.vae
    rows = []
    for index in range(latent.shape[0]):
        z = latent[index : index + 1] * (1.0 / model.latent_scale_factor)
        out = _decode(model, z, vae.dtype, tiled)
        if upcast_on_nans and vae.dtype != torch.float32 and torch.isnan(out).any():
            log.warning("A tensor with NaNs was produced in the VAE; decoding this image again in 32-bit floats "
                        "(--no-half-vae avoids the retry)")
            with in_float32(vae):
                out = _decode(model, z, torch.float32, tiled)
        rows.append(out)
    return torch.cat(rows)


@torch.no_grad()
def decode_latents(model: StableDiffusionModel, latent: torch.Tensor, upcast_on_nans: bool = True) -> list[Image.Image]:
    return to_pixels(decode_to_pixels(model, latent, upcast_on_nans))


def infotext_params(
    request: Txt2ImgRequest,
    sampling: SamplingPlan,
    identity: ModelIdentity,
    options: GenerationOptions,
    result: GenerationResult,
    index: int,
) -> dict:
    """The infotext pairs of image ``index``: the fixed keys, then ``result.extra_generation_params``
    in the order the job added them."""
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
        "VAE hash": identity.vae_hash if options.add_vae_hash else None,
        "VAE": identity.vae_name if options.add_vae_name else None,
        "Variation seed": result.all_subseeds[index] if varied else None,
        "Variation seed strength": request.subseed_strength if varied else None,
        "Seed resize from": f"{request.seed_resize_from_w}x{request.seed_resize_from_h}" if resized else None,
        "Clip skip": clip_skip if clip_skip > 1 else None,
        "ENSD": ensd if uses_ensd else None,
        "RNG": options.randn_source if options.randn_source != "GPU" else None,
    }
    extra = dict(result.extra_generation_params)
    emphasis = options.text.emphasis
    prompts = result.all_prompts[index] + result.all_negative_prompts[index]
    if emphasis != "Original" and any(ch in prompts for ch in "(["):
        extra["Emphasis"] = emphasis
    return order_params(fixed, extra, options.version)
