"""Real-ESRGAN's SRVGGNetCompact (``realesr-general-x4v3``, ``realesr-animevideov3``).

A plain stack of 3x3 convolutions with PReLU activations at input resolution; the last conv
makes ``channels * scale²`` maps that a pixel shuffle turns into the residual over a
nearest-neighbour upsampled copy of the input. Keys: ``body.0`` (first conv), ``body.1`` (its
PReLU), then a conv and a PReLU per extra layer, and the last conv at ``body.{2 * num_conv + 2}``.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

StateDict = dict[str, torch.Tensor]

_BODY_WEIGHT = re.compile(r"body\.(\d+)\.weight")


class SRVGGNetCompact(nn.Module):
    def __init__(self, in_channels: int = 3, num_feat: int = 64, num_conv: int = 16,
                 scale: int = 4):
        super().__init__()
        self.in_channels = in_channels
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(in_channels, num_feat, 3, 1, 1),
                                   nn.PReLU(num_parameters=num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)]
        layers.append(nn.Conv2d(num_feat, in_channels * scale ** 2, 3, 1, 1))
        self.body = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        base = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return F.pixel_shuffle(out, self.scale) + base


def is_compact(state_dict: StateDict) -> bool:
    first, act = state_dict.get("body.0.weight"), state_dict.get("body.1.weight")
    return first is not None and first.ndim == 4 and act is not None and act.ndim == 1


def from_state_dict(state_dict: StateDict) -> SRVGGNetCompact:
    """An SRVGGNetCompact shaped after, and strictly loaded from, its state dict."""
    convs = sorted(int(m.group(1)) for key, value in state_dict.items()
                   if (m := _BODY_WEIGHT.fullmatch(key)) and value.ndim == 4)
    first, last = state_dict["body.0.weight"], state_dict[f"body.{convs[-1]}.weight"]
    in_channels = first.shape[1]
    scale = math.isqrt(last.shape[0] // in_channels)
    if in_channels * scale ** 2 != last.shape[0] or scale < 1:
        raise ValueError(f"compact model's last conv makes {last.shape[0]} maps, which is not "
                         f"{in_channels} channels times a square scale")
    model = SRVGGNetCompact(in_channels=in_channels, num_feat=first.shape[0],
                            num_conv=len(convs) - 2, scale=scale)
    model.load_state_dict(state_dict, strict=True)
    return model
