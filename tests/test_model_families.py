"""SD2.x, SDXL and the SDXL refiner: tiny checkpoints in each family's real single-file layout are
recognised by their tensors, load exactly, encode prompts the way A1111 does (checked against
diffusers' own SDXL/SD2 prompt encoding where the two agree) and generate."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
from PIL import Image, ImageDraw

from modules.core.conditioning.clip_text import TextOptions
from modules.core.conditioning.cond import CROSSATTN, VECTOR
from modules.core.generation.job import GenerationOptions, make_conditioner
from modules.core.generation.request import Img2ImgRequest, Txt2ImgRequest
from modules.core.models.family import detect_family
from modules.core.models.loader import is_v_prediction_sd2, load_components, normalize_keys
from modules.core.paths import INSTALL_DIR
from modules.core.safe_load import load_state_dict
from tests.fixtures.tiny_families import build_tiny_family, make_family_checkpoint, set_v_test_outcome, to_ldm_state_dict
from tests.fixtures.tiny_sd import write_checkpoint

CONFIGS = INSTALL_DIR / "configs"
BOS, EOS = 49406, 49407
SMALL = dict(prompt="a red cat", negative_prompt="blurry", seed=11, steps=3, width=64, height=64, sampler_name="Euler")


def _same(expected: torch.nn.Module, actual: torch.nn.Module, rename=lambda key: key) -> None:
    want, got = expected.state_dict(), actual.state_dict()
    for key, tensor in got.items():
        assert torch.equal(want[rename(key)], tensor), key


@pytest.fixture(scope="module")
def families():
    """Each family's modules, and the model loaded back from its single-file state dict."""
    out = {}
    for family in ("sd2", "sdxl", "sdxl-refiner"):
        models = build_tiny_family(family, seed=3)
        if family == "sd2":
            set_v_test_outcome(models, v_prediction=False)
        out[family] = (models, load_components(to_ldm_state_dict(models), CONFIGS))
    return out


@pytest.mark.parametrize("family, label", [("sd2", "Stable Diffusion 2.x"), ("sdxl", "SDXL"), ("sdxl-refiner", "SDXL refiner")])
def test_each_family_is_detected_and_loads_exactly(families, family, label):
    models, loaded = families[family]
    assert (loaded.family.family, loaded.family.label) == (family, label)
    _same(models.unet, loaded.unet)
    _same(models.vae, loaded.vae)
    if family == "sdxl":
        _same(models.text_encoder, loaded.text_encoder)
        _same(models.text_encoder_2, loaded.text_encoder_2)
        assert loaded.text_width == 64 + 64
        assert loaded.sdxl is not None and not loaded.sdxl.refiner
    elif family == "sdxl-refiner":
        _same(models.text_encoder, loaded.text_encoder)
        assert loaded.text_encoder_2 is None and loaded.sdxl.refiner
    else:
        # SD2 reads only the penultimate layer: the last block is not loaded at all.
        assert loaded.text_encoder.config.num_hidden_layers == models.text_encoder.config.num_hidden_layers - 1
        _same(models.text_encoder, loaded.text_encoder)
        assert loaded.sdxl is None
    assert loaded.latent_scale_factor == (0.13025 if family.startswith("sdxl") else 0.18215)


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl", "sdxl-refiner"])
def test_inpainting_variants_are_told_by_the_unet_input_channels(tiny_models, family):
    if family == "sd1":
        from tests.fixtures.tiny_sd import build_tiny_sd1, to_ldm_state_dict as sd1_ldm
        sd = sd1_ldm(build_tiny_sd1(in_channels=9))
    else:
        sd = to_ldm_state_dict(build_tiny_family(family, in_channels=9))
    detected = detect_family(normalize_keys(sd))
    assert (detected.family, detected.variant) == (family, "inpaint")
    assert load_components(sd, CONFIGS).unet.config.in_channels == 9


