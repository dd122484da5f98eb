"""Image-side steps of img2img and inpainting, as A1111 does them (``images.resize_image``,
``masking.*``, the mask blur and the final overlay).

All functions take and return PIL images; sizes follow A1111's integer arithmetic exactly, because
where a pixel lands decides which pixels an inpaint may touch.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image, ImageFilter, ImageOps
from scipy.ndimage import convolve1d

LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST

# One pass of an upscaler model (ESRGAN …): the picture times the model's own scale.
ImageUpscaler = Callable[[Image.Image], Image.Image]


def flatten(image: Image.Image, background: str = "#ffffff") -> Image.Image:
    """RGB; transparent pixels are put on ``background`` (setting img2img_background_color)."""
    if image.mode == "RGBA":
        base = Image.new("RGBA", image.size, background)
        base.alpha_composite(image)
        image = base
    return image.convert("RGB")


def upscale(image: Image.Image, scale: float, upscaler: str, model: ImageUpscaler | None = None) -> Image.Image:
    """A1111's ``Upscaler.upscale``: up to three passes of the upscaler (``model``, one pass of an
    upscaler model, for names other than the built-in ones), then a Lanczos resize to
    ``image·scale`` rounded down to a multiple of 8."""
    dest_w = int((image.width * scale) // 8 * 8)
    dest_h = int((image.height * scale) // 8 * 8)
    if model is not None:
        for _ in range(3):
            if image.width >= dest_w and image.height >= dest_h:
                break
            image = model(image)
    elif upscaler in ("Lanczos", "Nearest"):
        resample = LANCZOS if upscaler == "Lanczos" else NEAREST
        for _ in range(3):
            if image.width >= dest_w and image.height >= dest_h:
                break
            before = image.size
            image = image.resize((int(image.width * scale), int(image.height * scale)), resample=resample)
            if image.size == before:
                break
    elif upscaler != "None":
        raise ValueError(f"unknown upscaler {upscaler!r}; available: None, Lanczos, Nearest")
    if image.size != (dest_w, dest_h):
        image = image.resize((dest_w, dest_h), resample=LANCZOS)
    return image


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """"Resize by": ``int(side · scale)`` taken down to a multiple of 8 (the size the latent gives)."""
    width, height = int(size[0] * scale), int(size[1] * scale)
    return width - width % 8, height - height % 8


def _resize(image: Image.Image, width: int, height: int, upscaler: str | None,
            model: ImageUpscaler | None = None) -> Image.Image:
    if upscaler is None or upscaler == "None" or image.mode == "L":
        return image.resize((width, height), resample=LANCZOS)
    scale = max(width / image.width, height / image.height)
    if scale > 1.0:
        image = upscale(image, scale, upscaler, model)
    if image.size != (width, height):
        image = image.resize((width, height), resample=LANCZOS)
    return image


def resize_image(mode: int, image: Image.Image, width: int, height: int, upscaler: str | None = None,
                 model: ImageUpscaler | None = None) -> Image.Image:
    """0 Just resize; 1 Crop and resize (cover, centre crop); 2 Resize and fill (fit, then stretch
    the edge rows/columns into the bars). Mode 3 (latent upscale) resizes images as mode 2."""
    if mode == 0:
        return _resize(image, width, height, upscaler, model)
    ratio, src_ratio = width / height, image.width / image.height
    if mode == 1:
        src_w = width if ratio > src_ratio else image.width * height // image.height
        src_h = height if ratio <= src_ratio else image.height * width // image.width
    else:
        src_w = width if ratio < src_ratio else image.width * height // image.height
        src_h = height if ratio >= src_ratio else image.height * width // image.width
    resized = _resize(image, src_w, src_h, upscaler, model)
    result = Image.new("RGB", (width, height))
    result.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if mode == 1:
        return result
    if ratio < src_ratio:
        fill = height // 2 - src_h // 2
        if fill > 0:
            result.paste(resized.resize((width, fill), box=(0, 0, width, 0)), box=(0, 0))
            result.paste(resized.resize((width, fill), box=(0, resized.height, width, resized.height)), box=(0, fill + src_h))
    elif ratio > src_ratio:
        fill = width // 2 - src_w // 2
        if fill > 0:
            result.paste(resized.resize((fill, height), box=(0, 0, 0, height)), box=(0, 0))
            result.paste(resized.resize((fill, height), box=(resized.width, 0, resized.width, height)), box=(fill + src_w, 0))
    return result


def _gaussian_kernel(sigma: float) -> np.ndarray:
    size = 2 * int(2.5 * sigma + 0.5) + 1
    x = np.arange(size) - (size - 1) / 2
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def blur_mask(mask: Image.Image, blur_x: float, blur_y: float | None = None) -> Image.Image:
    """A1111's mask blur: a separable Gaussian (kernel 2·int(2.5σ+0.5)+1, edges mirrored as
    OpenCV's default border), x then y, on the 8-bit mask."""
    blur_y = blur_x if blur_y is None else blur_y
    array = np.array(mask.convert("L"))
    for axis, sigma in ((1, blur_x), (0, blur_y)):
        if sigma > 0:
            blurred = convolve1d(array.astype(np.float64), _gaussian_kernel(sigma), axis=axis, mode="mirror")
            array = np.clip(np.rint(blurred), 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def crop_region(mask: Image.Image, pad: int = 0) -> tuple[int, int, int, int] | None:
    """The masked pixels' bounding box grown by ``pad`` (kept inside the image); None for an empty mask."""
    box = mask.getbbox()
    if not box:
        return None
    x1, y1, x2, y2 = box
    if not pad:
        return box
    return max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, mask.width), min(y2 + pad, mask.height)


