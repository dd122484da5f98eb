"""External VAE files: the candidates, §6.2's resolution order case by case, and swapping a VAE into
the loaded tiny model and back ("None" gives the checkpoint's own VAE bit for bit)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from modules.core.generation.request import Txt2ImgRequest
from modules.core.infotext import parse_infotext
from modules.core.models.vae import discover_vaes, resolve_vae
from tests.fixtures.tiny_sd import VAE_PREFIX, build_tiny_sd1, vae_to_ldm, write_checkpoint


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@pytest.fixture
def folders(tmp_path):
    ckpts, vaes, extra = tmp_path / "Stable-diffusion", tmp_path / "VAE", tmp_path / "extra"
    files = {
        "model": touch(ckpts / "model.safetensors"),
        "near": touch(ckpts / "model.vae.pt"),
        "other_ckpt": touch(ckpts / "sub" / "other.ckpt"),
        "not_a_vae": touch(ckpts / "readme.txt"),
        "mse": touch(vaes / "vae-ft-mse.safetensors"),
        "nested": touch(vaes / "anime" / "kl-f8-anime2.ckpt"),
        "notes": touch(vaes / "notes.txt"),
        "extra": touch(extra / "custom.bin"),
    }
    return ckpts, vaes, extra, files


def test_candidates_are_vae_files_beside_checkpoints_model_files_in_vae_folders_and_any_file_of_vae_dir(folders):
    ckpts, vaes, extra, files = folders
    found = discover_vaes([ckpts], [vaes], [extra])
    assert found == {"custom.bin": files["extra"], "kl-f8-anime2.ckpt": files["nested"],
                     "model.vae.pt": files["near"], "vae-ft-mse.safetensors": files["mse"]}
    assert list(found) == sorted(found)


def test_resolution_order_case_by_case(folders):
    ckpts, vaes, extra, files = folders
    found = discover_vaes([ckpts], [vaes])
    model = files["model"]
    # 1. --vae-path beats everything
    assert resolve_vae(model, found, "vae-ft-mse.safetensors", vae_path=files["nested"]).path == files["nested"]
    # 2. a selected VAE overrides per-model preferences (default)
    assert resolve_vae(model, found, "vae-ft-mse.safetensors").path == files["mse"]
    assert resolve_vae(model, found, "None").path is None  # None: the checkpoint's own
    # 4. Automatic: the VAE whose name starts with the checkpoint's name
    assert resolve_vae(model, found, "Automatic").path == files["near"]
    assert resolve_vae(files["other_ckpt"], found, "Automatic").path is None  # nothing near: baked in
    # 3. user metadata (<checkpoint>.json, key "vae") comes before the name match
    (ckpts / "model.json").write_text(json.dumps({"vae": "kl-f8-anime2.ckpt"}))
    assert resolve_vae(model, found, "Automatic").path == files["nested"]
    (ckpts / "model.json").write_text(json.dumps({"vae": "None"}))
    assert resolve_vae(model, found, "Automatic").path is None
    (ckpts / "model.json").write_text(json.dumps({"vae": "missing.pt"}))
    assert resolve_vae(model, found, "Automatic").path == files["near"]  # an unknown name is passed over
    (ckpts / "model.json").unlink()
    # without "overrides per-model preferences" the name match wins over the selected VAE ...
    assert resolve_vae(model, found, "vae-ft-mse.safetensors", setting_overrides_per_model=False).path == files["mse"]
    assert resolve_vae(model, found, "vae-ft-mse.safetensors", setting_overrides_per_model=False,
                       selected_beats_near=False).path == files["near"]
    # ... and the setting is the last resort; an unknown name falls back to the checkpoint's own
    assert resolve_vae(files["other_ckpt"], found, "vae-ft-mse.safetensors",
                       setting_overrides_per_model=False).path == files["mse"]
    assert resolve_vae(model, found, "gone.safetensors").path is None


def write_vae(path, seed: int, prefixed: bool = False):
    """A VAE file as A1111 users have them: the LDM autoencoder's keys (optionally still prefixed),
    plus training leftovers that must be ignored."""
    ldm = vae_to_ldm(build_tiny_sd1(seed=seed).vae)
    weights = {(key if prefixed else key[len(VAE_PREFIX):]): value for key, value in ldm.items()}
    weights["loss.logvar"] = torch.zeros(())
    return write_checkpoint(path, weights)


REQUEST = Txt2ImgRequest(prompt="a red cat", seed=3, steps=3, width=64, height=64, sampler_name="Euler")


def pixels(service, **overrides):
    result = service.txt2img(REQUEST, save_images=False, override_settings=overrides or None).result
    return np.asarray(result.images[0].image), result.infotexts[0]


def test_a_vae_beside_the_checkpoint_is_used_and_none_restores_the_baked_one_exactly(service, data_dir):
    baked, baked_text = pixels(service)
    assert "VAE" not in parse_infotext(baked_text) or parse_infotext(baked_text).get("VAE") is None
    write_vae(data_dir / "models" / "Stable-diffusion" / "tiny-sd1.vae.pt", seed=9)
    near, text = pixels(service)
    params = parse_infotext(text)
    assert params["VAE"] == "tiny-sd1.vae.pt" and len(params["VAE hash"]) == 10
    assert not np.array_equal(near, baked)
    assert text.index("Model: ") < text.index("VAE hash: ") < text.index("VAE: ")  # A1111's key order
    none, none_text = pixels(service, sd_vae="None")
    assert np.array_equal(none, baked) and "VAE hash" not in none_text
    again, _ = pixels(service)
    assert np.array_equal(again, near)


def test_a_selected_vae_from_the_vae_folder_and_the_prefixed_layout(service, data_dir):
    baked, _ = pixels(service)
    write_vae(data_dir / "models" / "VAE" / "one.safetensors", seed=11)
    write_vae(data_dir / "models" / "VAE" / "two.safetensors", seed=11, prefixed=True)
    assert list(service.models.vaes()) == ["one.safetensors", "two.safetensors"]
    one, one_text = pixels(service, sd_vae="one.safetensors")
    two, _ = pixels(service, sd_vae="two.safetensors")
    assert np.array_equal(one, two) and not np.array_equal(one, baked)
    assert "VAE: one.safetensors" in one_text
    # pasting that infotext offers the VAE as an override setting
    assert "VAE: one.safetensors" in service.paste(one_text).overrides


def test_a_vae_of_another_shape_is_a_clear_error_and_the_model_keeps_working(service, data_dir):
    baked, _ = pixels(service)
    write_checkpoint(data_dir / "models" / "VAE" / "broken.safetensors", {"encoder.conv_in.weight": torch.zeros(3, 3)})
    from modules.service.models import ModelLoadError

    with pytest.raises(ModelLoadError, match="broken.safetensors"):
        pixels(service, sd_vae="broken.safetensors")
    assert np.array_equal(pixels(service)[0], baked)


def test_vae_path_flag_wins_over_the_setting(service, data_dir):
    path = write_vae(data_dir / "elsewhere" / "forced.pt", seed=13)
    write_vae(data_dir / "models" / "VAE" / "chosen.safetensors", seed=14)
    service.models.vae_path = path
    _, text = pixels(service, sd_vae="chosen.safetensors")
    assert "VAE: forced.pt" in text