def test_sd2_v_prediction_is_decided_by_a1111s_test():
    for wanted in (True, False):
        models = build_tiny_family("sd2", seed=5)
        mean = set_v_test_outcome(models, v_prediction=wanted)
        assert (mean < -1) == wanted
        loaded = load_components(to_ldm_state_dict(models), CONFIGS)
        assert is_v_prediction_sd2(loaded.unet) == wanted
        assert loaded.prediction_type == ("v_prediction" if wanted else "epsilon")


def test_yaml_parameterization_wins_over_the_v_test(tmp_path):
    from modules.core.models.ldm_config import read_ldm_yaml

    models = build_tiny_family("sd2", seed=5)
    set_v_test_outcome(models, v_prediction=True)
    yaml = tmp_path / "m.yaml"
    yaml.write_text("model:\n  params:\n    parameterization: eps\n")
    loaded = load_components(to_ldm_state_dict(models), CONFIGS, read_ldm_yaml(yaml))
    assert loaded.prediction_type == "epsilon"


def test_sd2_turbo_sgm_names_load_as_sd2(families):
    models, _ = families["sd2"]
    sd = {k.replace("cond_stage_model.", "conditioner.embedders.0."): v for k, v in to_ldm_state_dict(models).items()}
    assert detect_family(sd).family == "sdxl-refiner"  # what the raw names alone would say
    loaded = load_components(sd, CONFIGS)
    assert loaded.family.family == "sd2"
    _same(models.text_encoder, loaded.text_encoder)


@pytest.mark.parametrize("name, fmt", [("pickled.safetensors", "ckpt"), ("really-safetensors.ckpt", "safetensors")])
def test_content_decides_the_file_format_not_the_name(tmp_path, families, name, fmt):
    models, _ = families["sdxl"]
    path = write_checkpoint(tmp_path / name, to_ldm_state_dict(models), fmt)
    head = path.read_bytes()[:8]
    assert (head[:2] == b"PK") == (fmt == "ckpt")  # torch.save writes a zip; safetensors a length header
    loaded = load_components(load_state_dict(path), CONFIGS)
    assert loaded.family.family == "sdxl"
    _same(models.unet, loaded.unet)


# ------------------------------------------------------------------ text conditioning


def _tokenizer(model, pad: str, length: int = 77):
    tokenizer = copy.deepcopy(model.tokenizer)
    tokenizer.pad_token = pad
    tokenizer.model_max_length = length
    return tokenizer


def test_sdxl_prompt_encoding_matches_diffusers(families):
    """For a plain prompt, A1111's SDXL conditioning and diffusers' agree: CLIP-L and bigG
    penultimate layers side by side, bigG's pooled vector, zeros for an empty negative prompt."""
    _, model = families["sdxl"]
    pipe = StableDiffusionXLPipeline(
        vae=model.vae, text_encoder=model.text_encoder, text_encoder_2=model.text_encoder_2,
        tokenizer=_tokenizer(model, "<|endoftext|>"), tokenizer_2=_tokenizer(model, "!"), unet=model.unet,
        scheduler=EulerDiscreteScheduler(),
    )
    # diffusers zeroes the negative side when no negative prompt is given at all
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt("a photo of a cat", device="cpu", negative_prompt=None)
    conditioner = make_conditioner(model, GenerationOptions())
    ours = conditioner.encode(["a photo of a cat"])
    torch.testing.assert_close(ours[CROSSATTN], embeds, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours[VECTOR], pooled, rtol=0, atol=1e-6)
    empty = conditioner.encode_negative([""])
    assert torch.count_nonzero(empty[CROSSATTN]) == 0 and torch.count_nonzero(empty[VECTOR]) == 0
    assert torch.equal(empty[CROSSATTN], negative) and torch.equal(empty[VECTOR], negative_pooled)
    assert torch.count_nonzero(conditioner.encode([""])[CROSSATTN]) > 0  # only the negative side is zeroed
    # the time ids the U-Net gets for a 64×64 picture: original size, crop (0, 0), target size
    expected_ids = pipe._get_add_time_ids((64, 64), (0, 0), (64, 64), torch.float32, text_encoder_projection_dim=32)
    kwargs = model.sdxl.unet_kwargs(ours, torch.zeros(1, 4, 8, 8), torch.float32)
    assert torch.equal(kwargs["added_cond_kwargs"]["time_ids"], expected_ids)


