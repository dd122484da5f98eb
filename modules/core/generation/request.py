"""Generation requests: typed fields with A1111's names, declared once with their allowed ranges.

Both the UI and the HTTP API build a ``Txt2ImgRequest``; ``validate()`` raises ``InvalidRequest``
naming the field and its allowed range, so bad input never reaches the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Collection

from PIL import Image

from modules.core.sampling.samplers import UnknownSamplerError, resolve_sampler

MAX_SEED = 2**63 - 1


class InvalidRequest(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    multiple_of: int = 1

    def check(self, field: str, value) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidRequest(field, f"must be a number between {self.low:g} and {self.high:g}; got {value!r}")
        if not self.low <= value <= self.high:
            raise InvalidRequest(field, f"must be between {self.low:g} and {self.high:g}; got {value:g}")
        if self.multiple_of > 1 and value % self.multiple_of:
            raise InvalidRequest(field, f"must be a multiple of {self.multiple_of}; got {value:g}")


RANGES: dict[str, Range] = {
    "steps": Range(1, 500),
    "cfg_scale": Range(0, 100),
    "width": Range(64, 8192, 8),
    "height": Range(64, 8192, 8),
    "batch_size": Range(1, 64),
    "n_iter": Range(1, 1000),
    "seed": Range(-1, MAX_SEED),
    "subseed": Range(-1, MAX_SEED),
    "subseed_strength": Range(0, 1),
    "seed_resize_from_w": Range(-1, 8192),
    "seed_resize_from_h": Range(-1, 8192),
    "denoising_strength": Range(0, 1),
    "hr_scale": Range(1, 8),
    "refiner_switch_at": Range(0.01, 1),
    "hr_second_pass_steps": Range(0, 500),
    "hr_resize_x": Range(0, 8192),
    "hr_resize_y": Range(0, 8192),
    "resize_mode": Range(0, 3),
    "mask_blur": Range(0, 64),
    "inpainting_fill": Range(0, 3),
    "inpaint_full_res_padding": Range(0, 256),
    "inpainting_mask_invert": Range(0, 1),
    "initial_noise_multiplier": Range(0, 1.5),
}
INTEGER_FIELDS = {
    "steps", "width", "height", "batch_size", "n_iter", "seed", "subseed", "seed_resize_from_w", "seed_resize_from_h",
    "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "resize_mode", "mask_blur", "inpainting_fill",
    "inpaint_full_res_padding", "inpainting_mask_invert",
}

# The latent upscale modes of hires fix: name → (F.interpolate mode, antialias).
LATENT_UPSCALE_MODES = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
IMAGE_UPSCALERS = ("None", "Lanczos", "Nearest")
HIRES_UPSCALERS = (*LATENT_UPSCALE_MODES, *IMAGE_UPSCALERS)
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")


@dataclass(frozen=True)
class Txt2ImgRequest:
    prompt: str = ""
    negative_prompt: str = ""
    steps: int = 20
    sampler_name: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_w: int = 0
    seed_resize_from_h: int = 0
    batch_size: int = 1
    n_iter: int = 1
    eta: float | None = None
    denoising_strength: float = 0.75  # hires fix (txt2img) or img2img
    # Hires fix (A1111's enable_hr and hr_* fields; hr_sampler_name/hr_scheduler "" = the first pass's)
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0  # 0 = the first pass's steps
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_sampler_name: str = ""
    hr_scheduler: str = ""
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    hr_checkpoint_name: str = ""  # "" = the first pass's checkpoint
    # SDXL refiner: sampling goes on with this checkpoint once it is refiner_switch_at of the way
    refiner_checkpoint: str = ""  # "" = none
    refiner_switch_at: float = 0.8

    def validate(self, upscalers: Collection[str] = ()) -> "Txt2ImgRequest":
        """Check every field; return a copy with numbers normalised (7.0 → 7 for whole floats).
        ``upscalers``: the names of upscaler models the hires fix may use besides the built-in ones."""
        for name in ("prompt", "negative_prompt"):
            if not isinstance(getattr(self, name), str):
                raise InvalidRequest(name, "must be text")
        normalized = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in RANGES:
                value = _integral(f.name, value) if f.name in INTEGER_FIELDS else value
                RANGES[f.name].check(f.name, value)
                normalized[f.name] = value
        if self.eta is not None:
            Range(0, 10).check("eta", self.eta)
        _check_sampler(self.sampler_name, self.scheduler, "sampler_name", "scheduler")
        if self.enable_hr:
            if self.hr_upscaler not in HIRES_UPSCALERS and self.hr_upscaler not in upscalers:
                raise InvalidRequest("hr_upscaler", f"must be one of {', '.join([*HIRES_UPSCALERS, *upscalers])}; "
                                                    f"got {self.hr_upscaler!r}")
            _check_sampler(self.hr_sampler_name or self.sampler_name, self.hr_scheduler or self.scheduler,
                           "hr_sampler_name", "hr_scheduler")
            for name in ("hr_prompt", "hr_negative_prompt"):
                if not isinstance(getattr(self, name), str):
                    raise InvalidRequest(name, "must be text")
        for name in ("cfg_scale", "hr_scale", "denoising_strength", "refiner_switch_at"):
            normalized[name] = _whole_float_as_int(getattr(self, name))
        return replace(self, **normalized)


@dataclass(frozen=True)
class RequestLimits:
    """The user's limits on what one job may ask for (the ``limit_*`` settings). ``RANGES`` are what
    is valid at all; these are tighter and keep one request from tying up or exhausting the machine."""

    max_side: int = 4096  # width, height, and the hires-fix result
    max_steps: int = 150
    max_batch_size: int = 16
    max_batch_count: int = 100
    max_prompt_length: int = 20_000  # characters, each prompt field

    def check(self, request: "Txt2ImgRequest", where: str = "Settings → Security and limits") -> None:
        """Raise ``InvalidRequest`` naming the field, the limit and where to change it."""
        def over(field: str, value, limit: int, unit: str = "") -> None:
            raise InvalidRequest(field, f"must be at most {limit}{unit} (the {LIMIT_LABELS[field]} limit in "
                                        f"{where}); got {value}{unit}")

        for field in ("width", "height"):
            if getattr(request, field) > self.max_side:
                over(field, getattr(request, field), self.max_side)
        if request.enable_hr:
            width, height = hires_size(request)
            if max(width, height) > self.max_side:
                raise InvalidRequest("hr_scale", f"the hires fix would make {width}x{height}; the largest side allowed "
                                                 f"is {self.max_side} (the {LIMIT_LABELS['width']} limit in {where})")
        steps = max(request.steps, request.hr_second_pass_steps if request.enable_hr else 0)
        if steps > self.max_steps:
            over("steps" if request.steps > self.max_steps else "hr_second_pass_steps", steps, self.max_steps)
        if request.batch_size > self.max_batch_size:
            over("batch_size", request.batch_size, self.max_batch_size)
        if request.n_iter > self.max_batch_count:
            over("n_iter", request.n_iter, self.max_batch_count)
        for field in ("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt"):
            length = len(getattr(request, field) or "")
            if length > self.max_prompt_length:
                raise InvalidRequest(field, f"is {length} characters long; at most {self.max_prompt_length} are "
                                            f"allowed (the {LIMIT_LABELS['prompt']} limit in {where})")


LIMIT_LABELS = {
    "width": "largest width or height", "height": "largest width or height", "steps": "most sampling steps",
    "hr_second_pass_steps": "most sampling steps", "batch_size": "largest batch size",
    "n_iter": "most batches (batch count)", "prompt": "longest prompt",
}


def hires_size(request: "Txt2ImgRequest") -> tuple[int, int]:
    """The size the hires fix makes (A1111's rule, ``hires.hires_target``)."""
    from modules.core.generation.hires import hires_target  # hires imports this module

    target = hires_target(request.width, request.height, request.hr_scale, request.hr_resize_x, request.hr_resize_y)
    return target.width, target.height


def _check_sampler(sampler_name: str, scheduler: str, sampler_field: str, scheduler_field: str) -> None:
    try:
        resolve_sampler(sampler_name, scheduler)
    except UnknownSamplerError as error:
        field = scheduler_field if "scheduler" in str(error) else sampler_field
        raise InvalidRequest(field, str(error)) from None


@dataclass(frozen=True)
class Img2ImgRequest(Txt2ImgRequest):
    """img2img, sketch and inpainting. ``init_images`` are PIL images; ``mask`` (white = change) makes
    it an inpainting job. Integer codes as A1111's API: ``resize_mode`` indexes ``RESIZE_MODES``,
    ``inpainting_fill`` indexes ``MASKED_CONTENT``, ``inpainting_mask_invert`` 1 = inpaint not masked."""

    init_images: tuple = ()
    mask: object = None
    resize_mode: int = 0
    mask_blur: int = 4
    inpainting_fill: int = 1
    inpaint_full_res: bool = False  # Inpaint area: Only masked
    inpaint_full_res_padding: int = 32
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float = 1.0
    latent_mask: object = None  # a mask for the latent blend only (outpainting scripts)
    mode: int = 0  # the UI sub-tab: 0 img2img, 1 sketch, 2 inpaint, 3 inpaint sketch, 4 inpaint upload, 5 batch

    def validate(self, upscalers: Collection[str] = ()) -> "Img2ImgRequest":
        checked = super().validate(upscalers)
        if not self.init_images:
            raise InvalidRequest("init_images", "needs at least one image")
        if not all(isinstance(image, Image.Image) for image in self.init_images):
            raise InvalidRequest("init_images", "must be images")
        if len(self.init_images) not in (1, self.batch_size):
            raise InvalidRequest("init_images", f"has {len(self.init_images)} images; give one, or one per image of a batch ({self.batch_size})")
        for name in ("mask", "latent_mask"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), Image.Image):
                raise InvalidRequest(name, "must be an image")
        return replace(checked, init_images=tuple(self.init_images))


def _integral(field: str, value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(field, f"must be a whole number; got {value!r}")
    return value


def _whole_float_as_int(value: float) -> float | int:
    """A1111's UI sends 7 for a CFG slider at 7; the API sends 7.0. Normalising keeps the infotext
    of one request the same whichever way it came in."""
    return int(value) if isinstance(value, float) and value.is_integer() else value
