"""Hypernetworks in A1111's file format on the tiny checkpoint: the module layout and old key names
load, one attention layer computes exactly what the formula says, multiplier 0 is no hypernetwork,
the prompt tag and the setting apply it, and the U-Net is left as it was afterwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from modules.core.generation.request import InvalidRequest, Txt2ImgRequest
from modules.core.infotext import parse_infotext
from modules.core.models.hypernetwork import HypernetworkAttnProcessor, HypernetworkModule, hypernetwork_from_dict


def module_state(width: int, layers, activation="relu", layer_norm=False, seed=0, scale=0.5):
    module = HypernetworkModule(width, layers, activation, layer_norm, [0.0] * len(layers), True)
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(value.shape, generator=generator) * scale for key, value in module.state_dict().items()}


def a1111_file(widths=(32, 64), layers=(1, 2, 1), activation="relu", layer_norm=False, seed=0, **extra):
    content = {width: (module_state(width, layers, activation, layer_norm, seed + i),
                       module_state(width, layers, activation, layer_norm, seed + 10 + i))
               for i, width in enumerate(widths)}
    content.update({"layer_structure": list(layers), "activation_func": activation, "is_layer_norm": layer_norm,
                    "weight_initialization": "Normal", "use_dropout": False, "name": "style", "step": 1000,
                    "sd_checkpoint": "abc", "sd_checkpoint_name": "model", **extra})
    return content


def test_layout_matches_a1111_keys_including_layer_norm_and_dropout():
    module = HypernetworkModule(8, [1, 2, 2, 1], "swish", True, [0, 0.3, 0.3, 0], True)
    kinds = [type(part).__name__ for part in module.linear]
    assert kinds == ["Linear", "Hardswish", "LayerNorm", "Dropout", "Linear", "Hardswish", "LayerNorm", "Dropout",
                     "Linear", "Hardswish", "LayerNorm"]
    no_output_activation = HypernetworkModule(8, [1, 2, 1], "relu", False, [0, 0, 0], False)
    assert [type(part).__name__ for part in no_output_activation.linear] == ["Linear", "ReLU", "Linear"]


def test_old_key_names_and_any_torch_activation_load():
    old = {"linear1.weight": torch.ones(16, 8), "linear1.bias": torch.zeros(16),
           "linear2.weight": torch.ones(8, 16), "linear2.bias": torch.zeros(8)}
    network = hypernetwork_from_dict({8: (old, old), "activation_func": "linear"}, "old")
    assert torch.equal(network.layers[8][0].linear[0].weight, torch.ones(16, 8))
    mish = hypernetwork_from_dict(a1111_file(widths=(8,), activation="mish"), "mish")
    assert type(mish.layers[8][0].linear[1]).__name__ == "Mish"
    with pytest.raises(ValueError, match="activation"):
        hypernetwork_from_dict(a1111_file(widths=(8,), activation="nope"), "bad")


@pytest.mark.parametrize("cross", [True, False])
def test_one_attention_layer_uses_x_plus_mlp_times_multiplier_for_keys_and_values(cross):
    torch.manual_seed(0)
    attention = Attention(query_dim=32, cross_attention_dim=64 if cross else None, heads=4, dim_head=8).eval()
    hidden = torch.randn(2, 16, 32)
    context = torch.randn(2, 7, 64) if cross else None
    width = 64 if cross else 32
    state = module_state(width, (1, 2, 1))
    network = hypernetwork_from_dict({width: (state, state), "activation_func": "relu"}, "same-k-and-v")
    multiplier = 0.7
    with torch.no_grad():
        got = HypernetworkAttnProcessor([(network, multiplier)])(attention, hidden, context)
        source = context if cross else hidden
        mlp = network.layers[width][0].linear
        expected_context = source + mlp(source) * multiplier
        if cross:
            expected = AttnProcessor2_0()(attention, hidden, expected_context)
        else:  # self-attention: queries from x, keys and values from the transformed x
            expected = AttnProcessor2_0()(attention, hidden, expected_context)
        plain = AttnProcessor2_0()(attention, hidden, context)
        unchanged = HypernetworkAttnProcessor([(network, 0.0)])(attention, hidden, context)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, plain)
    assert torch.equal(unchanged, plain)  # multiplier 0 is exactly no hypernetwork


REQUEST = Txt2ImgRequest(prompt="a red cat", seed=5, steps=3, width=64, height=64, sampler_name="Euler")


def generate(service, prompt, **overrides):
    from dataclasses import replace

    result = service.txt2img(replace(REQUEST, prompt=prompt), save_images=False, override_settings=overrides or None).result
    return np.asarray(result.images[0].image).astype(int), result.infotexts[0]


@pytest.fixture
def with_style(service, data_dir):
    folder = data_dir / "models" / "hypernetworks" / "styles"
    folder.mkdir(parents=True)
    torch.save(a1111_file(), folder / "style.pt")
    return service


def test_prompt_tag_applies_it_by_multiplier_and_zero_equals_none(with_style):
    service = with_style
    plain, _ = generate(service, "a red cat")
    zero, _ = generate(service, "a red cat<hypernet:style:0>")
    half, _ = generate(service, "a red cat<hypernet:style:0.5>")
    full, text = generate(service, "a red cat<hypernet:style:1>")
    assert np.array_equal(zero, plain)
    assert np.abs(half - plain).mean() > 0 and np.abs(full - plain).mean() > np.abs(half - plain).mean()
    params = parse_infotext(text)
    assert params["Prompt"] == "a red cat<hypernet:style:1>"
    assert params["Hypernet hashes"].startswith("style:") and len(params["Hypernet hashes"]) == len("style:") + 10
    unet = service.models.loaded.model.unet
    assert not any(isinstance(p, HypernetworkAttnProcessor) for p in unet.attn_processors.values())
    assert np.array_equal(generate(service, "a red cat")[0], plain)  # nothing left behind


def test_the_setting_adds_the_tag_to_every_prompt(with_style):
    service = with_style
    tagged, tagged_text = generate(service, "a red cat<hypernet:style:1>")
    by_setting, text = generate(service, "a red cat", sd_hypernetwork="style")
    assert np.array_equal(tagged, by_setting)
    assert parse_infotext(text)["Prompt"] == "a red cat<hypernet:style:1>"


def test_unknown_or_broken_hypernetworks_are_clear_errors(with_style, data_dir):
    with pytest.raises(InvalidRequest, match="hypernetwork 'missing' not found"):
        generate(with_style, "a cat <hypernet:missing:1>")
    (data_dir / "models" / "hypernetworks" / "broken.pt").write_bytes(b"not a pickle")
    with pytest.raises(InvalidRequest, match="broken"):
        generate(with_style, "a cat <hypernet:broken:1>")


def test_a_hires_pass_on_another_checkpoint_gets_the_hypernetwork_too(with_style, data_dir):
    import shutil
    from dataclasses import replace

    service = with_style
    folder = data_dir / "models" / "Stable-diffusion"
    shutil.copy(folder / "tiny-sd1.safetensors", folder / "copy.safetensors")
    service.models.refresh()
    hires = replace(REQUEST, prompt="a red cat<hypernet:style:1>", enable_hr=True, hr_scale=1.5, denoising_strength=0.6,
                    hr_upscaler="Lanczos")
    same = service.txt2img(hires, save_images=False, override_settings={"sd_model_checkpoint": "tiny-sd1"}).result
    other = service.txt2img(replace(hires, hr_checkpoint_name="copy"), save_images=False,
                            override_settings={"sd_model_checkpoint": "tiny-sd1"}).result
    assert np.array_equal(np.asarray(same.images[0].image), np.asarray(other.images[0].image))
    unet = service.models.loaded.model.unet
    assert not any(isinstance(p, HypernetworkAttnProcessor) for p in unet.attn_processors.values())