def test_sdxl_pooled_vector_comes_from_the_first_chunk_and_ignores_emphasis(families):
    _, model = families["sdxl"]
    conditioner = make_conditioner(model, GenerationOptions())
    first = conditioner.encode(["a cat"])
    two_chunks = conditioner.encode(["a cat BREAK a dog"])
    assert two_chunks[CROSSATTN].shape[1] == 154
    torch.testing.assert_close(two_chunks[VECTOR], first[VECTOR], rtol=0, atol=0)
    torch.testing.assert_close(two_chunks[CROSSATTN][:, :77], first[CROSSATTN], rtol=0, atol=0)
    weighted = conditioner.encode(["a (cat:1.5)"])
    torch.testing.assert_close(weighted[VECTOR], first[VECTOR], rtol=0, atol=0)
    assert not torch.allclose(weighted[CROSSATTN], first[CROSSATTN])


def test_sdxl_refiner_carries_the_aesthetic_score(families):
    _, model = families["sdxl-refiner"]
    conditioner = make_conditioner(model, GenerationOptions(text=TextOptions(refiner_aesthetic=(6.0, 2.5))))
    positive, negative = conditioner.encode(["a cat"]), conditioner.encode_negative(["blurry"])
    assert positive[VECTOR][0, -1] == 6.0 and negative[VECTOR][0, -1] == 2.5
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=model.vae, text_encoder=None, text_encoder_2=model.text_encoder, tokenizer=None,
        tokenizer_2=_tokenizer(model, "!"), unet=model.unet, scheduler=EulerDiscreteScheduler(),
        requires_aesthetics_score=True,
    )
    ids, negative_ids = pipe._get_add_time_ids((64, 48), (0, 0), (64, 48), 6.0, 2.5, (64, 48), (0, 0), (64, 48),
                                               torch.float32, text_encoder_projection_dim=32)
    latent = torch.zeros(1, 4, 8, 6)  # 64 high, 48 wide
    assert torch.equal(model.sdxl.unet_kwargs(positive, latent, torch.float32)["added_cond_kwargs"]["time_ids"], ids)
    assert torch.equal(model.sdxl.unet_kwargs(negative, latent, torch.float32)["added_cond_kwargs"]["time_ids"], negative_ids)
    embeds, *_ = pipe.encode_prompt("a cat", device="cpu", do_classifier_free_guidance=False)
    torch.testing.assert_close(positive[CROSSATTN], embeds, rtol=0, atol=1e-6)


