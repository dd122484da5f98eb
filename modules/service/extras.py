"""The Extras tab's upscale ("postprocessing"), for the tab and the API's extra-single-image and
extra-batch-images: scale by a factor or to a size (optionally cropped to it), with a second
upscaler blended in at a visibility. Upscalers: the built-in ones (None, Lanczos, Nearest) and the
model files of ``UpscalerLibrary``; ``postprocess`` takes the function that runs one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from PIL import Image

from modules.core.generation.image_ops import upscale
from modules.core.generation.request import IMAGE_UPSCALERS, InvalidRequest
from modules.core.infotext import quote


@dataclass(frozen=True)
class ExtrasRequest:
    resize_mode: int = 0  # 0: scale by ``scale``; 1: to width × height
    scale: float = 2.0
    width: int = 512
    height: int = 512
    crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    upscaler_2_visibility: float = 0.0
    gfpgan_visibility: float = 0.0
    codeformer_visibility: float = 0.0

    def validate(self, upscalers: Sequence[str] = IMAGE_UPSCALERS) -> "ExtrasRequest":
        if self.resize_mode not in (0, 1):
            raise InvalidRequest("resize_mode", f"must be 0 (scale by) or 1 (scale to); got {self.resize_mode!r}")
        if not 1.0 <= self.scale <= 8.0:
            raise InvalidRequest("upscaling_resize", f"must be between 1 and 8; got {self.scale!r}")
        for field, value in (("upscaling_resize_w", self.width), ("upscaling_resize_h", self.height)):
            if not 1 <= value <= 8192:
                raise InvalidRequest(field, f"must be between 1 and 8192; got {value!r}")
        for field, value in (("upscaler_1", self.upscaler_1), ("upscaler_2", self.upscaler_2)):
            if value not in upscalers:
                raise InvalidRequest(field, f"unknown upscaler {value!r}; available: {', '.join(upscalers)}")
        if not 0.0 <= self.upscaler_2_visibility <= 1.0:
            raise InvalidRequest("extras_upscaler_2_visibility", f"must be between 0 and 1; got {self.upscaler_2_visibility!r}")
        for field, value in (("gfpgan_visibility", self.gfpgan_visibility),
                             ("codeformer_visibility", self.codeformer_visibility)):
            if value:
                raise InvalidRequest(field, "face restoration is not available in Hanga yet; send 0")
        return self


Upscale = Callable[[Image.Image, float, str], Image.Image]


def postprocess(image: Image.Image, request: ExtrasRequest, run: Upscale = upscale) -> tuple[Image.Image, str]:
    """The upscaled picture and its ``postprocessing`` infotext; ``run(image, factor, name)`` upscales."""
    image = image.convert("RGB")
    if request.resize_mode == 1:
        factor = max(request.width / image.width, request.height / image.height)
    else:
        factor = request.scale
    info: dict[str, object] = {}
    if request.upscaler_1 != "None" or factor != 1:
        result = _upscale(image, factor, request.upscaler_1, request, run)
        if request.upscaler_2 != "None" and request.upscaler_2_visibility > 0:
            second = _upscale(image, factor, request.upscaler_2, request, run)
            result = Image.blend(result, second.resize(result.size), request.upscaler_2_visibility)
        if request.resize_mode == 1:
            info["Postprocess upscale to"] = f"{request.width}x{request.height}"
            if request.crop:
                info["Postprocess crop to"] = f"{request.width}x{request.height}"
        else:
            info["Postprocess upscale by"] = f"{request.scale:g}"
        info["Postprocess upscaler"] = request.upscaler_1
        if request.upscaler_2 != "None" and request.upscaler_2_visibility > 0:
            info["Postprocess upscaler 2"] = request.upscaler_2
        image = result
    return image, ", ".join(f"{key}: {quote(str(value))}" for key, value in info.items())


def _upscale(image: Image.Image, factor: float, upscaler: str, request: ExtrasRequest, run: Upscale) -> Image.Image:
    result = run(image, factor, upscaler)
    if request.resize_mode == 1 and request.crop:  # centred on a canvas of the asked size, as A1111
        canvas = Image.new("RGB", (request.width, request.height))
        canvas.paste(result, (request.width // 2 - result.width // 2, request.height // 2 - result.height // 2))
        result = canvas
    return result
