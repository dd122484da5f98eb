"""Tiled VAE decoding gives the whole-latent decode: the GroupNorm statistics stay global and the
halo covers the convolutions' reach, so there are no seams. A naive tiling (each tile decoded on
its own) is shown failing the same seam test, so the test can tell."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.core.generation.job import decode_to_pixels
from modules.core.models.loader import load_components
from modules.core.models.tiled_vae import decode_memory_estimate, decode_tiled
from modules.core.paths import INSTALL_DIR
from tests.fixtures.tiny_sd import build_tiny_sd1, to_ldm_state_dict

TILE = 16  # latent pixels


@pytest.fixture(scope="module")
def vae():
    return build_tiny_sd1(seed=1).vae


@pytest.fixture(scope="module")
def latent():
    return torch.randn(1, 4, 40, 56, generator=torch.Generator().manual_seed(0))


def seam_errors(error: torch.Tensor, tile_px: int, width: int = 2) -> tuple[float, float]:
    """(max error within ``width`` px of a tile border, max error elsewhere)."""
    _, _, height, width_px = error.shape
    near = torch.zeros(height, width_px, dtype=torch.bool)
    for edge in range(tile_px, height, tile_px):
        near[max(0, edge - width):edge + width, :] = True
    for edge in range(tile_px, width_px, tile_px):
        near[:, max(0, edge - width):edge + width] = True
    per_pixel = error.amax(dim=(0, 1))
    return float(per_pixel[near].max()), float(per_pixel[~near].max())


@torch.no_grad()
def test_tiles_give_the_whole_decode_without_seams(vae, latent):
    full = vae.decode(latent).sample
    tiled = decode_tiled(vae, latent, tile=TILE, halo=8)
    assert tiled.shape == full.shape == (1, 3, 320, 448)
    error = (tiled - full).abs()
    border, interior = seam_errors(error, TILE * 8)
    assert float(error.max()) < 1e-4
    assert border <= max(interior, 1e-5)


@torch.no_grad()
def test_the_seam_test_catches_naive_tiles_and_a_short_halo(vae, latent):
    full = vae.decode(latent).sample
    naive = torch.zeros_like(full)
    for top in range(0, latent.shape[2], TILE):
        for left in range(0, latent.shape[3], TILE):
            part = vae.decode(latent[:, :, top:top + TILE, left:left + TILE]).sample
            naive[:, :, top * 8:top * 8 + part.shape[2], left * 8:left * 8 + part.shape[3]] = part
    border, interior = seam_errors((naive - full).abs(), TILE * 8)
    assert border > interior > 0.01  # per-tile statistics shift everything, and the borders most
    short = decode_tiled(vae, latent, tile=TILE, halo=1)  # the convolutions reach past a 1-pixel halo
    border, interior = seam_errors((short - full).abs(), TILE * 8)
    assert border >= interior > 0.1


def test_decode_to_pixels_in_tiles_matches_and_the_estimate_grows_with_size():
    model = load_components(to_ldm_state_dict(build_tiny_sd1(seed=2)), INSTALL_DIR / "configs")
    latent = torch.randn(2, 4, 24, 40, generator=torch.Generator().manual_seed(5))
    whole = decode_to_pixels(model, latent, tiled=False)
    tiles = decode_to_pixels(model, latent, tiled=True)
    assert np.abs((whole - tiles).numpy()).max() < 1e-4
    small, large = decode_memory_estimate(model.vae, 64, 64), decode_memory_estimate(model.vae, 256, 256)
    assert large == 16 * small and small == 4 * 512 * 512 * 32 * 4  # float32, 32 channels in the tiny VAE's first level


@torch.no_grad()
def test_tiled_encoding_gives_the_whole_encode(vae):
    from modules.core.generation.job import encode_images
    from modules.core.models.tiled_vae import encode_tiled

    pixels = torch.rand(1, 3, 320, 448, generator=torch.Generator().manual_seed(1)) * 2 - 1
    whole = vae.quant_conv(vae.encoder(pixels))
    tiled = encode_tiled(vae, pixels, tile=128, halo=48)
    error = (tiled - whole).abs()
    assert float(error.max()) < 1e-4
    border, interior = seam_errors(error, 128 // 8)
    assert border <= max(interior, 1e-5)
    short = encode_tiled(vae, pixels, tile=128, halo=8)  # the down path reaches past an 8-pixel halo
    assert float((short - whole).abs().max()) > 0.1
    with pytest.raises(ValueError, match="multiples of 8"):
        encode_tiled(vae, pixels[:, :, :, :444], tile=128, halo=48)
    model = load_components(to_ldm_state_dict(build_tiny_sd1(seed=2)), INSTALL_DIR / "configs")
    picture = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(encode_images(model, picture, tiled=True), encode_images(model, picture, tiled=False), atol=1e-4)