def test_sd2_reads_the_penultimate_layer_pads_with_zero_and_ignores_clip_skip(families):
    models, model = families["sd2"]
    conditioner = make_conditioner(model, GenerationOptions())
    ours = conditioner.encode(["a photo of a cat"])
    # the original tower's penultimate layer through its final LayerNorm, from 0-padded tokens
    ids = model.tokenizer(["a photo of a cat"], add_special_tokens=False)["input_ids"][0]
    tokens = torch.tensor([[BOS] + ids + [EOS] + [0] * (75 - len(ids))])
    full = models.text_encoder(tokens, output_hidden_states=True)
    expected = models.text_encoder.final_layer_norm(full.hidden_states[-2])
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    eos_padded = torch.tensor([[BOS] + ids + [EOS] * (76 - len(ids))])
    assert not torch.allclose(model.text_encoder(eos_padded).last_hidden_state, ours, atol=1e-3)
    skipped = make_conditioner(model, GenerationOptions(text=TextOptions(clip_skip=2))).encode(["a photo of a cat"])
    assert torch.equal(skipped, ours)
    pipe = StableDiffusionPipeline(
        vae=model.vae, text_encoder=model.text_encoder, tokenizer=_tokenizer(model, "!"), unet=model.unet,
        scheduler=EulerDiscreteScheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    embeds, _ = pipe.encode_prompt("a photo of a cat", "cpu", 1, False)
    torch.testing.assert_close(ours, embeds, rtol=0, atol=1e-6)


def test_sdxl_textual_inversion_puts_clip_l_and_clip_g_vectors_into_their_encoders(families):
    from modules.core.conditioning.textual_inversion import TextualInversion

    _, model = families["sdxl"]
    vectors = {"clip_l": torch.randn(2, 64, generator=torch.Generator().manual_seed(1)),
               "clip_g": torch.randn(2, 64, generator=torch.Generator().manual_seed(2)) + 5}
    embedding = TextualInversion("mystyle", vectors)
    conditioner = make_conditioner(model, GenerationOptions(), [embedding])
    captured = {}

    def embeddings_of(encoder):  # token + position embeddings, as the first transformer layer gets them
        return next(module for name, module in encoder.named_modules() if name.endswith("embeddings")
                    and hasattr(module, "position_embedding"))

    hooks = [embeddings_of(encoder).register_forward_hook(
        lambda module, args, output, name=name: captured.setdefault(name, output.clone()))
        for name, encoder in (("l", model.text_encoder), ("g", model.text_encoder_2))]
    try:
        conditioner.encode(["mystyle cat"])
    finally:
        for hook in hooks:
            hook.remove()
    for name, encoder, key in (("l", model.text_encoder, "clip_l"), ("g", model.text_encoder_2, "clip_g")):
        positions = embeddings_of(encoder).position_embedding.weight[1:3]
        torch.testing.assert_close(captured[name][0, 1:3] - positions, vectors[key], rtol=0, atol=1e-6)
    assert "mystyle" in conditioner.embeddings.used


# ------------------------------------------------------------------ generation through the service


def _box(width=64, height=64) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 40, 40), fill=255)
    return mask


@pytest.fixture(scope="module")
def family_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("families")
    files = {
        "sd2": make_family_checkpoint(folder, "sd2", "tiny-sd2.safetensors"),
        "sd2-v": make_family_checkpoint(folder, "sd2", "tiny-sd2-v.safetensors", v_prediction=True),
        "sd2-inpaint": make_family_checkpoint(folder, "sd2", "tiny-sd2-inpaint.ckpt", in_channels=9),
        "sdxl": make_family_checkpoint(folder, "sdxl", "tiny-sdxl.safetensors"),
        "sdxl-inpaint": make_family_checkpoint(folder, "sdxl", "tiny-sdxl-inpaint.safetensors", in_channels=9),
        "sdxl-refiner": make_family_checkpoint(folder, "sdxl-refiner", "tiny-sdxl-refiner.safetensors"),
    }
    return files


@pytest.mark.parametrize("key", ["sd2", "sd2-v", "sd2-inpaint", "sdxl", "sdxl-inpaint", "sdxl-refiner"])
def test_every_family_generates_reproducibly(service, family_files, key):
    path = family_files[key]
    (service.paths.checkpoints / path.name).write_bytes(path.read_bytes())
    service.models.refresh()
    override = {"sd_model_checkpoint": path.name}
    if key.endswith("inpaint"):
        source = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
        request = Img2ImgRequest(**SMALL, init_images=(source,), mask=_box(), denoising_strength=0.9)
        first = service.img2img(request, save_images=False, override_settings=override).result
        again = service.img2img(request, save_images=False, override_settings=override).result
    else:
        request = Txt2ImgRequest(**SMALL)
        first = service.txt2img(request, save_images=False, override_settings=override).result
        again = service.txt2img(request, save_images=False, override_settings=override).result
    assert service.models.loaded.model.family.family == key.split("-")[0] if key != "sdxl-refiner" else True
    pixels = np.asarray(first.images[0].image)
    assert pixels.shape == (64, 64, 3) and pixels.std() > 5
    assert np.array_equal(pixels, np.asarray(again.images[0].image))
    assert f"Model: {path.stem}" in first.infotexts[0]
    other = service.txt2img(Txt2ImgRequest(**{**SMALL, "prompt": "a blue dog"}), save_images=False,
                            override_settings=override).result if not key.endswith("inpaint") else None
    if other is not None:  # the prompt reaches the U-Net
        assert not np.array_equal(pixels, np.asarray(other.images[0].image))


