"""A1111's file-name pattern tags (a1111-compat.md §9.2; ``images.FilenameGenerator``): values,
sanitising, arguments, tags that drop the text before them, unknown tags, and the names the
generation service gives saved pictures."""

from __future__ import annotations

import datetime
import hashlib
import re
import zoneinfo
from pathlib import Path

import pytest
from PIL import Image

from modules.core.generation.file_names import name_fields, sampler_and_scheduler, vae_filename
from modules.core.generation.job import GeneratedImage
from modules.core.generation.request import Img2ImgRequest, Txt2ImgRequest
from modules.core.images import NameFields, apply_pattern, sanitize_filename_part, save_image

WHEN = datetime.datetime(2024, 3, 9, 7, 5, 1)
PROMPT = "a cat, in a hat: best/worst? quality"


def fields(**changes) -> NameFields:
    base = dict(seed=1234, prompt=PROMPT, steps=20, cfg=7, width=512, height=768, sampler="DPM++ 2M",
                scheduler="Karras", model_name="v1-5-pruned", model_hash="6ce0161689", date=WHEN,
                job_timestamp="20240309070501", negative_prompt="ugly, blurry", clip_skip=2)
    return NameFields(**{**base, **changes})


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.mark.parametrize("pattern, expected", [
    ("[seed]", "1234"),
    ("[steps]-[cfg]-[width]x[height]", "20-7-512x768"),
    ("[sampler]", "DPM++ 2M"),
    ("[scheduler]", "Karras"),
    ("[sampler_scheduler]", "DPM++ 2M Karras"),
    ("[model_name]-[model_hash]", "v1-5-pruned-6ce0161689"),
    ("[date]", "2024-03-09"),
    ("[datetime]", "20240309070501"),
    ("[datetime<%Y%m%d_%H%M%S>]", "20240309_070501"),
    ("[datetime<%Y/%m/%d %H:%M>]", "2024_03_09 07_05"),  # separators sanitised, spaces kept
    ("[datetime<>]", "20240309070501"),
    ("[job_timestamp]", "20240309070501"),
    ("[prompt]", "a_cat,_in_a_hat__best_worst__quality"),
    ("[prompt_spaces]", "a cat, in a hat_ best_worst_ quality"),
    ("[prompt_words]", "a cat in a hat best worst quality"),
    ("[clip_skip]", "2"),
    ("[batch_size]", "1"),
    ("[none]", ""),
    ("[basename]", "img"),
    ("[SEED]-[Date]", "1234-2024-03-09"),  # tag names are case-insensitive
    ("[vae_filename]", "NoneType"),
    ("[hasprompt<cat|nocat><dog|nodog><mouse>]", "catnodog"),
    ("img [seed] of [steps]", "img 1234 of 20"),
])
def test_tag_values(pattern, expected):
    assert apply_pattern(pattern, fields()) == expected


def test_prompt_hashes_are_sha256_hex_8_by_default():
    values = fields(request_prompt="a cat")
    assert apply_pattern("[prompt_hash]", values) == sha(PROMPT)[:8]
    assert apply_pattern("[prompt_hash<12>]", values) == sha(PROMPT)[:12]
    assert apply_pattern("[prompt_hash<64>]", values) == sha(PROMPT)
    assert apply_pattern("[negative_prompt_hash]", values) == sha("ugly, blurry")[:8]
    assert apply_pattern("[negative_prompt_hash<3>]", values) == sha("ugly, blurry")[:3]
    assert apply_pattern("[full_prompt_hash]", values) == sha("a cat ugly, blurry")[:8]
    assert apply_pattern("[full_prompt_hash]", fields()) == sha(PROMPT + " ugly, blurry")[:8]
    assert apply_pattern("[prompt_hash]", fields(prompt="abc")) == "ba7816bf"  # FIPS 180-2's sha256("abc")


def test_unknown_tags_bad_arguments_and_unknown_values_stay_as_written():
    assert apply_pattern("[unknown]-[seed]", fields()) == "[unknown]-1234"
    # A1111 writes a tag back without its <arguments>
    assert apply_pattern("[unknown<x>]", fields()) == "[unknown]"
    assert apply_pattern("[seed<3>]", fields()) == "[seed]"  # [seed] takes no argument
    assert apply_pattern("[prompt_hash<abc>]", fields()) == "[prompt_hash]"
    assert apply_pattern("[model_hash]", fields(model_hash=None)) == "[model_hash]"  # not hashed
    assert apply_pattern("[styles]-[user]", fields()) == "[styles]-[user]"  # not known to the service
    assert apply_pattern("no tags at all", fields()) == "no tags at all"
    assert apply_pattern("[[seed]]", fields()) == "[1234]"
    assert apply_pattern("[]", fields()) == "[]"


