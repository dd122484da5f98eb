"""VAE decoding and encoding in tiles, with the same result as the whole image.

The decoder's memory goes to its up blocks, which work at 1× to 8× the latent's size. Tiling them
naively leaves seams: every GroupNorm would normalise each tile by its own statistics. Here the
GroupNorm statistics stay global, so the tiles give the whole-image result:

- ``post_quant_conv``, ``conv_in`` and the middle block (whose attention sees the whole latent) run
  on the whole latent; they are small at latent size.
- The rest runs as a short program over tiles (each a square of the latent with a halo of
  ``halo`` latent pixels, so the convolutions' reach never brings tile-edge padding into a tile's
  interior). At each GroupNorm the program stops: every tile adds its interior's per-group sums to
  global ones, then every tile is normalised with the global mean and variance.
- Between steps the tiles wait on ``store`` (the CPU when memory is short), so the device holds one
  tile at a time; the interiors are stitched into the picture.

Encoding runs the mirror image: the down blocks over pixel tiles (origins and halo on the 8-pixel
grid, so every strided convolution samples the same positions as on the whole picture), the
interiors stitched at latent size, then the middle block and output layers on the whole latent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class _Tile:
    state: torch.Tensor  # (1, C, h, w) with halo, on the store device
    box: tuple[int, int, int, int]  # interior (top, bottom, left, right) inside ``state``
    origin: tuple[int, int]  # interior's top-left in the whole picture at the current scale
    saved: list[torch.Tensor] = field(default_factory=list)


def _resnet_steps(resnet) -> list[tuple]:
    act = resnet.nonlinearity
    return [("save",), ("norm", resnet.norm1), ("local", lambda h, r=resnet, a=act: r.conv1(a(h))),
            ("norm", resnet.norm2), ("local", lambda h, r=resnet, a=act: r.conv2(r.dropout(a(h)))),
            ("residual", resnet.conv_shortcut, resnet.output_scale_factor)]


def _decoder_program(decoder: torch.nn.Module) -> list[tuple]:
    """The up path and output layers as steps: ("norm", GroupNorm), ("local", fn), ("save",),
    ("residual", shortcut, scale), ("resize", module, factor)."""
    steps: list[tuple] = []
    for block in decoder.up_blocks:
        for resnet in block.resnets:
            steps += _resnet_steps(resnet)
        for upsampler in block.upsamplers or ():
            steps.append(("resize", upsampler, 2))
    steps += [("norm", decoder.conv_norm_out), ("local", lambda h: decoder.conv_out(decoder.conv_act(h)))]
    return steps


def _encoder_program(encoder: torch.nn.Module) -> list[tuple]:
    steps: list[tuple] = [("local", encoder.conv_in)]
    for block in encoder.down_blocks:
        for resnet in block.resnets:
            steps += _resnet_steps(resnet)
        for downsampler in block.downsamplers or ():
            steps.append(("resize", downsampler, 0.5))
    return steps


def _interior(tile: _Tile, tensor: torch.Tensor) -> torch.Tensor:
    top, bottom, left, right = tile.box
    return tensor[:, :, top:bottom, left:right]


def _group_norm_global(norm: torch.nn.GroupNorm, tiles: list[_Tile], device: torch.device) -> None:
    groups = norm.num_groups
    total = total_sq = None
    count = 0
    for tile in tiles:
        x = _interior(tile, tile.state.to(device)).double()
        grouped = x.reshape(x.shape[0], groups, -1)
        part, part_sq = grouped.sum(dim=2), (grouped * grouped).sum(dim=2)
        total = part if total is None else total + part
        total_sq = part_sq if total_sq is None else total_sq + part_sq
        count += grouped.shape[2]
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0)
    for tile in tiles:
        x = tile.state.to(device)
        shape = x.shape
        grouped = x.reshape(shape[0], groups, -1)
        normed = ((grouped.double() - mean[..., None]) / torch.sqrt(var[..., None] + norm.eps)).to(x.dtype).reshape(shape)
        if norm.affine:
            normed = normed * norm.weight[None, :, None, None] + norm.bias[None, :, None, None]
        tile.state = normed.to(tile.state.device)


def _tiles(x: torch.Tensor, tile: int, halo: int, store: torch.device) -> list[_Tile]:
    height, width = x.shape[-2:]
    tiles = []
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            pad_top, pad_left = max(0, top - halo), max(0, left - halo)
            pad_bottom, pad_right = min(height, bottom + halo), min(width, right + halo)
            state = x[:, :, pad_top:pad_bottom, pad_left:pad_right].to(store)
            tiles.append(_Tile(state, (top - pad_top, bottom - pad_top, left - pad_left, right - pad_left), (top, left)))
    return tiles


def _run(steps: list[tuple], tiles: list[_Tile], device: torch.device, store: torch.device) -> float:
    """Run ``steps`` over every tile; returns the overall size factor (resizes multiply it)."""
    scale = 1.0
    for step in steps:
        kind = step[0]
        if kind == "norm":
            _group_norm_global(step[1], tiles, device)
            continue
        for item in tiles:
            if kind == "save":
                item.saved.append(item.state)
                continue
            h = item.state.to(device)
            if kind == "local":
                h = step[1](h)
            elif kind == "residual":
                shortcut, factor = step[1], step[2]
                residual = item.saved.pop().to(device)
                h = ((shortcut(residual) if shortcut is not None else residual) + h) / factor
            elif kind == "resize":
                h = step[1](h)
            item.state = h.to(store)
        if kind == "resize":
            factor = step[2]
            scale *= factor
            for item in tiles:
                item.box = tuple(int(value * factor) for value in item.box)
                item.origin = (int(item.origin[0] * factor), int(item.origin[1] * factor))
    return scale


def _stitch(tiles: list[_Tile], batch: int, height: int, width: int, store: torch.device) -> torch.Tensor:
    channels = tiles[0].state.shape[1]
    out = torch.empty((batch, channels, height, width), dtype=tiles[0].state.dtype, device=store)
    for item in tiles:
        part = _interior(item, item.state)
        top, left = item.origin
        out[:, :, top:top + part.shape[2], left:left + part.shape[3]] = part
    return out


@torch.no_grad()
def decode_tiled(vae, z: torch.Tensor, tile: int = 64, halo: int = 16, store: torch.device | None = None) -> torch.Tensor:
    """``vae.decode(z)`` for one latent (1, C, h, w), in tiles of ``tile`` latent pixels."""
    decoder = vae.decoder
    device = z.device
    store = store or device
    x = vae.post_quant_conv(z) if vae.post_quant_conv is not None else z
    x = decoder.conv_in(x)
    x = decoder.mid_block(x)
    x = x.to(next(iter(decoder.up_blocks.parameters())).dtype)
    height, width = x.shape[-2:]
    tiles = _tiles(x, tile, halo, store)
    del x
    scale = int(_run(_decoder_program(decoder), tiles, device, store))
    return _stitch(tiles, z.shape[0], height * scale, width * scale, store).to(device)


@torch.no_grad()
def encode_tiled(vae, pixels: torch.Tensor, tile: int = 512, halo: int = 96, store: torch.device | None = None) -> torch.Tensor:
    """The encoder's moments (what ``vae.encode`` builds its distribution from) for one picture
    (1, 3, H, W) in [-1, 1], in tiles of ``tile`` pixels; H, W, ``tile`` and ``halo`` are
    multiples of the VAE's downscale."""
    encoder = vae.encoder
    device = pixels.device
    store = store or device
    downscale = 2 ** (len(encoder.down_blocks) - 1)
    if tile % downscale or halo % downscale or pixels.shape[-1] % downscale or pixels.shape[-2] % downscale:
        raise ValueError(f"tiled encoding needs sizes that are multiples of {downscale} pixels")
    tiles = _tiles(pixels, tile, halo, store)
    scale = _run(_encoder_program(encoder), tiles, device, store)
    height, width = int(pixels.shape[-2] * scale), int(pixels.shape[-1] * scale)
    x = _stitch(tiles, pixels.shape[0], height, width, store).to(device)
    x = encoder.mid_block(x)
    x = encoder.conv_out(encoder.conv_act(encoder.conv_norm_out(x)))
    return vae.quant_conv(x) if vae.quant_conv is not None else x


def decode_memory_estimate(vae, latent_height: int, latent_width: int) -> int:
    """Bytes a whole decode (or encode) needs at its peak: the first level's width at the full
    picture size, a few activations at once (input, normalised copy, convolution output)."""
    widths = list(vae.config.block_out_channels)
    downscale = 2 ** (len(widths) - 1)
    element = torch.finfo(vae.dtype).bits // 8
    pixels = latent_height * latent_width * downscale * downscale
    return 4 * pixels * widths[0] * element