def test_sd2_v_and_eps_checkpoints_with_the_same_weights_differ_only_by_parameterization(service, tmp_path):
    """The same tensors loaded as eps and as v give different pictures: the v-test result is used."""
    models = build_tiny_family("sd2", seed=9)
    set_v_test_outcome(models, v_prediction=True)
    sd = to_ldm_state_dict(models)
    write_checkpoint(service.paths.checkpoints / "v.safetensors", sd)
    write_checkpoint(service.paths.checkpoints / "eps.safetensors", sd)
    (service.paths.checkpoints / "eps.yaml").write_text("model:\n  params:\n    parameterization: eps\n")
    service.models.refresh()
    pictures = {}
    for name in ("v", "eps"):
        result = service.txt2img(Txt2ImgRequest(**SMALL), save_images=False,
                                 override_settings={"sd_model_checkpoint": name + ".safetensors"}).result
        assert service.models.loaded.model.prediction_type == ("v_prediction" if name == "v" else "epsilon")
        pictures[name] = np.asarray(result.images[0].image).astype(int)
    assert np.abs(pictures["v"] - pictures["eps"]).mean() > 1


# ------------------------------------------------------------------ SDXL refiner, "switch at"


@pytest.fixture
def xl_service(service, family_files):
    for key in ("sdxl", "sdxl-refiner"):
        path = family_files[key]
        (service.paths.checkpoints / path.name).write_bytes(path.read_bytes())
    # the same base weights under another name: a "refiner" that changes nothing
    (service.paths.checkpoints / "same-as-base.safetensors").write_bytes(family_files["sdxl"].read_bytes())
    service.models.refresh()
    return service


XL = dict(prompt="a cat", negative_prompt="", steps=6, width=64, height=64, seed=3, sampler_name="Euler")


def _run(service, override="tiny-sdxl.safetensors", img2img=None, **fields):
    request = (Img2ImgRequest(**{**XL, **fields}, init_images=(img2img,)) if img2img is not None
               else Txt2ImgRequest(**{**XL, **fields}))
    run = service.img2img if img2img is not None else service.txt2img
    return run(request, save_images=False, override_settings={"sd_model_checkpoint": override}).result


def _pixels(result, index=0):
    return np.asarray(result.images[index].image).astype(int)


def test_completed_ratio_is_read_from_the_noise_level(families):
    from modules.core.sampling.denoiser import CFGDenoiser, UNetDenoiser
    from modules.core.sampling.noise_schedule import DiscreteSchedule

    _, model = families["sdxl"]
    schedule = DiscreteSchedule(model.alphas_cumprod)
    denoiser = CFGDenoiser(UNetDenoiser(model.unet, schedule, "epsilon", model.sdxl), None, None, 7.0)
    for t in (999, 800, 199, 0):
        assert denoiser.completed_ratio(schedule.sigmas[t][None]) == (999 - t) / 1000
    timesteps = CFGDenoiser(UNetDenoiser(model.unet, schedule, "epsilon", model.sdxl), None, None, 7.0, timestep_kind=True)
    assert timesteps.completed_ratio(torch.tensor([599.0])) == 0.4


def test_a_refiner_with_the_base_weights_changes_nothing_but_the_infotext(xl_service):
    plain = _run(xl_service, n_iter=2)
    refined = _run(xl_service, n_iter=2, refiner_checkpoint="same-as-base", refiner_switch_at=0.5)
    for index in range(2):  # sampling carried on across the switch with the same state and steps
        assert np.array_equal(_pixels(plain, index), _pixels(refined, index))
    short = xl_service.models.find("same-as-base").shorthash
    assert f"Refiner: same-as-base [{short}], Refiner switch at: 0.5" in refined.infotexts[0]