def test_tags_that_drop_the_text_before_them():
    single = fields(batch_size=1, n_iter=1)
    assert apply_pattern("[seed]-[seed_last]-x", single) == "1234-x"
    assert apply_pattern("a-[batch_number]/b-[generation_number]/c", single) == "/c"
    assert apply_pattern("s[denoising]", single) == ""
    assert apply_pattern("s[denoising]", fields(denoising=0.0)) == ""
    assert apply_pattern("s[denoising]", fields(denoising=0.55)) == "s0.55"


def test_batch_tags_follow_a1111():
    # image 6 (index 5) of a 2 x 3 job: batch 2 of size 3, iteration 2
    image = fields(seed=105, seed_first=100, seed_last=105, batch_size=3, n_iter=2, index=5)
    assert apply_pattern("[seed_first]-[seed_last]", image) == "100-105"
    assert apply_pattern("[batch_number]-[generation_number]-[batch_size]", image) == "3-6-3"
    # batch size 1: seed_first is the image's own seed and seed_last is left out
    alone = fields(seed=7, seed_first=5, seed_last=9, batch_size=1, n_iter=5, index=2)
    assert apply_pattern("[seed_first]_[seed_last]", alone) == "7"
    assert apply_pattern("[generation_number]", alone) == "3"


def test_prompt_words_max_and_empty():
    long = fields(prompt="one, two; three four_five six-seven eight nine ten")
    assert apply_pattern("[prompt_words]", long) == "one two three four five six seven eight"
    assert apply_pattern("[prompt_words]", fields(prompt=long.prompt, max_prompt_words=3)) == "one two three"
    assert apply_pattern("[prompt_words]", fields(prompt="  ,,, ")) == "empty"


def test_prompt_no_styles_cuts_the_style_texts_out():
    styled = fields(prompt="masterpiece, a cat, best quality, dark",
                    style_prompts=("masterpiece, {prompt}, best quality", "dark"))
    assert apply_pattern("[prompt_no_styles]", styled) == "a cat"
    assert apply_pattern("[prompt_no_styles]", fields(prompt="a dog: big")) == "a dog_ big"


def test_sanitising_and_length():
    assert sanitize_filename_part(' <a>:"b"/c\\d|e?f*g#h\ti ') == "__a___b__c_d_e_f_g_h_i_"  # spaces go first
    assert sanitize_filename_part("  lead and trail . . ", replace_spaces=False) == "lead and trail"
    assert sanitize_filename_part("x" * 300) == "x" * 128
    long = "word " * 60
    assert len(apply_pattern("[prompt_spaces]", fields(prompt=long))) <= 128
    assert apply_pattern("[prompt]", fields(prompt="dots...")) == "dots"


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo", "No/Such_Zone"])
def test_datetime_with_time_zone(zone):
    local = WHEN.astimezone()
    wanted = local if zone == "No/Such_Zone" else local.astimezone(zoneinfo.ZoneInfo(zone))
    assert apply_pattern(f"[datetime<%Y-%m-%d %H><{zone}>]", fields()) == wanted.strftime("%Y-%m-%d %H")


# -- what the service knows, gathered per image --------------------------------------------------------

def generated(index: int, seed: int, prompt: str = "a cat <lora:style:0.8>, red") -> GeneratedImage:
    return GeneratedImage(image=Image.new("RGB", (96, 64)), infotext="", index=index, seed=seed, subseed=0,
                          prompt=prompt, negative_prompt="")


def test_name_fields_from_a_request_and_an_image():
    request = Txt2ImgRequest(prompt="a cat <lora:style:0.8>, red", negative_prompt="dog", seed=10, batch_size=2, n_iter=2,
                             steps=9, cfg_scale=6.5, width=64, height=64, sampler_name="DPM++ 2M Karras")
    values = name_fields(generated(3, 13), request, model_name="tiny", model_hash="abcdef0123", clip_skip=2,
                         job_timestamp="20240101000000", max_prompt_words=4)
    pattern = ("[seed]|[seed_first]|[seed_last]|[batch_number]|[generation_number]|[width]x[height]|[steps]|[cfg]|"
               "[sampler_scheduler]|[model_name]|[model_hash]|[clip_skip]|[job_timestamp]|[prompt_spaces]|[denoising]")
    assert apply_pattern(pattern, values) == \
        "13|10|13|2|4|96x64|9|6.5|DPM++ 2M Karras|tiny|abcdef0123|2|20240101000000|a cat , red"
    assert apply_pattern("[full_prompt_hash]", values) == sha("a cat <lora:style:0.8>, red dog")[:8]
    assert apply_pattern("[prompt_words]", values) == "a cat red"
    # a variation seed keeps one seed for the whole job (A1111's all_seeds)
    varied = name_fields(generated(3, 10), Txt2ImgRequest(seed=10, batch_size=2, n_iter=2, subseed_strength=0.5))
    assert apply_pattern("[seed_first]-[seed_last]", varied) == "10-10"


