"""Pasting an infotext (↙, PNG Info → Send to txt2img): request fields, sampler/scheduler
normalisation, settings as "override settings" entries, and A1111's Version back-compat."""

from __future__ import annotations

import numpy as np
import pytest

from modules.core.generation.request import Txt2ImgRequest
from modules.core.infotext import apply_backcompat, infotext_version, parse_infotext
from modules.service.paste import overrides_from_entries, paste
from modules.service.settings import InvalidSetting, Settings

ASUKA = (
    "masterpiece, best quality, 1girl, brown hair, green eyes, colorful, autumn, cumulonimbus clouds, lighting,"
    " blue sky, falling leaves, garden\n"
    "Negative prompt: lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits,"
    " cropped, worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry\n"
    "Steps: 20, Sampler: Euler, CFG scale: 12, Seed: 2870305590, Size: 512x512, Model hash: 925997e9,"
    " Clip skip: 2, ENSD: 31337"
)


@pytest.fixture
def settings(tmp_path):
    return Settings(tmp_path / "config.json")


def test_paste_sets_request_fields(settings):
    pasted = paste(ASUKA, settings)
    assert pasted.fields == {
        "prompt": ASUKA.split("\n")[0],
        "negative_prompt": ASUKA.split("\n")[1][len("Negative prompt: "):],
        "steps": 20, "cfg_scale": 12, "seed": 2870305590, "width": 512, "height": 512,
        "sampler_name": "Euler", "scheduler": "Automatic",
        # keys the infotext lacks reset their controls to A1111's defaults (§3.5)
        "hr_resize_x": 0, "hr_resize_y": 0, "hr_prompt": "", "hr_negative_prompt": "",
        "hr_sampler_name": "", "hr_scheduler": "", "hr_checkpoint_name": "",
        "inpaint_full_res_padding": 32, "inpainting_mask_invert": 0, "inpainting_fill": 1, "inpaint_full_res": False,
    }
    # settings keys that differ from the current values become override entries, A1111's format
    assert pasted.overrides == ["Clip skip: 2", "ENSD: 31337"]
    # a fields dict builds a valid request
    request_fields = {name: value for name, value in pasted.fields.items() if name in Txt2ImgRequest.__dataclass_fields__}
    Txt2ImgRequest(**request_fields).validate()


def test_paste_only_overrides_what_differs(settings):
    settings.set("CLIP_stop_at_last_layers", 2)
    assert paste(ASUKA, settings).overrides == ["ENSD: 31337"]


@pytest.mark.parametrize("sampler, schedule, expected", [
    ("DPM++ 2M Karras", None, ("DPM++ 2M", "Automatic")),  # Karras is DPM++ 2M's own default
    ("DPM++ 2M", "Exponential", ("DPM++ 2M", "Exponential")),
    ("Euler a Karras", None, ("Euler a", "Karras")),
    ("k_euler_a", None, ("Euler a", "Automatic")),
    ("DPM++ 2M SDE", "Exponential", ("DPM++ 2M SDE", "Automatic")),
    ("DPM++ 2M SDE Karras", None, ("DPM++ 2M SDE", "Karras")),
])
def test_paste_normalises_sampler_and_schedule(settings, sampler, schedule, expected):
    text = f"a cat\nSteps: 20, Sampler: {sampler}, " + (f"Schedule type: {schedule}, " if schedule else "") + "Seed: 1"
    fields = paste(text, settings).fields
    assert (fields["sampler_name"], fields["scheduler"]) == expected


def test_unknown_sampler_and_bad_numbers_are_left_out(settings):
    pasted = paste("a cat\nSteps: many, Sampler: Mystery, Seed: 5, CFG scale: 7.5", settings)
    assert "steps" not in pasted.fields and "sampler_name" not in pasted.fields
    assert {key: pasted.fields[key] for key in ("prompt", "negative_prompt", "seed", "cfg_scale")} == {
        "prompt": "a cat", "negative_prompt": "", "seed": 5, "cfg_scale": 7.5}


def test_out_of_range_setting_values_are_not_offered(settings):
    assert paste("a\nSteps: 20, Seed: 1, Clip skip: 40", settings).overrides == []


def test_overrides_from_entries_round_trip(settings):
    pasted = paste(ASUKA + ", RNG: NV, Eta: 0.67", settings)
    assert overrides_from_entries(pasted.overrides, settings) == {
        "CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337, "randn_source": "NV", "eta_ancestral": 0.67,
    }
    with pytest.raises(InvalidSetting, match="unknown override"):
        overrides_from_entries(["Wobble: 3"], settings)
    with pytest.raises(InvalidSetting, match="CLIP_stop_at_last_layers"):
        overrides_from_entries(["Clip skip: 99"], settings)