def test_the_refiner_takes_over_and_each_batch_starts_on_the_base_again(xl_service):
    plain = _run(xl_service)
    refined = _run(xl_service, n_iter=2, refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=0.5)
    assert np.abs(_pixels(plain) - _pixels(refined)).mean() > 2
    alone = _run(xl_service, seed=4, refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=0.5)
    assert np.array_equal(_pixels(refined, 1), _pixels(alone))
    assert "Refiner: tiny-sdxl-refiner [" in refined.infotexts[1]
    never = _run(xl_service, refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=1.0)
    assert np.array_equal(_pixels(plain), _pixels(never)) and "Refiner" not in never.infotexts[0]
    # pasting the infotext gives the request that made the picture again
    from modules.service.paste import paste

    fields = paste(refined.infotexts[1], xl_service.settings).fields
    assert fields["refiner_switch_at"] == 0.5 and fields["refiner_checkpoint"].startswith("tiny-sdxl-refiner [")
    again = _run(xl_service, seed=fields["seed"], refiner_checkpoint=fields["refiner_checkpoint"],
                 refiner_switch_at=fields["refiner_switch_at"])
    assert np.array_equal(_pixels(again), _pixels(alone))


def test_refiner_in_hires_fix_and_img2img(xl_service):
    hires = _run(xl_service, enable_hr=True, hr_scale=1.5, refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=0.5)
    plain_hires = _run(xl_service, enable_hr=True, hr_scale=1.5)
    assert hires.images[0].image.size == (96, 96)
    assert np.abs(_pixels(hires) - _pixels(plain_hires)).mean() > 2  # the refiner acted in the second pass
    picture = _run(xl_service).images[0].image
    refined = _run(xl_service, img2img=picture, refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=0.9)
    plain = _run(xl_service, img2img=picture)
    assert np.abs(_pixels(refined) - _pixels(plain)).mean() > 1
    assert "Refiner switch at: 0.9" in refined.infotexts[0]


def test_refiner_fields_are_validated(xl_service):
    from modules.core.generation.request import InvalidRequest

    with pytest.raises(InvalidRequest, match="refiner_checkpoint"):
        _run(xl_service, refiner_checkpoint="missing-model")
    with pytest.raises(InvalidRequest, match="refiner_switch_at"):
        _run(xl_service, refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=1.5)


# ------------------------------------------------------------------ LoRA on SD2 / SDXL


def _lora_pair(weight: torch.Tensor, generator: torch.Generator, rank: int = 2):
    down = torch.randn(rank, *weight.shape[1:2], generator=generator) * 0.3
    up = torch.randn(weight.shape[0], rank, generator=generator) * 0.3
    return down, up


def test_sdxl_kohya_lora_uses_original_unet_names_and_both_text_encoders(families):
    from modules.core.models.lora import LoraPatch, parse_lora

    _, model = families["sdxl"]
    unet_path = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    ldm = model.unet_ldm_names[unet_path]
    assert ldm == "input_blocks.4.1.transformer_blocks.0.attn2.to_k"  # SDXL's numbering: 2 resnets + downsampler per level
    targets = {
        ("unet", unet_path, "lora_unet_" + ldm.replace(".", "_")),
        ("te", "encoder.layers.0.self_attn.q_proj", "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"),
        ("te2", "text_model.encoder.layers.1.mlp.fc1", "lora_te2_text_model_encoder_layers_1_mlp_fc1"),
    }
    modules = {"unet": model.unet, "te": model.text_encoder, "te2": model.text_encoder_2}
    generator = torch.Generator().manual_seed(0)
    weights, pairs = {}, {}
    for where, path, key in targets:
        weight = dict(modules[where].named_modules())[path].weight
        down, up = _lora_pair(weight, generator)
        weights |= {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(1.0)}
        pairs[(where, path)] = (down, up, weight.detach().clone())
    lora = parse_lora(weights, "xl", model.unet, model.text_encoder, model.text_encoder_2, model.unet_ldm_names)
    assert (list(lora.unet), list(lora.text_encoder), list(lora.text_encoder_2)) == (
        [unet_path], ["encoder.layers.0.self_attn.q_proj"], ["text_model.encoder.layers.1.mlp.fc1"])
    assert lora.unmatched == 0
    patch = LoraPatch()
    for where, part in (("unet", lora.unet), ("te", lora.text_encoder), ("te2", lora.text_encoder_2)):
        patch.merge(modules[where], part, 0.5)
    for (where, path), (down, up, before) in pairs.items():
        weight = dict(modules[where].named_modules())[path].weight
        torch.testing.assert_close(weight, before + (up @ down) * (1.0 / 2) * 0.5)
    patch.restore()
    for (where, path), (_, _, before) in pairs.items():
        assert torch.equal(dict(modules[where].named_modules())[path].weight, before)


