"""Image upscaler networks from A1111's model folders (``models/ESRGAN``, ``models/RealESRGAN``,
``models/SwinIR``), implemented here because spandrel and basicsr would pull in torchvision.

Callers read a file with ``modules.core.safe_load`` and pass what it holds to
``build_upscaler``; the architecture and all its sizes come from the weights, never from the file
name. The returned module is on the CPU in float32; placing it on a device is the memory
manager's job, and ``upscale_image`` runs it wherever it already is.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from PIL import Image

from modules.core.upscalers import compact, rrdb, swinir
from modules.core.upscalers.tiles import tiled_forward

ESRGAN = "ESRGAN"
COMPACT = "RealESRGAN compact"
SWINIR = "SwinIR"

_WRAPPERS = ("params_ema", "params", "state_dict")
_BUILDERS = {ESRGAN: rrdb.from_state_dict, COMPACT: compact.from_state_dict,
             SWINIR: swinir.from_state_dict}


def unwrap(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """The weights inside a training checkpoint, without DataParallel's ``module.`` prefixes.

    BasicSR saves ``{"params_ema": …}`` (preferred: the averaged weights) and/or ``{"params": …}``.
    """
    for name in _WRAPPERS:
        inner = checkpoint.get(name)
        if isinstance(inner, Mapping):
            checkpoint = inner
            break
    return {key.removeprefix("module."): value for key, value in checkpoint.items()
            if isinstance(value, torch.Tensor)}


def detect_architecture(state_dict: Mapping) -> str:
    """``"ESRGAN"``, ``"RealESRGAN compact"`` or ``"SwinIR"``; ``ValueError`` for anything else."""
    weights = unwrap(state_dict)
    if rrdb.is_new_layout(weights) or rrdb.is_old_layout(weights):
        return ESRGAN
    if swinir.is_swinir(weights):
        return SWINIR
    if compact.is_compact(weights):
        return COMPACT
    raise ValueError(f"not a supported upscaler model (ESRGAN, Real-ESRGAN, Real-ESRGAN compact "
                     f"or SwinIR); {_describe(state_dict, weights)}")


def _describe(raw: Mapping, weights: dict[str, torch.Tensor]) -> str:
    if not weights:
        entries = ", ".join(repr(key) for key in list(raw)[:8]) or "none"
        return (f"it holds no weights (top-level entries: {entries}); BasicSR files nest them "
                f"under 'params_ema' / 'params', so read them with safe_load.load_torch_file")
    keys = list(weights)
    shown = ", ".join(keys[:6]) + (f", … ({len(keys)} keys)" if len(keys) > 6 else "")
    return f"its weights are named {shown}"


def build_upscaler(state_dict: Mapping) -> tuple[torch.nn.Module, int, str]:
    """(model in eval mode, integer scale, architecture name) for an upscaler's weights.

    Loading is strict: a missing or unexpected weight raises, so a file of another kind is an
    error rather than a model that paints noise.
    """
    weights = unwrap(state_dict)
    arch = detect_architecture(weights)
    try:
        model = _BUILDERS[arch](weights)
    except KeyError as missing:  # a weight needed to read the sizes from
        raise ValueError(f"{arch} weights lack {missing}") from None
    except RuntimeError as exc:  # load_state_dict's missing/unexpected/size-mismatch report
        raise ValueError(f"{arch} weights do not fit the architecture they look like: {exc}") \
            from None
    model.eval().requires_grad_(False)
    return model, model.scale, arch


def upscale_image(model: torch.nn.Module, scale: int, image: Image.Image, tile: int = 192,
                  overlap: int = 8, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> Image.Image:
    """``image`` upscaled ``scale`` times by ``model``, ``tile`` input pixels at a time (0: whole).

    The model must already be on ``device`` in ``dtype``. Colour goes through the network; an
    alpha channel is resized with Lanczos on its own, as A1111 does.
    """
    _check_placement(model, device, dtype)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info)
    alpha = image.convert("RGBA").getchannel("A") if has_alpha else None
    channels = getattr(model, "in_channels", 3)
    if channels not in (1, 3):
        raise ValueError(f"upscaler expects {channels}-channel images; only 1 and 3 are supported")
    colour = image.convert("RGB" if channels == 3 else "L")
    array = np.asarray(colour, dtype=np.float32).reshape(colour.height, colour.width, channels)
    x = torch.from_numpy(array / 255.0).permute(2, 0, 1).unsqueeze(0)
    with torch.inference_mode():
        y = tiled_forward(model, x, scale, tile, overlap, device, dtype)
    pixels = (y[0].clamp(0, 1).permute(1, 2, 0) * 255.0).round().to(torch.uint8).numpy()
    result = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, colour.mode)
    if alpha is not None:
        result.putalpha(alpha.resize(result.size, Image.Resampling.LANCZOS))
    return result


def _check_placement(model: torch.nn.Module, device, dtype: torch.dtype) -> None:
    weight, target = next(model.parameters()), torch.device(device)
    same_device = weight.device.type == target.type and target.index in (None, weight.device.index)
    if not same_device or weight.dtype != dtype:
        raise ValueError(f"upscaler weights are on {weight.device} as {weight.dtype}, but the "
                         f"image was to run on {target} as {dtype}; place the "
                         f"model through the memory manager first")


__all__ = ["COMPACT", "ESRGAN", "SWINIR", "build_upscaler", "detect_architecture", "unwrap",
           "upscale_image"]
