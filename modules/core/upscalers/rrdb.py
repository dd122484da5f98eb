"""ESRGAN's RRDBNet (Wang et al. 2018), as used by ESRGAN and Real-ESRGAN model files.

Two key layouts exist for the same network. BasicSR / Real-ESRGAN files name modules
(``conv_first``, ``body.N.rdb1.conv1``, ``conv_body``, ``conv_up1``, ``conv_hr``, ``conv_last``);
files from the original ESRGAN code (``ESRGAN_4x.pth``, 4x-UltraSharp and most community models)
number them in one flat ``model.K`` sequence. Old files are renamed to the new layout before
loading, so one module serves both.

Real-ESRGAN's x2 and x1 models always upsample 4x inside, and instead pixel-unshuffle the input
first (``conv_first`` then sees 4 or 16 times the image channels).
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from modules.core.upscalers.tiles import pad_to_multiple

StateDict = dict[str, torch.Tensor]

_NEW_BLOCK = re.compile(r"body\.(\d+)\.rdb1\.conv1\.weight")
_NEW_UP = re.compile(r"conv_up(\d+)\.weight")
_OLD_TOP = re.compile(r"model\.(\d+)\.(weight|bias)")
_OLD_BLOCK = re.compile(r"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)")
_OLD_BODY = re.compile(r"model\.1\.sub\.(\d+)\.(weight|bias)")


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class ResidualDenseBlock(nn.Module):
    """Five densely connected convolutions; the output is scaled by 0.2 and added to the input."""

    def __init__(self, nf: int, gc: int):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            features.append(_lrelu(conv(torch.cat(features, 1))))
        return self.conv5(torch.cat(features, 1)) * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks inside a scaled residual."""

    def __init__(self, nf: int, gc: int):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(nf, gc)
        self.rdb2 = ResidualDenseBlock(nf, gc)
        self.rdb3 = ResidualDenseBlock(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """RRDBNet in the BasicSR layout; ``scale = 2 ** num_upsamples / unshuffle``."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, nf: int = 64, nb: int = 23,
                 gc: int = 32, num_upsamples: int = 2, unshuffle: int = 1):
        super().__init__()
        if (2 ** num_upsamples) % unshuffle:
            raise ValueError(f"{num_upsamples} upsampling convs cannot undo a pixel-unshuffle "
                             f"by {unshuffle}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.unshuffle = unshuffle
        self.scale = 2 ** num_upsamples // unshuffle
        self.conv_first = nn.Conv2d(in_channels * unshuffle ** 2, nf, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(nf, gc) for _ in range(nb)))
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.up_names = [f"conv_up{i + 1}" for i in range(num_upsamples)]
        for name in self.up_names:
            self.add_module(name, nn.Conv2d(nf, nf, 3, 1, 1))
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, out_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(pad_to_multiple(x, self.unshuffle), self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for name in self.up_names:
            feat = _lrelu(getattr(self, name)(F.interpolate(feat, scale_factor=2, mode="nearest")))
        out = self.conv_last(_lrelu(self.conv_hr(feat)))
        return out[..., :height * self.scale, :width * self.scale]


def is_new_layout(state_dict: StateDict) -> bool:
    return "conv_first.weight" in state_dict and "body.0.rdb1.conv1.weight" in state_dict


def is_old_layout(state_dict: StateDict) -> bool:
    return "model.0.weight" in state_dict and "model.1.sub.0.RDB1.conv1.0.weight" in state_dict


def convert_old_layout(state_dict: StateDict) -> StateDict:
    """Rename an original-ESRGAN (``model.K``) state dict to the BasicSR layout.

    The flat sequence is conv_first (0), the shortcut block (1: ``sub.0..nb-1`` blocks and
    ``sub.nb`` the trunk conv), then per 2x step an Upsample, a conv and a LeakyReLU, then the HR
    conv, a LeakyReLU and the last conv. So among the top-level convs after index 1 the last two
    are ``conv_hr`` and ``conv_last`` and the rest upsample. Unknown keys are kept as they are, so
    that strict loading names them.
    """
    top = sorted({int(m.group(1)) for key in state_dict if (m := _OLD_TOP.fullmatch(key))})
    tail = [index for index in top if index >= 2]
    if len(tail) < 2:
        raise ValueError(f"old-layout ESRGAN file without its output convs (top-level convs "
                         f"found: {', '.join(f'model.{i}' for i in top)})")
    names = {0: "conv_first", tail[-2]: "conv_hr", tail[-1]: "conv_last"}
    names.update({index: f"conv_up{n + 1}" for n, index in enumerate(tail[:-2])})
    blocks = {int(m.group(1)) for key in state_dict if (m := _OLD_BLOCK.fullmatch(key))}
    trunk = max(blocks) + 1

    converted = {}
    for key, value in state_dict.items():
        if m := _OLD_BLOCK.fullmatch(key):
            block, rdb, conv, kind = m.groups()
            key = f"body.{block}.rdb{rdb}.conv{conv}.{kind}"
        elif (m := _OLD_BODY.fullmatch(key)) and int(m.group(1)) == trunk:
            key = f"conv_body.{m.group(2)}"
        elif (m := _OLD_TOP.fullmatch(key)) and int(m.group(1)) in names:
            key = f"{names[int(m.group(1))]}.{m.group(2)}"
        converted[key] = value
    return converted


def _unshuffle_factor(in_total: int, out_channels: int) -> tuple[int, int]:
    """(image channels, unshuffle factor) from conv_first's input channels."""
    for factor in (4, 2):
        if in_total == out_channels * factor ** 2:
            return out_channels, factor
    return in_total, 1


def from_state_dict(state_dict: StateDict) -> RRDBNet:
    """An RRDBNet shaped after, and strictly loaded from, a state dict in either layout."""
    if is_old_layout(state_dict):
        state_dict = convert_old_layout(state_dict)
    blocks = {int(m.group(1)) for key in state_dict if (m := _NEW_BLOCK.fullmatch(key))}
    ups = {int(m.group(1)) for key in state_dict if (m := _NEW_UP.fullmatch(key))}
    if ups != set(range(1, len(ups) + 1)):
        raise ValueError(f"ESRGAN upsampling convs are not numbered 1..n: {sorted(ups)}")
    try:
        first, last = state_dict["conv_first.weight"], state_dict["conv_last.weight"]
        gc = state_dict["body.0.rdb1.conv1.weight"].shape[0]
    except KeyError as missing:
        raise ValueError(f"ESRGAN state dict lacks {missing}") from None
    in_channels, unshuffle = _unshuffle_factor(first.shape[1], last.shape[0])
    model = RRDBNet(in_channels=in_channels, out_channels=last.shape[0], nf=first.shape[0],
                    nb=len(blocks), gc=gc, num_upsamples=len(ups), unshuffle=unshuffle)
    model.load_state_dict(state_dict, strict=True)
    return model