def test_sdxl_lora_file_through_the_service_changes_the_picture_and_comes_off_exactly(xl_service):
    model = xl_service.models.ensure_loaded("tiny-sdxl.safetensors").model
    before = {key: value.clone() for key, value in model.text_encoder_2.state_dict().items()}
    generator = torch.Generator().manual_seed(1)
    weights = {}
    for path in ("text_model.encoder.layers.0.self_attn.v_proj", "text_model.encoder.layers.1.mlp.fc2"):
        weight = dict(model.text_encoder_2.named_modules())[path].weight
        down, up = _lora_pair(weight, generator)
        key = "lora_te2_" + path.replace(".", "_")
        weights |= {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up * 5}
    from safetensors.torch import save_file

    folder = xl_service.paths.models / "Lora"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / "xl-style.safetensors"))
    plain = _run(xl_service)
    styled = _run(xl_service, prompt="a cat <lora:xl-style:1>")
    zero = _run(xl_service, prompt="a cat <lora:xl-style:0>")
    assert np.abs(_pixels(plain) - _pixels(styled)).mean() > 1
    assert np.array_equal(_pixels(plain), _pixels(zero))
    assert "Lora hashes: \"xl-style: " in styled.infotexts[0]
    after = xl_service.models.loaded.model.text_encoder_2.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_api_bodies_carry_the_refiner_and_hires_checkpoint_fields():
    from modules.service.api.models import Img2ImgBody, Txt2ImgBody
    from modules.service.api.routes import img2img_request, txt2img_request

    request = txt2img_request(Txt2ImgBody(prompt="x", refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=0.6,
                                          enable_hr=True, hr_checkpoint_name="other"))
    assert (request.refiner_checkpoint, request.refiner_switch_at, request.hr_checkpoint_name) == ("tiny-sdxl-refiner", 0.6, "other")
    plain = txt2img_request(Txt2ImgBody(prompt="x", refiner_checkpoint="None", hr_checkpoint_name="Use same checkpoint"))
    assert (plain.refiner_checkpoint, plain.refiner_switch_at, plain.hr_checkpoint_name) == ("", 0.8, "")
    assert img2img_request(Img2ImgBody(prompt="x", refiner_checkpoint="r"), 1.0).refiner_checkpoint == "r"


# ------------------------------------------------------------------ settings of the families


def test_a_half_precision_vae_that_gives_nans_decodes_again_in_float32():
    from modules.core.generation.job import decode_to_pixels
    from tests.fixtures.tiny_sd import build_tiny_sd1, to_ldm_state_dict as sd1_ldm

    model = load_components(sd1_ldm(build_tiny_sd1(seed=2)), CONFIGS)
    with torch.no_grad():  # weights that fit float16, activations that overflow it (as in the SDXL VAE)
        model.vae.post_quant_conv.weight.mul_(30)
    latent = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 1000 * model.latent_scale_factor
    full = decode_to_pixels(model, latent)
    model.vae.half()
    assert torch.isnan(decode_to_pixels(model, latent, upcast_on_nans=False)).any()
    retried = decode_to_pixels(model, latent)
    assert not torch.isnan(retried).any()
    # the same decode as a float32 VAE, up to the float16 rounding of the weights
    torch.testing.assert_close(retried, full, rtol=0, atol=0.05)
    assert model.vae.dtype == torch.float16  # the VAE is back in its dtype


