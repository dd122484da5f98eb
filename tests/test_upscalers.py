"""Image upscaler networks (ESRGAN, Real-ESRGAN, Real-ESRGAN compact, SwinIR) built from model files.

Tiny random-weight networks are written in each real key layout (torch.save or safetensors), read
back through ``safe_load`` like a user's file, and rebuilt by ``build_upscaler`` from the weights
alone; the rebuilt network must reproduce the source network's output exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from modules.core import safe_load
from modules.core.upscalers import build_upscaler, detect_architecture, upscale_image
from modules.core.upscalers.compact import SRVGGNetCompact
from modules.core.upscalers.rrdb import RRDBNet
from modules.core.upscalers.swinir import SwinIR, SwinIRConfig, _relative_position_index, shift_mask
from modules.core.upscalers.tiles import tiled_forward

ODD = (37, 23)  # width, height of the odd-sized test input


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These convolutions are tiny: on a shared, busy CPU two threads wait on each other ~15x
    longer than one thread computes (measured: 41 s vs 2.6 s for this file)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter, so zero-initialised ones (biases, SwinIR bias tables) matter too."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model.eval()


def image_tensor(width: int, height: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


def write(path, state_dict) -> dict:
    """Write a model file the way its publisher does and read it back as Hanga reads it."""
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    else:
        torch.save(state_dict, path)
    return safe_load.load_state_dict(path)


def old_esrgan_layout(state_dict: dict, num_blocks: int, num_upsamples: int) -> dict:
    """The original ESRGAN code's flat ``model.K`` names for a BasicSR-layout RRDBNet.

    Its sequence is: 0 conv_first; 1 ShortcutBlock(sub.0..nb-1 RRDBs, sub.nb trunk conv); then per
    2x step Upsample, conv, LeakyReLU; then HR conv, LeakyReLU, last conv. Convs inside the dense
    blocks are ``conv_block`` Sequentials, hence their ``.0``.
    """
    top = {"conv_first": 0, "conv_hr": 3 * num_upsamples + 2, "conv_last": 3 * num_upsamples + 4}
    top.update({f"conv_up{i}": 3 * i for i in range(1, num_upsamples + 1)})
    old = {}
    for key, value in state_dict.items():
        module, kind = key.rsplit(".", 1)
        if module.startswith("body."):
            _, block, rdb, conv = module.split(".")
            name = f"model.1.sub.{block}.RDB{rdb[-1]}.{conv}.0.{kind}"
        elif module == "conv_body":
            name = f"model.1.sub.{num_blocks}.{kind}"
        else:
            name = f"model.{top[module]}.{kind}"
        old[name] = value
    return old


def swinir_file_layout(model: SwinIR) -> dict:
    """The state dict as the SwinIR code saves it: with the derived buffers that it registers
    (every ``relative_position_index``, and ``attn_mask`` of shifted blocks for a 64 px crop)."""
    config = model.config
    state = dict(model.state_dict())
    window = config.window_size
    for i, depth in enumerate(config.depths):
        for j in range(depth):
            prefix = f"layers.{i}.residual_group.blocks.{j}"
            state[f"{prefix}.attn.relative_position_index"] = _relative_position_index(window)
            if j % 2:
                state[f"{prefix}.attn_mask"] = shift_mask(64, 64, window, window // 2, "cpu")
    return state


@pytest.mark.parametrize("num_upsamples, unshuffle, scale, suffix", [
    (2, 1, 4, ".pth"),           # RealESRGAN_x4plus / _anime_6B
    (1, 1, 2, ".safetensors"),   # a plain 2x ESRGAN
    (2, 2, 2, ".pth"),           # RealESRGAN_x2plus: pixel-unshuffled input, in_nc = 12
    (3, 1, 8, ".safetensors"),   # 8x ESRGAN
])
def test_esrgan_new_layout(tmp_path, num_upsamples, unshuffle, scale, suffix):
    source = randomized(RRDBNet(nf=8, nb=2, gc=4, num_upsamples=num_upsamples, unshuffle=unshuffle))
    weights = write(tmp_path / f"model{suffix}", source.state_dict())
    assert weights["conv_first.weight"].shape[1] == 3 * unshuffle ** 2

    model, got_scale, arch = build_upscaler(weights)

    assert (arch, got_scale) == ("ESRGAN", scale)
    assert not model.training
    x = image_tensor(*ODD)
    with torch.no_grad():
        y = model(x)
        assert y.shape[-2:] == (ODD[1] * scale, ODD[0] * scale)
        assert torch.equal(y, source(x))


@pytest.mark.parametrize("num_upsamples", [2, 1])
def test_old_esrgan_layout_gives_the_same_network(tmp_path, num_upsamples):
    source = randomized(RRDBNet(nf=8, nb=2, gc=4, num_upsamples=num_upsamples), seed=3)
    old = old_esrgan_layout(source.state_dict(), num_blocks=2, num_upsamples=num_upsamples)
    assert "model.1.sub.1.RDB3.conv5.0.weight" in old and "model.1.sub.2.weight" in old
    weights = write(tmp_path / "ESRGAN_old.pth", old)

    from_old, scale, arch = build_upscaler(weights)
    from_new, _, _ = build_upscaler(source.state_dict())

    assert (arch, scale) == ("ESRGAN", 2 ** num_upsamples)
    x = image_tensor(13, 9)
    with torch.no_grad():
        assert torch.equal(from_old(x), from_new(x))
        assert torch.equal(from_old(x), source(x))


def test_basicsr_wrapped_file_prefers_ema_weights(tmp_path):
    ema = randomized(RRDBNet(nf=8, nb=2, gc=4), seed=1)
    plain = randomized(RRDBNet(nf=8, nb=2, gc=4), seed=2)
    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params": plain.state_dict(),
                "params_ema": {f"module.{k}": v for k, v in ema.state_dict().items()}}, path)

    model, scale, arch = build_upscaler(safe_load.load_torch_file(path))

    assert (arch, scale) == ("ESRGAN", 4)
    x = image_tensor(9, 7)
    with torch.no_grad():
        assert torch.equal(model(x), ema(x))


@pytest.mark.parametrize("scale, num_conv", [(4, 3), (2, 1)])
def test_compact(tmp_path, scale, num_conv):
    source = randomized(SRVGGNetCompact(num_feat=8, num_conv=num_conv, scale=scale))
    weights = write(tmp_path / "realesr-general-x4v3.safetensors", source.state_dict())

    model, got_scale, arch = build_upscaler({"params": weights})

    assert (arch, got_scale) == ("RealESRGAN compact", scale)
    assert len(model.body) == 2 * num_conv + 3
    x = image_tensor(*ODD)
    with torch.no_grad():
        y = model(x)
        assert y.shape[-2:] == (ODD[1] * scale, ODD[0] * scale)
        assert torch.equal(y, source(x))


@pytest.mark.parametrize("upsampler, scale", [
    ("nearest+conv", 4),   # 003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN (A1111's "SwinIR 4x")
    ("nearest+conv", 2),
    ("pixelshuffle", 2),   # classical SR
    ("pixelshuffle", 4),
])
def test_swinir(tmp_path, upsampler, scale):
    config = SwinIRConfig(embed_dim=12, depths=(2, 1), num_heads=(2, 3), window_size=4,
                          mlp_ratio=2.0, upsampler=upsampler, upscale=scale, num_feat=8)
    source = randomized(SwinIR(config))
    state = swinir_file_layout(source)
    weights = write(tmp_path / "swinir.pth", {"params_ema": state}["params_ema"])

    model, got_scale, arch = build_upscaler(weights)

    assert (arch, got_scale) == ("SwinIR", scale)
    assert model.config == config
    x = image_tensor(*ODD)  # neither side is a multiple of the window: padded, then cropped
    with torch.no_grad():
        y = model(x)
        assert y.shape[-2:] == (ODD[1] * scale, ODD[0] * scale)
        assert torch.equal(y, source(x))


def test_swinir_3conv_and_pixelshuffledirect():
    config = SwinIRConfig(embed_dim=16, depths=(2,), num_heads=(2,), window_size=4, mlp_ratio=1.5,
                          resi_connection="3conv", upsampler="pixelshuffledirect", upscale=3)
    source = randomized(SwinIR(config))
    model, scale, arch = build_upscaler(swinir_file_layout(source))
    assert (arch, scale) == ("SwinIR", 3)
    assert (model.config.resi_connection, model.config.mlp_ratio) == ("3conv", 1.5)
    with torch.no_grad():
        assert model(image_tensor(10, 6)).shape[-2:] == (18, 30)


def test_tiled_equals_untiled():
    """Exact up to float rounding (atol 1e-5, ~100x the float32 error of these sums).

    The model's receptive radius is 3 input pixels (three 3x3 convs); with overlap 16 the
    feather ignores the outer 16 // 4 = 4 pixels of each tile side, so every output pixel is
    blended only from tiles that saw its whole neighbourhood, with weights summing to 1.
    """
    model = randomized(SRVGGNetCompact(num_feat=8, num_conv=1, scale=4))
    x = image_tensor(61, 45, seed=5)
    with torch.no_grad():
        whole = model(x)
        tiled = tiled_forward(model, x, 4, tile=24, overlap=16)
        assert tiled.shape == whole.shape
        assert torch.allclose(tiled, whole, atol=1e-5, rtol=0)
        assert torch.equal(tiled_forward(model, x, 4, tile=0, overlap=16), whole)


def test_tiles_blend_seams_of_a_wide_receptive_field():
    """ESRGAN sees far past a tile, so tiles differ near their edges; the feather keeps the
    error small everywhere instead of leaving a seam."""
    model = randomized(RRDBNet(nf=8, nb=1, gc=4, num_upsamples=1))
    x = image_tensor(50, 40, seed=6)
    with torch.no_grad():
        error = (tiled_forward(model, x, 2, tile=24, overlap=8) - model(x)).abs()
    assert error.mean() < 0.01 and error.max() < 0.2


def test_upscale_image_with_alpha_and_tiles():
    model, scale, _ = build_upscaler(randomized(SRVGGNetCompact(num_feat=8, num_conv=1, scale=2))
                                     .state_dict())
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (23, 37, 4), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGBA")

    whole = upscale_image(model, scale, image, tile=0)
    tiled = upscale_image(model, scale, image, tile=16, overlap=12)  # guard 3 = radius

    assert whole.mode == "RGBA" and whole.size == (74, 46)
    expected_alpha = image.getchannel("A").resize((74, 46), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(whole.getchannel("A")), np.asarray(expected_alpha))
    difference = np.abs(np.asarray(whole, np.int16) - np.asarray(tiled, np.int16))
    assert difference.max() <= 1  # same floats up to rounding to uint8
    rgb = upscale_image(model, scale, image.convert("RGB"), tile=0)
    assert rgb.mode == "RGB" and np.array_equal(np.asarray(rgb), np.asarray(whole)[..., :3])
    palette = Image.new("P", (5, 4))
    palette.info["transparency"] = 0
    assert upscale_image(model, scale, palette).mode == "RGBA"


def test_upscale_image_wants_the_model_where_it_runs():
    model, scale, _ = build_upscaler(SRVGGNetCompact(num_feat=4, num_conv=0, scale=2).state_dict())
    with pytest.raises(ValueError, match="memory manager"):
        upscale_image(model, scale, Image.new("RGB", (8, 8)), dtype=torch.float64)


def test_unknown_weights_are_a_clear_error():
    unet = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}
    with pytest.raises(ValueError, match="not a supported upscaler.*input_blocks"):
        detect_architecture(unet)
    with pytest.raises(ValueError, match="holds no weights.*'params_ema'"):
        build_upscaler({"params_ema": 3})
    denoiser = SwinIRConfig(embed_dim=12, depths=(2,), num_heads=(2,), window_size=4,
                            upsampler="pixelshuffle", upscale=2)
    state = SwinIR(denoiser).state_dict()
    for key in [k for k in state if k.startswith(("upsample", "conv_before", "conv_last"))]:
        del state[key]
    with pytest.raises(ValueError, match="denoising"):
        build_upscaler(state)


@pytest.mark.parametrize("make, drop", [
    (lambda: RRDBNet(nf=8, nb=2, gc=4), "body.1.rdb2.conv3.bias"),
    (lambda: SRVGGNetCompact(num_feat=8, num_conv=2), "body.3.weight"),
    (lambda: SwinIR(SwinIRConfig(embed_dim=12, depths=(2,), num_heads=(2,), window_size=4)),
     "layers.0.residual_group.blocks.1.mlp.fc2.bias"),
])
def test_strict_loading_names_a_missing_weight(make, drop):
    state = make().state_dict()
    del state[drop]
    with pytest.raises(ValueError, match=rf"Missing key\(s\).*{drop}"):
        build_upscaler(state)


def test_strict_loading_names_an_unexpected_weight():
    state = RRDBNet(nf=8, nb=2, gc=4).state_dict()
    state["conv_extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"Unexpected key\(s\).*conv_extra.weight"):
        build_upscaler(state)


def test_tile_overlap_must_fit_in_a_tile():
    model = SRVGGNetCompact(num_feat=4, num_conv=0, scale=2)
    with pytest.raises(ValueError, match="overlap"):
        tiled_forward(model, image_tensor(40, 40), 2, tile=16, overlap=16)
