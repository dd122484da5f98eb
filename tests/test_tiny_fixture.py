"""The tiny-checkpoint fixture writes the real SD1 single-file layout.

The key mapping is checked against diffusers' own LDM->diffusers converters and transformers'
strict loading, not against the fixture's own code, so a mapping bug cannot hide here.
"""

import re
import zipfile

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)
from safetensors.torch import load_file
from transformers import CLIPTextModel

from tests.fixtures.tiny_sd import (
    build_tiny_sd1,
    ldm_schedule_buffers,
    make_tiny_checkpoint,
    tiny_clip_config,
    to_ldm_state_dict,
    unet_to_ldm,
)

MODEL_PREFIXES = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.")
BUFFER_KEYS = set(ldm_schedule_buffers())


@pytest.fixture(scope="module")
def models():
    return build_tiny_sd1(seed=0)


@pytest.fixture(scope="module")
def ldm(models):
    return to_ldm_state_dict(models)


def assert_same_tensors(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected), (
        f"missing {sorted(set(expected) - set(actual))[:5]}, extra {sorted(set(actual) - set(expected))[:5]}"
    )
    for key, tensor in expected.items():
        assert actual[key].dtype == tensor.dtype, key
        assert torch.equal(actual[key], tensor), key


@pytest.mark.parametrize("in_channels", [4, 9])
def test_unet_matches_diffusers_converter(in_channels):
    models = build_tiny_sd1(seed=1, in_channels=in_channels)
    ldm = to_ldm_state_dict(models)
    # The converter only reads config["layers_per_block"] (plus class/addition embedding flags).
    converted = convert_ldm_unet_checkpoint(dict(ldm), dict(models.unet.config))
    assert_same_tensors(converted, models.unet.state_dict())
    assert ldm["model.diffusion_model.input_blocks.0.0.weight"].shape[1] == in_channels


def test_unet_numbering_matches_real_sd1_layout():
    # diffusers' converter accepts an upsampler in any block of its level, so check the numbering
    # against the real SD1.5 block list: a 4-level U-Net with SD1's block types, tiny widths.
    unet = UNet2DConditionModel(
        block_out_channels=(32, 32, 64, 64), layers_per_block=2, cross_attention_dim=64,
        norm_num_groups=32, sample_size=8, attention_head_dim=8,
    )
    ldm = unet_to_ldm(unet)
    block = re.compile(r"model\.diffusion_model\.((?:input|output)_blocks\.\d+\.\d+|middle_block\.\d+)\.")
    blocks = {m[1] for m in map(block.match, ldm) if m}
    sd15 = {"input_blocks.0.0", "input_blocks.3.0", "input_blocks.6.0", "input_blocks.9.0",
            "input_blocks.10.0", "input_blocks.11.0", "middle_block.0", "middle_block.1",
            "middle_block.2", "output_blocks.2.1", "output_blocks.5.2", "output_blocks.8.2"}
    sd15 |= {f"input_blocks.{i}.{j}" for i in (1, 2, 4, 5, 7, 8) for j in (0, 1)}
    sd15 |= {f"output_blocks.{i}.0" for i in range(12)} | {f"output_blocks.{i}.1" for i in range(3, 12)}
    assert blocks == sd15
    assert "model.diffusion_model.input_blocks.3.0.op.weight" in ldm
    assert "model.diffusion_model.output_blocks.8.2.conv.weight" in ldm
    assert_same_tensors(convert_ldm_unet_checkpoint(ldm, dict(unet.config)), unet.state_dict())