def test_sdxl_clip_l_skip_applies_clip_skip_to_clip_l_only(families):
    _, model = families["sdxl"]
    text = TextOptions(clip_skip=2)
    default = make_conditioner(model, GenerationOptions(text=text)).encode(["a cat"])[CROSSATTN]
    plain = make_conditioner(model, GenerationOptions()).encode(["a cat"])[CROSSATTN]
    assert torch.equal(default, plain)  # Clip skip is ignored by default
    skipped = make_conditioner(model, GenerationOptions(text=TextOptions(clip_skip=1, sdxl_clip_l_skip=True)))
    out = skipped.encode(["a cat"])[CROSSATTN]
    assert not torch.allclose(out[..., :64], plain[..., :64])  # CLIP-L now reads its last layer
    assert torch.equal(out[..., 64:], plain[..., 64:])  # bigG keeps its penultimate layer


def test_sdxl_crop_setting_reaches_the_size_ids(families):
    from modules.core.generation.passes import prepare_sampling

    _, model = families["sdxl"]
    _, _, unet = prepare_sampling(model, Txt2ImgRequest(**SMALL), GenerationOptions(sdxl_crop=(8, 16)), "Euler",
                                  "Automatic", 3)
    cond = make_conditioner(model, GenerationOptions()).encode(["a cat"])
    ids = unet.sdxl.unet_kwargs(cond, torch.zeros(1, 4, 8, 8), torch.float32)["added_cond_kwargs"]["time_ids"]
    assert ids.tolist() == [[64.0, 64.0, 8.0, 16.0, 64.0, 64.0]]


@pytest.mark.parametrize("mode", ["first pass", "both passes"])
def test_hires_refiner_pass_setting(xl_service, mode):
    fields = dict(enable_hr=True, hr_scale=1.5, refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=0.5)
    second = _run(xl_service, **fields)
    xl_service.settings.set("hires_fix_refiner_pass", mode, persist=False)
    chosen = _run(xl_service, **fields)
    assert f"Hires refiner: {mode}, Refiner: tiny-sdxl-refiner [" in chosen.infotexts[0]
    assert "Hires refiner" not in second.infotexts[0]
    assert np.abs(_pixels(chosen) - _pixels(second)).mean() > 1


def test_loading_creates_each_component_in_its_target_dtype(families):
    from modules.core.devices import DevicePolicy

    models, _ = families["sdxl"]
    policy = DevicePolicy(torch.device("cpu"), torch.float16, torch.bfloat16, torch.float32)
    loaded = load_components(to_ldm_state_dict(models), CONFIGS, policy=policy)
    assert {p.dtype for p in loaded.unet.parameters()} == {torch.float16}
    assert {p.dtype for p in loaded.text_encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in loaded.text_encoder_2.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in loaded.vae.parameters()} == {torch.float32}
    assert torch.equal(loaded.unet.conv_in.weight, models.unet.conv_in.weight.half())


def test_sd2_kohya_lora_reaches_the_openclip_encoder_and_the_unet(families):
    from modules.core.models.lora import parse_lora

    _, model = families["sd2"]
    generator = torch.Generator().manual_seed(4)
    weights = {}
    for module, path, key in (
        (model.text_encoder, "encoder.layers.1.self_attn.k_proj", "lora_te_text_model_encoder_layers_1_self_attn_k_proj"),
        (model.unet, "down_blocks.0.attentions.0.proj_in", "lora_unet_down_blocks_0_attentions_0_proj_in"),
    ):
        down, up = _lora_pair(dict(module.named_modules())[path].weight, generator)
        weights |= {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up}
    # the dropped last OpenCLIP block (SD2 never reads it) matches nothing, and is counted
    weights["lora_te_text_model_encoder_layers_2_mlp_fc1.lora_down.weight"] = torch.ones(2, 64)
    weights["lora_te_text_model_encoder_layers_2_mlp_fc1.lora_up.weight"] = torch.ones(256, 2)
    lora = parse_lora(weights, "sd2", model.unet, model.text_encoder, None, model.unet_ldm_names)
    assert list(lora.text_encoder) == ["encoder.layers.1.self_attn.k_proj"]
    assert list(lora.unet) == ["down_blocks.0.attentions.0.proj_in"]
    assert lora.unmatched == 1
