"""Tiled inference for image upscalers, so that a large image fits in memory.

The image is cut into overlapping tiles, each tile is upscaled on its own, and the upscaled tiles
are blended with a linear feather across each overlap. A convolution sees zero padding at a tile's
edge where the whole image would have had real pixels, so a tile's outermost pixels are wrong by
up to the model's receptive radius. The feather therefore leaves the outer quarter of each overlap
(on each side) out of the blend entirely and ramps linearly across the middle half: a model whose
receptive radius is at most ``overlap // 4`` input pixels gives exactly the untiled result, and a
larger one gets its edge errors faded in instead of a visible seam.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Model = Callable[[torch.Tensor], torch.Tensor]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom and right of a (N, C, H, W) tensor so that H and W are multiples of ``multiple``.

    Mirror padding keeps the image statistics that the model expects; it needs the pad to be
    smaller than the image, so tiny images are edge-replicated instead.
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not pad_h and not pad_w:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis: a stride of ``tile - overlap``, the last tile flush with the end."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def _feather(length: int, ramp: int, guard: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """Blend weights along one axis of an upscaled tile (``ramp``/``guard`` in output pixels).

    An edge that borders another tile gets weight 0 for ``guard`` pixels and then a linear ramp to
    1 at ``ramp - guard`` pixels; where the neighbour's ramp mirrors it the two weights sum to 1.
    Edges on the image border keep weight 1: there the tile sees the same border as the image.
    """
    weights = torch.ones(length)
    if ramp <= 0:
        return weights
    distance = torch.arange(length, dtype=torch.float32) + 0.5
    width = ramp - 2 * guard
    if at_start:
        weights = torch.minimum(weights, ((distance - guard) / width).clamp(0, 1))
    if at_end:
        weights = torch.minimum(weights, ((length - distance - guard) / width).clamp(0, 1))
    return weights


def tiled_forward(model: Model, image: torch.Tensor, scale: int, tile: int, overlap: int,
                  device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``model(image)`` computed tile by tile; ``tile == 0`` runs the whole image at once.

    ``image`` is (1, C, H, W) float32 on any device; only one tile at a time is sent to ``device``
    as ``dtype``, and the result is assembled in float32 on ``image``'s device.
    """
    if tile < 0 or overlap < 0:
        raise ValueError(f"tile ({tile}) and overlap ({overlap}) must not be negative")
    height, width = image.shape[-2:]
    if tile == 0 or (height <= tile and width <= tile):
        return _run(model, image, scale, device, dtype)
    if overlap >= tile:
        raise ValueError(f"tile overlap ({overlap}) must be smaller than the tile size ({tile})")

    tile_h, tile_w = min(tile, height), min(tile, width)
    ramp, guard = overlap * scale, (overlap // 4) * scale
    result = weight_sum = None
    for y in tile_starts(height, tile, overlap):
        weights_y = _feather(tile_h * scale, ramp, guard, y > 0, y + tile_h < height)
        for x in tile_starts(width, tile, overlap):
            weights_x = _feather(tile_w * scale, ramp, guard, x > 0, x + tile_w < width)
            patch = _run(model, image[..., y:y + tile_h, x:x + tile_w], scale, device, dtype)
            if result is None:
                result = image.new_zeros((1, patch.shape[1], height * scale, width * scale))
                weight_sum = image.new_zeros((1, 1, height * scale, width * scale))
            mask = (weights_y[:, None] * weights_x[None, :]).to(image.device)
            rows = slice(y * scale, (y + tile_h) * scale)
            cols = slice(x * scale, (x + tile_w) * scale)
            result[..., rows, cols] += patch * mask
            weight_sum[..., rows, cols] += mask
    return result / weight_sum


def _run(model: Model, patch: torch.Tensor, scale: int, device, dtype) -> torch.Tensor:
    out = model(patch.to(device=device, dtype=dtype))
    expected = (patch.shape[-2] * scale, patch.shape[-1] * scale)
    if tuple(out.shape[-2:]) != expected:
        raise ValueError(f"the upscaler turned a {patch.shape[-1]}x{patch.shape[-2]} input into "
                         f"{out.shape[-1]}x{out.shape[-2]}, not the {expected[1]}x{expected[0]} "
                         f"that its scale {scale} implies")
    return out.to(device=patch.device, dtype=torch.float32)