def test_vae_matches_diffusers_converter(models, ldm):
    # It reads config["down_block_types"] / ["up_block_types"] for the level counts, finds the
    # "first_stage_model." prefix itself, and turns the 1x1-conv attention weights back into Linear.
    converted = convert_ldm_vae_checkpoint(dict(ldm), dict(models.vae.config))
    assert_same_tensors(converted, models.vae.state_dict())
    assert ldm["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)


@pytest.mark.parametrize("legacy", [False, True])
def test_text_encoder_loads_strictly(models, legacy):
    prefix = "cond_stage_model.transformer." + ("" if legacy else "text_model.")
    ldm = to_ldm_state_dict(models, legacy_clip_keys=legacy)
    clip = {k.removeprefix(prefix): v for k, v in ldm.items() if k.startswith(prefix)}
    assert len(clip) == sum(k.startswith("cond_stage_model.") for k in ldm)
    # Real files carry position_ids; transformers 5 does not persist it, so loaders must drop it.
    assert torch.equal(clip.pop("embeddings.position_ids"), torch.arange(77)[None])

    torch.manual_seed(123)  # a fresh model whose weights differ before loading
    fresh = CLIPTextModel(tiny_clip_config()).eval()
    fresh.load_state_dict(clip, strict=True)
    ids = torch.tensor([[49406, 320, 1929, 49407] + [49407] * 73])
    with torch.no_grad():
        expected, actual = models.text_encoder(ids), fresh(ids)
    assert torch.equal(actual.last_hidden_state, expected.last_hidden_state)
    assert torch.equal(actual.pooler_output, expected.pooler_output)


def test_text_encoder_keys_match_diffusers_expectation(models, ldm):
    # diffusers strips only "cond_stage_model.transformer." and expects transformers-4 names.
    converted = convert_ldm_clip_checkpoint(dict(ldm))
    expected = {"text_model." + k for k in models.text_encoder.state_dict()}
    assert set(converted) == expected | {"text_model.embeddings.position_ids"}


def test_every_tensor_appears_once_with_own_storage(models, ldm):
    n_model = sum(len(m.state_dict()) for m in (models.unet, models.vae, models.text_encoder))
    assert len(ldm) == n_model + 1 + len(BUFFER_KEYS)  # + position_ids + schedule/EMA buffers
    storages = {t.untyped_storage().data_ptr() for t in ldm.values()}
    assert len(storages) == len(ldm)
    assert all(t.is_contiguous() for t in ldm.values())
    weights = [t for k, t in ldm.items() if k.startswith(MODEL_PREFIXES) and t.is_floating_point()]
    assert all(t.abs().sum() > 0 for t in weights)  # nothing left zero-initialised


def test_only_original_prefixes(ldm):
    strays = [k for k in ldm if not k.startswith(MODEL_PREFIXES) and k not in BUFFER_KEYS]
    assert strays == []
    assert BUFFER_KEYS <= set(ldm)


def test_schedule_buffers_match_sd1_schedule(ldm):
    reference = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    assert all(ldm[k].dtype == torch.float32 for k in BUFFER_KEYS - {"model_ema.num_updates"})
    torch.testing.assert_close(ldm["betas"], reference.betas)
    torch.testing.assert_close(ldm["alphas_cumprod"], reference.alphas_cumprod)
    assert ldm["alphas_cumprod_prev"][0] == 1.0
    assert ldm["posterior_variance"][0] == 0.0
    assert ldm["model_ema.decay"].ndim == 0 and ldm["model_ema.num_updates"].ndim == 0


@pytest.mark.parametrize("name", ["tiny.safetensors", "tiny.ckpt"])
def test_file_round_trip(tmp_path, ldm, name):
    path = make_tiny_checkpoint(tmp_path, name=name, seed=0)
    assert path == tmp_path / name
    if name.endswith(".ckpt"):
        assert zipfile.is_zipfile(path)  # torch's zip format, as weights_only loading expects
        payload = torch.load(path, map_location="cpu", weights_only=True)
        assert payload["global_step"] == 0
        loaded = payload["state_dict"]
    else:
        loaded = load_file(str(path))
    assert_same_tensors(loaded, ldm)


def test_seed_determinism():
    rng_before = torch.random.get_rng_state()
    first, again, other = (to_ldm_state_dict(build_tiny_sd1(seed=s)) for s in (5, 5, 6))
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # callers' RNG untouched
    assert_same_tensors(again, first)
    for key in first:
        if key.startswith(MODEL_PREFIXES) and not key.endswith("position_ids"):
            assert not torch.equal(first[key], other[key]), key
