"""Checkpoint Merger: every method and format through ``run_merge``, checked tensor by tensor against
the formula, loaded back as a model, plus A1111's names, metadata, channel rule and input errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from modules.core.generation.request import InvalidRequest, Txt2ImgRequest
from modules.core.models.merge import SKIP_ON_MERGE
from modules.core.safe_load import load_state_dict, safetensors_metadata
from modules.service.merger import run_merge
from tests.fixtures.tiny_sd import VAE_PREFIX, make_tiny_checkpoint, write_checkpoint

A, B, C = "tiny-sd1.safetensors", "b.safetensors", "c.ckpt"


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("merge-sources")
    return {
        B: make_tiny_checkpoint(folder, B, seed=1),
        C: make_tiny_checkpoint(folder, C, seed=2),
        "inpaint.safetensors": make_tiny_checkpoint(folder, "inpaint.safetensors", seed=3, in_channels=9),
    }


@pytest.fixture
def models(service, sources):
    for name, path in sources.items():
        shutil.copy(path, service.models.paths.checkpoints / name)
    service.models.refresh()
    return service.models


def weights(models, name):
    return load_state_dict(models.find(name).path)


def merged_keys(key, tensor, b):
    return "model" in key and key in b and key not in SKIP_ON_MERGE and tensor.is_floating_point()


def assert_all_equal(out, expected):
    assert out.keys() == expected.keys()
    for key in expected:
        assert out[key].dtype == expected[key].dtype, key
        assert torch.equal(out[key], expected[key]), key


def test_weighted_sum_is_the_formula_on_every_tensor_and_loads_as_a_model(service, models):
    path = run_merge(models, A, B, method="Weighted sum", multiplier=0.3)
    assert path == models.paths.checkpoints / "0.7(tiny-sd1) + 0.3(b).safetensors"
    a, b = weights(models, A), weights(models, B)
    expected = {k: (1 - 0.3) * t + 0.3 * b[k] if merged_keys(k, t, b) else t for k, t in a.items()}
    assert_all_equal(load_state_dict(path), expected)

    metadata = safetensors_metadata(path)
    recipe = json.loads(metadata["sd_merge_recipe"])
    assert recipe["type"] == "webui" and recipe["interp_method"] == "Weighted sum" and recipe["multiplier"] == 0.3
    assert recipe["primary_model_hash"] == models.hashed(models.find(A)).sha256
    assert {entry["name"] for entry in json.loads(metadata["sd_merge_models"]).values()} == {A, B}
    assert metadata["format"] == "pt"

    assert models.find(path.name) is not None  # the list was refreshed
    service.select_checkpoint(path.name)
    result = service.txt2img(Txt2ImgRequest(prompt="a cat", seed=1, width=64, height=64, steps=2),
                             save_images=False).result
    assert result.images[0].image.size == (64, 64)


def test_add_difference_as_ckpt_is_a_plus_m_times_b_minus_c(models):
    path = run_merge(models, A, B, C, method="Add difference", multiplier=0.5, fmt="ckpt")
    assert path.name == "tiny-sd1 + 0.5(b - c).ckpt"
    a, b, c = weights(models, A), weights(models, B), weights(models, C)
    expected = {k: t + 0.5 * (b[k] - c[k]) if merged_keys(k, t, b) else t for k, t in a.items()}
    assert_all_equal(load_state_dict(path), expected)
    raw = torch.load(path, weights_only=True)
    assert "state_dict" not in raw and raw.keys() == expected.keys()  # a flat dict, as A1111 saves


def test_save_as_half_halves_merged_float_tensors(models):
    path = run_merge(models, A, B, method="Weighted sum", multiplier=0.25, save_as_half=True, custom_name="half")
    assert path.name == "half.safetensors"
    a, b = weights(models, A), weights(models, B)
    expected = {k: ((1 - 0.25) * t + 0.25 * b[k]).half() if merged_keys(k, t, b) else t for k, t in a.items()}
    assert_all_equal(load_state_dict(path), expected)


def test_no_interpolation_converts_format_halves_bakes_vae_and_discards(models, sources):
    vae_file = models.paths.vae / "other.safetensors"
    b = weights(models, B)
    write_checkpoint(vae_file, {k[len(VAE_PREFIX):]: v for k, v in b.items() if k.startswith(VAE_PREFIX)})
    path = run_merge(models, A, None, None, method="No interpolation", save_as_half=True, fmt="ckpt",
                     bake_in_vae="other.safetensors", discard_weights=r"^model_ema\.")
    assert path.name == "tiny-sd1.ckpt"
    a = weights(models, A)
    expected = {k: (b[k] if k.startswith(VAE_PREFIX) else t) for k, t in a.items() if not k.startswith("model_ema.")}
    expected = {k: t.half() if t.dtype == torch.float32 else t for k, t in expected.items()}
    assert_all_equal(load_state_dict(path), expected)


def test_inpainting_a_with_normal_b_merges_the_first_four_input_channels(models):
    path = run_merge(models, "inpaint.safetensors", B, method="Weighted sum", multiplier=0.4, save_metadata=False)
    assert path.name == "0.6(inpaint) + 0.4(b).inpainting.safetensors"
    assert safetensors_metadata(path) == {}
    a, b = weights(models, "inpaint.safetensors"), weights(models, B)
    key = "model.diffusion_model.input_blocks.0.0.weight"
    assert a[key].shape[1] == 9 and b[key].shape[1] == 4
    first = a[key].clone()
    first[:, 0:4] = (1 - 0.4) * a[key][:, 0:4] + 0.4 * b[key]
    expected = {k: (1 - 0.4) * t + 0.4 * b[k] if merged_keys(k, t, b) and k != key else t for k, t in a.items()}
    expected[key] = first
    assert_all_equal(load_state_dict(path), expected)

    with pytest.raises(InvalidRequest) as error:
        run_merge(models, B, "inpaint.safetensors", method="Weighted sum")
    assert error.value.field == "primary_model_name" and "A must be the inpainting model" in str(error.value)


def test_metadata_json_copy_and_config(models):
    (models.paths.checkpoints / "b.yaml").write_text("model: {}\n")
    path = run_merge(models, A, B, custom_name="meta", metadata_json='{"author": "me", "n": 3}',
                     add_merge_recipe=False, config_source="A, B or C")
    metadata = safetensors_metadata(path)
    assert metadata["author"] == "me" and metadata["n"] == "3" and "sd_merge_recipe" not in metadata
    assert path.with_suffix(".yaml").read_text() == "model: {}\n"
    again = run_merge(models, path.name, B, custom_name="meta2", copy_metadata=True)
    assert safetensors_metadata(again)["author"] == "me"


@pytest.mark.parametrize("kwargs, field", [
    (dict(primary=A, secondary=None, method="Weighted sum"), "secondary_model_name"),
    (dict(primary=A, secondary=B, tertiary="", method="Add difference"), "tertiary_model_name"),
    (dict(primary="", secondary=B), "primary_model_name"),
    (dict(primary=A, secondary="missing.safetensors"), "secondary_model_name"),
    (dict(primary=A, secondary=B, discard_weights="(unclosed"), "discard_weights"),
    (dict(primary=A, secondary=B, metadata_json="{not json"), "metadata_json"),
    (dict(primary=A, secondary=B, method="Average"), "interp_method"),
    (dict(primary=A, secondary=B, fmt="pt"), "checkpoint_format"),
    (dict(primary=A, secondary=B, custom_name="../escape"), "custom_name"),
    (dict(primary=A, secondary=B, bake_in_vae="nope.pt"), "bake_in_vae"),
])
def test_bad_inputs_name_the_field(models, kwargs, field):
    before = sorted(p.name for p in models.paths.checkpoints.iterdir())
    with pytest.raises(InvalidRequest) as error:
        run_merge(models, **kwargs)
    assert error.value.field == field
    assert sorted(p.name for p in models.paths.checkpoints.iterdir()) == before


def test_read_metadata_collects_the_inputs_metadata(models):
    path = run_merge(models, A, B, custom_name="with-meta", metadata_json='{"author": "me"}')
    from modules.service.merger import read_metadata
    shown = json.loads(read_metadata(models, path.name, B, None))
    assert shown["author"] == "me" and shown["sd_merge_recipe"]["interp_method"] == "Weighted sum"


def test_tab_has_a1111_controls_and_merges(service, models):
    import gradio as gr

    from modules.ui import merger_tab

    with gr.Blocks() as demo:
        merger_tab.build(service)
    components = {block.elem_id: block for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    for name in ("primary_model_name", "secondary_model_name", "tertiary_model_name", "custom_name", "interp_amount",
                 "interp_method", "checkpoint_format", "save_as_half", "config_method", "bake_in_vae",
                 "discard_weights", "save_metadata", "add_recipe", "copy_metadata", "merge", "result"):
        assert f"modelmerger_{name}" in components, name
    assert components["modelmerger_interp_amount"].value == 0.3
    assert components["modelmerger_checkpoint_format"].value == "safetensors"
    run = next(block.fn for block in demo.fns.values() if block.fn.__name__ == "run")
    titles = models.titles()
    a, b = next(t for t in titles if t.startswith(A)), next(t for t in titles if t.startswith(B))
    *_, html_out = run(a, b, None, "Weighted sum", 0.3, False, "from-ui", "safetensors", 0, "None", "",
                       True, True, True, "{}")
    assert "Checkpoint saved to" in html_out and (models.paths.checkpoints / "from-ui.safetensors").is_file()
    *_, html_out = run(a, None, None, "Weighted sum", 0.3, False, "", "safetensors", 0, "None", "",
                       True, True, True, "{}")
    assert "secondary_model_name" in html_out
