"""Checkpoints load through the same code a user's real file takes: discovery, hashing, the
restricted loader, architecture inference and key conversion."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from modules.core.checkpoints import discover, find
from modules.core.hashing import file_sha256
from modules.core.models.architecture import infer_clip_text_config, infer_unet_config, infer_vae_config
from modules.core.models.loader import UnsupportedModelError, load_components
from modules.core.paths import INSTALL_DIR
from modules.service.models import ModelLoadError
from tests.fixtures.tiny_sd import clip_to_ldm, to_ldm_state_dict, unet_to_ldm, vae_to_ldm, write_checkpoint

CONFIGS = INSTALL_DIR / "configs"


def _assert_same_weights(expected: torch.nn.Module, actual: torch.nn.Module) -> None:
    want, got = expected.state_dict(), actual.state_dict()
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key


@pytest.mark.parametrize("name, legacy_clip", [("m.safetensors", False), ("m.ckpt", False), ("old.ckpt", True)])
def test_single_file_checkpoint_loads_exactly(service, tiny_models, name, legacy_clip):
    folder = service.paths.checkpoints
    for existing in folder.iterdir():
        existing.unlink()
    write_checkpoint(folder / name, to_ldm_state_dict(tiny_models, legacy_clip_keys=legacy_clip))
    service.models.refresh()
    loaded = service.models.ensure_loaded(name)
    _assert_same_weights(tiny_models.unet, loaded.model.unet)
    _assert_same_weights(tiny_models.vae, loaded.model.vae)
    _assert_same_weights(tiny_models.text_encoder, loaded.model.text_encoder)
    tokens = torch.tensor([[49406, 320, 2368, 49407] + [49407] * 73])
    torch.testing.assert_close(
        loaded.model.text_encoder(tokens).last_hidden_state, tiny_models.text_encoder(tokens).last_hidden_state, rtol=0, atol=0
    )


def test_title_and_hash_follow_a1111(service, data_dir):
    path = data_dir / "models" / "Stable-diffusion" / "tiny-sd1.safetensors"
    loaded = service.models.ensure_loaded(None)
    sha = file_sha256(path)
    assert loaded.info.title == f"tiny-sd1.safetensors [{sha[:10]}]"
    assert loaded.info.stem == "tiny-sd1"
    cache = (data_dir / "cache.json").read_text()
    assert f'"checkpoint/tiny-sd1.safetensors"' in cache and sha in cache
    # A fresh discovery reuses the cached hash (no rehash) while the mtime is unchanged.
    service.models.refresh()
    assert service.models.find(sha[:10]).title == loaded.info.title


def test_discovery_is_recursive_and_skips_vae_files(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.safetensors", "sub/b.ckpt", "a.vae.safetensors", "notes.txt", "sub/c.vae.ckpt"):
        (tmp_path / name).write_bytes(b"x")
    found = discover([tmp_path])
    assert [info.name for info in found] == ["a.safetensors", "sub/b.ckpt"]
    assert find(found, "b").name == "sub/b.ckpt"
    assert find(found, "sub_b").name == "sub/b.ckpt"  # A1111's model_name
    assert find(found, "nothing") is None


def test_standard_sd15_architecture_is_read_from_tensor_shapes():
    """Real-size SD1.5 shapes (on the meta device: no memory) give back the standard configs."""
    import json

    unet_config = json.loads((CONFIGS / "sd1/unet/config.json").read_text())
    vae_config = json.loads((CONFIGS / "sd1/vae/config.json").read_text())
    text_config = json.loads((CONFIGS / "sd1/text_encoder/config.json").read_text())
    with init_empty_weights(include_buffers=True):
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(vae_config)
        text = CLIPTextModel(CLIPTextConfig(**text_config))
    sd = {**unet_to_ldm(unet), **vae_to_ldm(vae), **clip_to_ldm(text, legacy_keys=False)}
    # Start from a "standard" config with the tensor-visible values wrong, so they must come from
    # the shapes; head counts are invisible in weights and keep the family value.
    wrong = {"cross_attention_dim": 1, "block_out_channels": [1], "layers_per_block": 9, "down_block_types": []}
    inferred = infer_unet_config(sd, {**unet_config, **wrong})
    for key in ("block_out_channels", "layers_per_block", "down_block_types", "up_block_types", "cross_attention_dim",
                "in_channels", "out_channels", "use_linear_projection", "attention_head_dim"):
        assert inferred[key] == unet_config[key], key
    inferred_vae = infer_vae_config(sd, {**vae_config, "block_out_channels": [1], "layers_per_block": 9})
    for key in ("block_out_channels", "layers_per_block", "latent_channels"):
        assert inferred_vae[key] == vae_config[key], key
    inferred_text = infer_clip_text_config(sd, text_config, "cond_stage_model.transformer.text_model.")
    for key in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "vocab_size"):
        assert inferred_text[key] == text_config[key], key


def test_yaml_beside_checkpoint_overrides_heads_and_parameterization(service, tiny_models):
    folder = service.paths.checkpoints
    (folder / "tiny-sd1.yaml").write_text(
        "model:\n  params:\n    parameterization: v\n    scale_factor: 0.5\n"
        "    unet_config:\n      params:\n        num_heads: 4\n"
    )
    loaded = service.models.ensure_loaded(None)
    assert loaded.model.prediction_type == "v_prediction"
    assert loaded.model.latent_scale_factor == 0.5
    assert loaded.model.unet.config.attention_head_dim == 4
    _assert_same_weights(tiny_models.unet, loaded.model.unet)


def test_unsupported_family_is_refused_clearly(tiny_models):
    sd = to_ldm_state_dict(tiny_models)
    sd["model.diffusion_model.x_embedder.proj.weight"] = torch.ones(4, 4)
    with pytest.raises(UnsupportedModelError, match="Stable Diffusion 3 checkpoints are not supported"):
        load_components(sd, CONFIGS)


def test_incomplete_checkpoint_names_what_is_missing(tiny_models):
    sd = to_ldm_state_dict(tiny_models)
    del sd["first_stage_model.decoder.conv_out.weight"]
    with pytest.raises(ValueError, match="VAE is incomplete"):
        load_components(sd, CONFIGS)


class _WriteMarker:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_ckpt_is_refused_and_nothing_runs(service, tmp_path, tiny_models):
    marker = tmp_path / "PWNED"
    evil = service.paths.checkpoints / "evil.ckpt"
    torch.save({"state_dict": to_ldm_state_dict(tiny_models), "payload": _WriteMarker(marker)}, evil)
    service.models.refresh()
    with pytest.raises(ModelLoadError) as error:
        service.models.ensure_loaded("evil.ckpt")
    assert "evil.ckpt" in str(error.value) and "refused" in str(error.value)
    assert not marker.exists()
    # Sanity check that the payload is live: loading it without restrictions writes the marker.
    with open(evil, "rb") as handle:
        torch.load(handle, weights_only=False)
    assert marker.exists()


def test_pickle_disguised_as_safetensors_is_refused(service, tmp_path):
    marker = tmp_path / "PWNED"
    (service.paths.checkpoints / "model.safetensors").write_bytes(pickle.dumps(_WriteMarker(marker)))
    service.models.refresh()
    with pytest.raises(ModelLoadError, match="model.safetensors"):
        service.models.ensure_loaded("model.safetensors")
    assert not marker.exists()


def test_corrupt_and_missing_files_give_clear_errors(service):
    folder = service.paths.checkpoints
    (folder / "broken.safetensors").write_bytes(os.urandom(4096))
    service.models.refresh()
    with pytest.raises(ModelLoadError, match="broken.safetensors"):
        service.models.ensure_loaded("broken.safetensors")
    shutil.move(folder / "tiny-sd1.safetensors", folder.parent / "moved.safetensors")
    with pytest.raises(ModelLoadError, match="not found"):
        service.models.ensure_loaded("tiny-sd1.safetensors")


def test_no_checkpoint_says_where_to_put_one(tmp_path):
    from modules.core.devices import DevicePolicy, MemoryManager
    from modules.core.hash_cache import HashCache
    from modules.core.paths import Paths
    from modules.service.models import ModelService

    paths = Paths.create(data_dir=tmp_path)
    models = ModelService(paths, MemoryManager(DevicePolicy.choose(use_cpu=["all"])), HashCache(paths.cache_file))
    with pytest.raises(ModelLoadError) as error:
        models.ensure_loaded(None)
    assert str(paths.checkpoints) in str(error.value)