def test_denoising_only_with_hires_or_img2img():
    assert name_fields(generated(0, 1), Txt2ImgRequest(denoising_strength=0.4)).denoising is None
    assert name_fields(generated(0, 1), Txt2ImgRequest(enable_hr=True, denoising_strength=0.4)).denoising == 0.4
    assert name_fields(generated(0, 1), Img2ImgRequest(denoising_strength=0.3)).denoising == 0.3


@pytest.mark.parametrize("sampler, scheduler, expected", [
    ("DPM++ 2M", "Automatic", ("DPM++ 2M", "Karras")),
    ("Euler a", "Automatic", ("Euler a", "Automatic")),
    ("Euler", "SGM Uniform", ("Euler", "Sgm uniform")),  # A1111 str.capitalize()s the label
    ("Euler", "karras", ("Euler", "Karras")),
    ("DPM++ 2M Karras", "Automatic", ("DPM++ 2M", "Karras")),
])
def test_scheduler_text(sampler, scheduler, expected):
    assert sampler_and_scheduler(sampler, scheduler) == expected


def test_vae_filename():
    assert vae_filename(None) == "NoneType"
    assert vae_filename(Path("/m/VAE/vae-ft-mse-840000-ema-pruned.safetensors")) == "vae-ft-mse-840000-ema-pruned"
    assert vae_filename(Path("my.vae.pt")) == "my"
    assert vae_filename(Path(".hidden.pt")) == "hidden"


def test_empty_decoration_gives_just_the_number(tmp_path):
    assert save_image(Image.new("RGB", (8, 8)), tmp_path, apply_pattern("[none]", fields()), None).name == "00000.png"
    assert save_image(Image.new("RGB", (8, 8)), tmp_path, "x", None).name == "00001-x.png"


# -- the service names its files by the settings ----------------------------------------------------------

def test_service_file_and_directory_patterns(service, data_dir, tiny_checkpoint):
    request = Txt2ImgRequest(prompt="a red <mystery:net> fox, snow", negative_prompt="blur", seed=50, batch_size=2,
                             width=64, height=64, steps=2, sampler_name="Euler", scheduler="Karras")
    before = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
    outcome = service.txt2img(request, save_images=True, override_settings={
        "CLIP_stop_at_last_layers": 2,
        "directories_filename_pattern": "[model_name]/[prompt_words]",
        "directories_max_prompt_words": 2,
        "samples_filename_pattern": ("[seed]-[seed_first]-[seed_last]-[batch_number]-[generation_number]-[steps]-"
                                     "[cfg]-[width]x[height]-[sampler_scheduler]-[model_hash]-[clip_skip]-"
                                     "[prompt_hash<6>]-[job_timestamp]-[mystery]"),
        "grid_save": False, "return_grid": False,
    })
    after = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
    short_hash = hashlib.sha256(Path(tiny_checkpoint).read_bytes()).hexdigest()[:10]
    folder = data_dir / "outputs" / "txt2img-images" / "tiny-sd1" / "a red"
    names = [path.relative_to(folder).as_posix() for path in outcome.saved]
    prompt_hash = sha("a red  fox, snow")[:6]  # the tag is parsed out of the prompt, its spaces stay
    for number, (name, seed) in enumerate(zip(names, (50, 51))):
        match = re.fullmatch(rf"(\d{{5}})-{seed}-50-51-{number + 1}-{number + 1}-2-7-64x64-Euler Karras-{short_hash}-2-"
                             rf"{prompt_hash}-(\d{{14}})-\[mystery\]\.png", name)
        assert match, name
        assert int(match.group(1)) == number
        assert before <= match.group(2) <= after
    assert outcome.saved[0].name.split("-")[-2] == outcome.saved[1].name.split("-")[-2]  # one job, one timestamp


def test_empty_directory_pattern_falls_back_to_prompt_words(service, data_dir):
    request = Txt2ImgRequest(prompt="tiny test: picture", seed=3, width=64, height=64, steps=2)
    saved = service.txt2img(request, save_images=True, override_settings={"directories_filename_pattern": ""}).saved[0]
    assert saved.parent == data_dir / "outputs" / "txt2img-images" / "tiny test picture"
    assert saved.name.endswith("-3-tiny test_ picture.png")
