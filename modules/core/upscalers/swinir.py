"""SwinIR (Liang et al. 2021) for image super-resolution.

Supported upsamplers: "nearest+conv" (real-world SR, e.g. A1111's "SwinIR 4x",
``003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth``), "pixelshuffle" (classical SR) and
"pixelshuffledirect" (lightweight SR). Denoising / JPEG models have no upsampler and are not
upscalers. Every hyper-parameter is read from the state dict's shapes; see ``infer_config``.

Two kinds of stored buffers are derived, not learned: each attention's
``relative_position_index`` and the shifted blocks' ``attn_mask``, whose shape depends on the
training crop size. Both are recomputed here for the actual input size and are dropped from the
state dict before (strict) loading.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from modules.core.upscalers.tiles import pad_to_multiple

StateDict = dict[str, torch.Tensor]

_DERIVED = re.compile(r".*\.(attn_mask|relative_position_index)")
_BLOCK = re.compile(r"layers\.(\d+)\.residual_group\.blocks\.(\d+)\.norm1\.weight")
_UPSAMPLE = re.compile(r"upsample\.(\d+)\.weight")
_RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K mean that every released SwinIR subtracts


@dataclass(frozen=True)
class SwinIRConfig:
    in_channels: int = 3
    embed_dim: int = 180
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    num_heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    window_size: int = 8
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    patch_norm: bool = True
    resi_connection: str = "1conv"  # or "3conv"
    upsampler: str = "nearest+conv"  # or "pixelshuffle", "pixelshuffledirect"
    upscale: int = 4
    num_feat: int = 64


def _window_partition(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, size * size, C), batch-major."""
    b, h, w, c = x.shape
    x = x.view(b, h // size, size, w // size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, size * size, c)


def _window_reverse(windows: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    b = windows.shape[0] // ((h // size) * (w // size))
    x = windows.view(b, h // size, w // size, size, size, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, -1)


def _relative_position_index(size: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij"))
    coords = coords.flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (size - 1)
    return relative[..., 0] * (2 * size - 1) + relative[..., 1]


def shift_mask(height: int, width: int, size: int, shift: int, device) -> torch.Tensor:
    """Additive attention mask (windows, N, N) that keeps a cyclically shifted window from
    attending across the wrap-around seam: -100 between pixels from different image regions."""
    regions = torch.zeros((1, height, width, 1), device=device)
    bands = (slice(0, -size), slice(-size, -shift), slice(-shift, None))
    label = 0
    for rows in bands:
        for cols in bands:
            regions[:, rows, cols, :] = label
            label += 1
    windows = _window_partition(regions, size).squeeze(-1)
    differs = windows[:, None, :] != windows[:, :, None]
    return torch.zeros(differs.shape, device=device).masked_fill(differs, -100.0)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", _relative_position_index(window_size),
                             persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        windows, n, c = x.shape
        qkv = self.qkv(x).view(windows, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)  # (1, heads, N, N)
        if mask is not None:  # (nW, N, N), repeated for each image in the batch
            bias = (bias + mask.unsqueeze(1)).repeat(windows // mask.shape[0], 1, 1, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(windows, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int, mlp_ratio: float,
                 qkv_bias: bool):
        super().__init__()
        self.window_size, self.shift = window_size, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor) -> torch.Tensor:
        h, w = size
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(_window_partition(y, self.window_size), mask if self.shift else None)
        y = _window_reverse(y, self.window_size, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class _ResidualGroup(nn.Module):
    def __init__(self, blocks: list[SwinTransformerBlock]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


def _conv_after(dim: int, kind: str) -> nn.Module:
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    return nn.Sequential(nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(0.2),
                         nn.Conv2d(dim // 4, dim // 4, 1, 1, 0), nn.LeakyReLU(0.2),
                         nn.Conv2d(dim // 4, dim, 3, 1, 1))


def _tokens_to_image(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *size)


def _image_to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


class RSTB(nn.Module):
    """Residual Swin Transformer block: Swin blocks, a conv, and a residual around both."""

    def __init__(self, config: SwinIRConfig, depth: int, num_heads: int):
        super().__init__()
        ws = config.window_size
        self.residual_group = _ResidualGroup([
            SwinTransformerBlock(config.embed_dim, num_heads, ws, 0 if i % 2 == 0 else ws // 2,
                                 config.mlp_ratio, config.qkv_bias)
            for i in range(depth)])
        self.conv = _conv_after(config.embed_dim, config.resi_connection)

    def forward(self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor) -> torch.Tensor:
        y = x
        for block in self.residual_group.blocks:
            y = block(y, size, mask)
        return _image_to_tokens(self.conv(_tokens_to_image(y, size))) + x


class _PatchEmbedNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)


class SwinIR(nn.Module):
    def __init__(self, config: SwinIRConfig):
        super().__init__()
        self.config = config
        self.in_channels = config.in_channels
        self.scale = config.upscale
        dim, feat, out_ch = config.embed_dim, config.num_feat, config.in_channels
        mean = _RGB_MEAN if config.in_channels == 3 else (0.0,) * config.in_channels
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(config.in_channels, dim, 3, 1, 1)
        if config.patch_norm:
            self.patch_embed = _PatchEmbedNorm(dim)
        self.layers = nn.ModuleList(RSTB(config, depth, heads)
                                    for depth, heads in zip(config.depths, config.num_heads))
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = _conv_after(dim, config.resi_connection)
        if config.upsampler == "pixelshuffledirect":
            self.upsample = nn.Sequential(nn.Conv2d(dim, out_ch * config.upscale ** 2, 3, 1, 1),
                                          nn.PixelShuffle(config.upscale))
            return
        # The published code uses LeakyReLU's default slope (0.01) here, 0.2 everywhere else.
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(dim, feat, 3, 1, 1), nn.LeakyReLU())
        if config.upsampler == "pixelshuffle":
            self.upsample = _pixelshuffle_upsample(config.upscale, feat)
        else:
            self.conv_up1 = nn.Conv2d(feat, feat, 3, 1, 1)
            if config.upscale == 4:
                self.conv_up2 = nn.Conv2d(feat, feat, 3, 1, 1)
            self.conv_hr = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(feat, out_ch, 3, 1, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[2], x.shape[3])
        tokens = _image_to_tokens(x)
        if self.config.patch_norm:
            tokens = self.patch_embed.norm(tokens)
        ws = self.config.window_size
        mask = shift_mask(size[0], size[1], ws, ws // 2, x.device).to(x.dtype)
        for layer in self.layers:
            tokens = layer(tokens, size, mask)
        return _tokens_to_image(self.norm(tokens), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = pad_to_multiple(x, self.config.window_size) - self.mean
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        if self.config.upsampler == "pixelshuffledirect":
            x = self.upsample(x)
        else:
            x = self.conv_before_upsample(x)
            x = self.conv_last(self._upsample(x))
        return (x + self.mean)[..., :height * self.scale, :width * self.scale]

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.upsampler == "pixelshuffle":
            return self.upsample(x)
        ups = (self.conv_up1, self.conv_up2) if self.config.upscale == 4 else (self.conv_up1,)
        for conv in ups:
            x = F.leaky_relu(conv(F.interpolate(x, scale_factor=2, mode="nearest")), 0.2)
        return F.leaky_relu(self.conv_hr(x), 0.2)


def _pixelshuffle_upsample(scale: int, feat: int) -> nn.Sequential:
    if scale == 3:
        return nn.Sequential(nn.Conv2d(feat, 9 * feat, 3, 1, 1), nn.PixelShuffle(3))
    steps = int(math.log2(scale))
    if 2 ** steps != scale:
        raise ValueError(f"SwinIR pixelshuffle upsampler supports scales 2^n and 3, not {scale}")
    layers: list[nn.Module] = []
    for _ in range(steps):
        layers += [nn.Conv2d(feat, 4 * feat, 3, 1, 1), nn.PixelShuffle(2)]
    return nn.Sequential(*layers)


def is_swinir(state_dict: StateDict) -> bool:
    return ("conv_first.weight" in state_dict
            and "layers.0.residual_group.blocks.0.attn.relative_position_bias_table" in state_dict)


def infer_config(state_dict: StateDict) -> SwinIRConfig:
    """SwinIR's hyper-parameters, read from the shapes and names of its weights."""
    blocks: dict[int, int] = {}
    for key in state_dict:
        if m := _BLOCK.fullmatch(key):
            layer, block = int(m.group(1)), int(m.group(2))
            blocks[layer] = max(blocks.get(layer, 0), block + 1)
    depths = tuple(blocks[i] for i in sorted(blocks))
    tables = [state_dict[f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table"]
              for i in sorted(blocks)]
    side = math.isqrt(tables[0].shape[0])
    if side * side != tables[0].shape[0] or side % 2 == 0:
        raise ValueError(f"SwinIR relative position table has {tables[0].shape[0]} rows, "
                         f"not (2w-1)² for a window size w")
    first = state_dict["conv_first.weight"]
    embed_dim = first.shape[0]
    fc1 = state_dict["layers.0.residual_group.blocks.0.mlp.fc1.weight"]
    upsampler, upscale, num_feat = _infer_upsampler(state_dict, first.shape[1])
    return SwinIRConfig(
        in_channels=first.shape[1], embed_dim=embed_dim, depths=depths,
        num_heads=tuple(table.shape[1] for table in tables), window_size=(side + 1) // 2,
        mlp_ratio=fc1.shape[0] / embed_dim,
        qkv_bias="layers.0.residual_group.blocks.0.attn.qkv.bias" in state_dict,
        patch_norm="patch_embed.norm.weight" in state_dict,
        resi_connection="3conv" if "conv_after_body.0.weight" in state_dict else "1conv",
        upsampler=upsampler, upscale=upscale, num_feat=num_feat)


def _infer_upsampler(state_dict: StateDict, channels: int) -> tuple[str, int, int]:
    if "conv_up1.weight" in state_dict:
        feat = state_dict["conv_up1.weight"].shape[0]
        return "nearest+conv", 4 if "conv_up2.weight" in state_dict else 2, feat
    convs = sorted(int(m.group(1)) for key in state_dict if (m := _UPSAMPLE.fullmatch(key)))
    if not convs:
        raise ValueError("SwinIR model without an upsampler (a denoising or JPEG-artifact model) "
                         "is not an upscaler")
    maps = state_dict["upsample.0.weight"].shape[0]
    if "conv_before_upsample.0.weight" not in state_dict:
        return "pixelshuffledirect", math.isqrt(maps // channels), 0  # no feature convs
    feat = state_dict["conv_before_upsample.0.weight"].shape[0]
    return "pixelshuffle", 3 if maps == 9 * feat else 2 ** len(convs), feat


def from_state_dict(state_dict: StateDict) -> SwinIR:
    """A SwinIR shaped after, and strictly loaded from, its state dict."""
    model = SwinIR(infer_config(state_dict))
    learned = {key: value for key, value in state_dict.items() if not _DERIVED.fullmatch(key)}
    model.load_state_dict(learned, strict=True)
    return model