# --------------------------------------------------------------------------------- back-compat

@pytest.mark.parametrize("text, expected", [
    ("v1.10.1", (1, 10, 1)), ("1.6.0", (1, 6, 0)), ("v1.7.0-225-g4afaaf8a", (1, 7, 0)),
])
def test_infotext_version_reads_a1111_versions(text, expected):
    assert infotext_version(text).release == expected


@pytest.mark.parametrize("text", ["f2.0.1v1.10.1-previous-669-gdfdcbab6", "hanga-0.1.0", "", None, "banana"])
def test_other_versions_get_no_backcompat(text):
    assert infotext_version(text) is None
    result = {"Version": text, "Prompt": "a [b:c:2]", "Sampler": "DDIM"}
    apply_backcompat(result)
    assert result == {"Version": text, "Prompt": "a [b:c:2]", "Sampler": "DDIM"}


def test_backcompat_rules_follow_the_version():
    def flags(version, prompt="a [b:c:2]", extra=""):
        parsed = parse_infotext(f"{prompt}\nSteps: 20, Sampler: DDIM, Seed: 1{extra}, Version: {version}")
        return {key for key in ("Old prompt editing timelines", "Pad conds v0", "Downcast alphas_cumprod",
                                "Refiner switch by sampling steps") if parsed.get(key) is True}

    assert flags("v1.5.1") == {"Old prompt editing timelines", "Pad conds v0", "Downcast alphas_cumprod"}
    assert flags("v1.5.1", prompt="a b") == {"Pad conds v0", "Downcast alphas_cumprod"}
    assert flags("v1.6.0") == {"Downcast alphas_cumprod"}
    assert flags("v1.7.0-224-gabcdef12") == {"Downcast alphas_cumprod"}
    assert flags("v1.7.0-225-gabcdef12") == set()
    assert flags("v1.7.0", extra=", Refiner: sdxl_refiner [7440042bbd]") == {
        "Downcast alphas_cumprod", "Refiner switch by sampling steps"}
    assert flags("v1.8.0", extra=", Refiner: sdxl_refiner [7440042bbd]") == set()
    assert flags("v1.10.1") == set()
    assert "Old prompt editing timelines" not in parse_infotext("a [b:c:2]\nSteps: 20, Seed: 1, Version: v1.5.1",
                                                               backcompat=False)


def test_old_infotext_pastes_the_old_timeline_setting(settings):
    pasted = paste("a [cat:dog:0.5]\nSteps: 20, Sampler: Euler a, Seed: 1, Version: v1.5.1", settings)
    assert "Old prompt editing timelines: True" in pasted.overrides
    settings.set("auto_backcompat", False)
    pasted = paste("a [cat:dog:0.5]\nSteps: 20, Sampler: Euler a, Seed: 1, Version: v1.5.1", settings)
    assert not any(entry.startswith("Old prompt editing timelines") for entry in pasted.overrides)


# ------------------------------------------------------------------------- through the service

def test_paste_then_generate_reproduces_the_image(service):
    """What a PNG says is what pasting it and pressing Generate makes again (override settings
    included)."""
    request = Txt2ImgRequest(prompt="a (red:1.2) cat", negative_prompt="dog", seed=321, width=64, height=64,
                             steps=4, sampler_name="Euler a", cfg_scale=6.5)
    first = service.txt2img(request, save_images=False,
                            override_settings={"CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337}).result
    pasted = service.paste(first.infotexts[0])
    assert set(pasted.overrides) == {"Clip skip: 2", "ENSD: 31337"}
    fields = {name: value for name, value in pasted.fields.items() if name in Txt2ImgRequest.__dataclass_fields__}
    again = service.txt2img(Txt2ImgRequest(**fields), save_images=False,
                            override_settings=service.overrides_from_entries(pasted.overrides)).result
    assert again.infotexts[0] == first.infotexts[0]
    assert np.array_equal(np.asarray(again.images[0].image), np.asarray(first.images[0].image))


def test_last_infotext_is_the_params_file(service):
    assert service.last_infotext() == ""
    outcome = service.txt2img(Txt2ImgRequest(prompt="a cat", seed=5, width=64, height=64, steps=2), save_images=True)
    assert service.last_infotext() == outcome.result.infotexts[0]
