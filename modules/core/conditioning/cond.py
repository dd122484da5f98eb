"""Text conditioning values, whatever the model family.

SD1 and SD2 U-Nets take one tensor, ``(batch, tokens, width)``. SDXL U-Nets take two: the token
embeddings (``"crossattn"``, the CLIP-L and bigG outputs side by side) and one vector per image
(``"vector"``: bigG's pooled output, plus the refiner's aesthetic score), held in a dict as A1111
does. These helpers stack, join and index either kind, always along the batch axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch

Cond = Union[torch.Tensor, dict[str, torch.Tensor]]
CROSSATTN = "crossattn"
VECTOR = "vector"


def token_embeddings(cond: Cond) -> torch.Tensor:
    return cond[CROSSATTN] if isinstance(cond, dict) else cond


def token_count(cond: Cond) -> int:
    """The token axis length of a batched value."""
    return int(token_embeddings(cond).shape[1])


def rows(cond: Cond) -> list[Cond]:
    """The per-image values of a batched value (the batch axis removed)."""
    if isinstance(cond, dict):
        count = cond[CROSSATTN].shape[0]
        return [{key: value[index] for key, value in cond.items()} for index in range(count)]
    return list(cond)


def _pad_tokens(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Shorter (tokens, width) values repeat their last vector (A1111's stack_conds)."""
    if tensor.shape[0] == length:
        return tensor
    return torch.vstack([tensor, tensor[-1:].repeat(length - tensor.shape[0], 1)])


def stack_padded(values: Sequence[Cond]) -> Cond:
    """Per-image values → one batched value, the token axis padded to the longest."""
    if isinstance(values[0], dict):
        longest = max(value[CROSSATTN].shape[0] for value in values)
        stacked = {CROSSATTN: torch.stack([_pad_tokens(value[CROSSATTN], longest) for value in values])}
        for key in values[0]:
            if key != CROSSATTN:
                stacked[key] = torch.stack([value[key] for value in values])
        return stacked
    longest = max(value.shape[0] for value in values)
    return torch.stack([_pad_tokens(value, longest) for value in values])


def cat(values: Sequence[Cond]) -> Cond:
    """Join batched values along the batch axis."""
    if isinstance(values[0], dict):
        return {key: torch.cat([value[key] for value in values]) for key in values[0]}
    return torch.cat(list(values))


def repeat_interleave(cond: Cond, repeats: torch.Tensor) -> Cond:
    if isinstance(cond, dict):
        return {key: torch.repeat_interleave(value, repeats, dim=0) for key, value in cond.items()}
    return torch.repeat_interleave(cond, repeats, dim=0)


def zeros_like(cond: Cond) -> Cond:
    if isinstance(cond, dict):
        return {key: torch.zeros_like(value) for key, value in cond.items()}
    return torch.zeros_like(cond)


@dataclass(frozen=True)
class SdxlConditioning:
    """What an SDXL U-Net takes beside the token embeddings (``a1111-compat.md`` §5.4): the pooled
    text vector, and the size ids ``original_size (h, w) + crop (top, left) + target_size (h, w)``
    (base) or ``original_size + crop + aesthetic score`` (refiner). Both sizes are the picture
    being sampled, read from the latent's shape, so a hires pass or an img2img crop gets its own."""

    refiner: bool
    pooled_width: int
    downscale: int
    crop: tuple[int, int] = (0, 0)  # (top, left): A1111's sdxl_crop_top / sdxl_crop_left

    def unet_kwargs(self, cond: dict[str, torch.Tensor], latent: torch.Tensor, dtype: torch.dtype) -> dict:
        vector = cond[VECTOR]
        batch = vector.shape[0]
        height, width = latent.shape[-2] * self.downscale, latent.shape[-1] * self.downscale
        sizes = [height, width, *self.crop]
        ids = torch.tensor(sizes if self.refiner else sizes + [height, width], dtype=torch.float32, device=latent.device)
        ids = ids.repeat(batch, 1)
        if self.refiner:  # the aesthetic score travels with the text (6.0 positive, 2.5 negative)
            ids = torch.cat([ids, vector[:, self.pooled_width:].to(ids)], dim=1)
        pooled = vector[:, : self.pooled_width]
        return {
            "encoder_hidden_states": cond[CROSSATTN].to(dtype),
            "added_cond_kwargs": {"text_embeds": pooled.to(dtype), "time_ids": ids.to(dtype)},
        }
