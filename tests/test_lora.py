"""LoRA / LoCon files on the tiny checkpoint: kohya and PEFT key layouts reach the right modules, the
merge is the documented formula, weight 0 is no LoRA, and the weights are bit-identical after the
job; "Lora hashes" carries the addnet hash; a metadata alias finds the file."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from modules.core.generation.request import InvalidRequest, Txt2ImgRequest
from modules.core.infotext import parse_infotext
from modules.core.models.lora import LoraPatch, parse_lora
from tests.fixtures.tiny_sd import build_tiny_sd1

UNET_TARGETS = {  # diffusers module path → kohya key
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k": "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k",
    "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2": "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_ff_net_2",
    "down_blocks.0.resnets.0.conv1": "lora_unet_down_blocks_0_resnets_0_conv1",  # LoCon: a 3×3 convolution
}
TE_TARGETS = {"encoder.layers.0.self_attn.q_proj": "lora_te_text_model_encoder_layers_0_self_attn_q_proj"}


def kohya_lora(models, rank=4, alpha=2.0, seed=0, scale=0.3):
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for model, targets in ((models.unet, UNET_TARGETS), (models.text_encoder, TE_TARGETS)):
        named = dict(model.named_modules())
        for path, key in targets.items():
            weight = named[path].weight
            if weight.ndim == 4:
                down = torch.randn(rank, weight.shape[1], *weight.shape[2:], generator=generator) * scale
                up = torch.randn(weight.shape[0], rank, 1, 1, generator=generator) * scale
            else:
                down = torch.randn(rank, weight.shape[1], generator=generator) * scale
                up = torch.randn(weight.shape[0], rank, generator=generator) * scale
            weights[f"{key}.lora_down.weight"] = down
            weights[f"{key}.lora_up.weight"] = up
            weights[f"{key}.alpha"] = torch.tensor(alpha)
    return weights


def test_kohya_keys_reach_their_modules_and_the_merge_is_the_formula():
    models = build_tiny_sd1(seed=0)
    weights = kohya_lora(models)
    lora = parse_lora(weights, "x", models.unet, models.text_encoder)
    assert set(lora.unet) == set(UNET_TARGETS) and set(lora.text_encoder) == set(TE_TARGETS)
    conv = dict(models.unet.named_modules())["down_blocks.0.resnets.0.conv1"]
    before = conv.weight.detach().clone()
    patch = LoraPatch()
    patch.merge(models.unet, lora.unet, 0.8)
    key = UNET_TARGETS["down_blocks.0.resnets.0.conv1"]
    down, up = weights[f"{key}.lora_down.weight"], weights[f"{key}.lora_up.weight"]
    expected = before + (up.flatten(1) @ down.flatten(1)).reshape(before.shape) * (2.0 / 4) * 0.8
    torch.testing.assert_close(conv.weight, expected)
    patch.restore()
    assert torch.equal(conv.weight, before)


def test_peft_keys_are_read_too():
    models = build_tiny_sd1(seed=0)
    weights = {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.ones(2, 32),
               "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.ones(32, 2),
               "text_encoder.text_model.encoder.layers.1.mlp.fc1.lora_A.weight": torch.ones(2, 64),
               "text_encoder.text_model.encoder.layers.1.mlp.fc1.lora_B.weight": torch.ones(128, 2)}
    lora = parse_lora(weights, "peft", models.unet, models.text_encoder)
    assert list(lora.unet) == ["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"]
    assert list(lora.text_encoder) == ["encoder.layers.1.mlp.fc1"]
    with pytest.raises(ValueError, match="no LoRA weights"):
        parse_lora({"something.else": torch.ones(1)}, "none", models.unet, models.text_encoder)


REQUEST = Txt2ImgRequest(prompt="a red cat", seed=8, steps=3, width=64, height=64, sampler_name="Euler")


def generate(service, prompt):
    from dataclasses import replace

    result = service.txt2img(replace(REQUEST, prompt=prompt), save_images=False).result
    return np.asarray(result.images[0].image).astype(int), result.infotexts[0]


@pytest.fixture
def with_lora(service, data_dir):
    folder = data_dir / "models" / "Lora"
    folder.mkdir(parents=True)
    path = folder / "detail.safetensors"
    save_file(kohya_lora(build_tiny_sd1(seed=0), scale=0.5), str(path), metadata={"ss_output_name": "detail_tweaker"})
    return service, path


def unet_state(service):
    return {key: value.clone() for key, value in service.models.loaded.model.unet.state_dict().items()}


def test_weight_zero_is_no_lora_and_the_weights_come_back_bit_identical(with_lora):
    service, path = with_lora
    plain, _ = generate(service, "a red cat")
    before = unet_state(service)
    zero, _ = generate(service, "a red cat <lora:detail:0>")
    full, text = generate(service, "a red cat <lora:detail:1>")
    assert np.array_equal(zero, plain)
    assert not np.array_equal(full, plain)
    after = unet_state(service)
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert np.array_equal(generate(service, "a red cat")[0], plain)
    params = parse_infotext(text)
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    addnet = hashlib.sha256(data[8 + header:]).hexdigest()[:12]
    assert params["Lora hashes"] == f"detail: {addnet}"
    assert params["Prompt"] == "a red cat <lora:detail:1>"  # the tag stays in the infotext


def test_te_and_unet_multipliers_named_and_positional_and_the_alias(with_lora):
    service, _ = with_lora
    plain, _ = generate(service, "a red cat")
    unet_only, _ = generate(service, "a red cat <lora:detail:0:1>")
    named, _ = generate(service, "a red cat <lora:detail:te=0:unet=1>")
    te_only, _ = generate(service, "a red cat <lora:detail:1:0>")
    alias, _ = generate(service, "a red cat <lora:detail_tweaker:0:1>")
    assert np.array_equal(unet_only, named) and np.array_equal(unet_only, alias)
    assert not np.array_equal(unet_only, plain) and not np.array_equal(te_only, plain)
    assert not np.array_equal(te_only, unet_only)


def test_a_missing_lora_is_a_clear_error_and_changes_nothing(with_lora):
    service, _ = with_lora
    before = unet_state(service) if service.models.loaded else None
    with pytest.raises(InvalidRequest, match="LoRA 'nope' not found"):
        generate(service, "a cat <lora:nope:1>")
    if before is not None:
        after = unet_state(service)
        assert all(torch.equal(before[key], after[key]) for key in before)


def test_a_hires_pass_on_another_checkpoint_gets_the_lora_too(with_lora, data_dir):
    """The networks follow the model: a hires checkpoint that is a copy of the first one gives the
    same picture as hires fix on the same checkpoint, with the LoRA on or off."""
    import shutil
    from dataclasses import replace

    service, _ = with_lora
    folder = data_dir / "models" / "Stable-diffusion"
    shutil.copy(folder / "tiny-sd1.safetensors", folder / "copy.safetensors")
    service.models.refresh()
    hires = replace(REQUEST, enable_hr=True, hr_scale=1.5, denoising_strength=0.6, hr_upscaler="Lanczos")
    for prompt in ("a red cat <lora:detail:1>", "a red cat"):
        same = service.txt2img(replace(hires, prompt=prompt), save_images=False,
                               override_settings={"sd_model_checkpoint": "tiny-sd1"}).result
        other = service.txt2img(replace(hires, prompt=prompt, hr_checkpoint_name="copy"), save_images=False,
                                override_settings={"sd_model_checkpoint": "tiny-sd1"}).result
        assert np.array_equal(np.asarray(same.images[0].image), np.asarray(other.images[0].image)), prompt


def _module(models, path):
    return dict(models.unet.named_modules())[path]


def test_loha_lokr_and_full_diff_follow_a1111s_formulas():
    """LyCORIS types on a linear layer and a 3×3 convolution, against the formulas written out
    element by element (Hadamard product of two low-rank products; Kronecker product)."""
    models = build_tiny_sd1(seed=0)
    g = torch.Generator().manual_seed(3)
    linear = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"  # 32 × 32
    conv = "down_blocks.0.resnets.0.conv1"  # 32 × 32 × 3 × 3
    key = {path: "lora_unet_" + path.replace(".", "_") for path in (linear, conv)}
    r = 2
    weights = {  # LoHa on the linear layer
        f"{key[linear]}.hada_w1_a": torch.randn(32, r, generator=g), f"{key[linear]}.hada_w1_b": torch.randn(r, 32, generator=g),
        f"{key[linear]}.hada_w2_a": torch.randn(32, r, generator=g), f"{key[linear]}.hada_w2_b": torch.randn(r, 32, generator=g),
        f"{key[linear]}.alpha": torch.tensor(1.0),
        # LoKr on the convolution: w1 whole (4 × 4), w2 as a product (8 × r)(r × 8·9)
        f"{key[conv]}.lokr_w1": torch.randn(4, 4, generator=g),
        f"{key[conv]}.lokr_w2_a": torch.randn(8, r, generator=g), f"{key[conv]}.lokr_w2_b": torch.randn(r, 8 * 9, generator=g),
        f"{key[conv]}.alpha": torch.tensor(4.0),
    }
    lora = parse_lora(weights, "lyco", models.unet, models.text_encoder)
    assert {lora.unet[linear].kind, lora.unet[conv].kind} == {"loha", "lokr"}
    p = lambda path, name: weights[f"{key[path]}.{name}"]  # noqa: E731
    expected_loha = (p(linear, "hada_w1_a") @ p(linear, "hada_w1_b")) * (p(linear, "hada_w2_a") @ p(linear, "hada_w2_b")) * (1.0 / r)
    w2 = (p(conv, "lokr_w2_a") @ p(conv, "lokr_w2_b")).reshape(8, 8, 3, 3)
    w1 = p(conv, "lokr_w1")
    expected_lokr = torch.zeros(32, 32, 3, 3)
    for i in range(4):
        for j in range(4):
            expected_lokr[i * 8:(i + 1) * 8, j * 8:(j + 1) * 8] = w1[i, j] * w2
    expected_lokr *= 4.0 / r
    before = {path: _module(models, path).weight.detach().clone() for path in (linear, conv)}
    patch = LoraPatch()
    patch.merge(models.unet, lora.unet, 0.5)
    torch.testing.assert_close(_module(models, linear).weight, before[linear] + 0.5 * expected_loha)
    torch.testing.assert_close(_module(models, conv).weight, before[conv] + 0.5 * expected_lokr)
    patch.restore()
    assert all(torch.equal(_module(models, path).weight, before[path]) for path in before)
    diff = torch.randn(32, 32, generator=g)
    full = parse_lora({f"{key[linear]}.diff": diff}, "full", models.unet, models.text_encoder)
    assert full.unet[linear].kind == "full" and torch.equal(full.unet[linear].delta(diff.shape), diff)