def expand_crop_region(region, processing_width: int, processing_height: int, image_width: int, image_height: int):
    """Grow the crop box to the processing size's aspect ratio, shifting it back inside the image."""
    x1, y1, x2, y2 = region
    ratio_region = (x2 - x1) / (y2 - y1)
    ratio_processing = processing_width / processing_height
    if ratio_region > ratio_processing:
        y1, y2 = _grow((x2 - x1) / ratio_processing, y1, y2, image_height)
    else:
        x1, x2 = _grow((y2 - y1) * ratio_processing, x1, x2, image_width)
    return x1, y1, x2, y2


def _grow(desired: float, low: int, high: int, limit: int) -> tuple[int, int]:
    diff = int(desired - (high - low))
    low -= diff // 2
    high += diff - diff // 2
    if high >= limit:
        low -= high - limit
        high = limit
    if low < 0:
        high -= low
        low = 0
    return low, min(high, limit)


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Masked content "fill": the masked area painted with ever finer blurs of the unmasked colours."""
    result = Image.new("RGBA", image.size)
    masked = Image.new("RGBa", image.size)
    masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = masked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            result.alpha_composite(blurred)
    return result.convert("RGB")


def overlay_image(image: Image.Image, mask_for_overlay: Image.Image) -> Image.Image:
    """The original outside the mask, as an RGBA layer (alpha = 255 − mask) to composite at the end."""
    layer = Image.new("RGBa", image.size)
    layer.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask_for_overlay.convert("L")))
    return layer.convert("RGBA")


def apply_overlay(image: Image.Image, paste_to: tuple[int, int, int, int] | None, overlay: Image.Image | None) -> Image.Image:
    """Put the generated picture back: uncrop an "only masked" result into place (Crop and resize
    to the crop box), then composite the untouched original over it."""
    if overlay is None:
        return image
    if paste_to is not None:
        x, y, w, h = paste_to
        base = Image.new("RGBA", overlay.size)
        base.paste(resize_image(1, image, w, h), (x, y))
        image = base
    image = image.convert("RGBA")
    image.alpha_composite(overlay)
    return image.convert("RGB")
