"""Infotext round trip over a corpus of A1111-style infotexts (a1111-compat.md §3).

The corpus, ``tests/data/infotext_corpus.txt``, holds whole infotexts as A1111 v1.x, Forge or Hanga
write them. Its header describes the format. For each entry these tests check:

* ``build_infotext(*split_infotext(text)) == text``, byte for byte;
* ``parse_infotext`` agrees with ``split_infotext``, except where A1111's parser itself changes a
  value: ``WxH`` sizes, legacy sampler names, ``Hypernet``, the version back-compat flags, and the
  defaults for missing keys;
* splitting what ``build_infotext`` wrote gives the same result again, and editing one value
  changes only that value's bytes.

Targeted tests then check some entries against values written out by hand. They find an entry by a
substring unique to it, never by its position.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modules.core.infotext import build_infotext, parse_infotext, quote, split_infotext

CORPUS_PATH = Path(__file__).parent / "data" / "infotext_corpus.txt"
SEPARATOR_RE = re.compile(r"===== ([a-z0-9][a-z0-9._-]*)")

# Keys that parse_infotext may add although the text lacks them (a1111-compat.md §3.5).
DEFAULT_KEYS = {
    "Clip skip", "Hires resize-1", "Hires resize-2", "Hires sampler", "Hires schedule type",
    "Hires checkpoint", "Hires prompt", "Hires negative prompt", "Mask mode", "Masked content",
    "Inpaint area", "Masked area padding", "RNG", "Schedule type", "Schedule max sigma",
    "Schedule min sigma", "Schedule rho", "VAE Encoder", "VAE Decoder", "FP8 weight",
    "Cache FP16 weight for LoRA", "Emphasis", "Refiner switch by sampling steps",
}
# Keys that Version back-compat sets to True (§3.5).
BACKCOMPAT_FLAGS = {
    "Old prompt editing timelines", "Pad conds v0", "Downcast alphas_cumprod",
    "Refiner switch by sampling steps",
}
SCHEDULE_KEY = {"Sampler": "Schedule type", "Hires sampler": "Hires schedule type"}
SIZE_RE = re.compile(r"(\d+)x(\d+)")


def load_corpus(path: Path) -> dict[str, str]:
    """Entry id → infotext. Lines before the first separator are the header."""
    data = path.read_text(encoding="utf-8")
    assert "\r" not in data, "the corpus uses \\n line breaks only"
    assert data.endswith("\n")
    entries: dict[str, list[str]] = {}
    current = None
    # split("\n"), not splitlines(): splitlines also breaks at U+2028, U+001C and others.
    for line in data[:-1].split("\n"):
        if line.startswith("====="):
            match = SEPARATOR_RE.fullmatch(line)
            assert match, f"bad separator line: {line!r}"
            current = match.group(1)
            assert current not in entries, f"duplicate id {current}"
            entries[current] = []
        elif current is not None:
            entries[current].append(line)
    return {name: "\n".join(lines) for name, lines in entries.items()}


CORPUS = load_corpus(CORPUS_PATH)
NAMES = list(CORPUS)


def entry(substring: str) -> str:
    """The one corpus entry that contains ``substring``."""
    found = [text for text in CORPUS.values() if substring in text]
    assert len(found) == 1, f"{len(found)} entries contain {substring!r}"
    return found[0]


# ----------------------------------------------------------------------------------- the corpus

def test_corpus_size():
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("name", NAMES)
def test_entry_is_well_formed(name):
    text = CORPUS[name]
    assert text == text.strip(), "A1111 strips the whole infotext"
    for line in text.split("\n"):
        assert line == line.rstrip(), f"A1111's reader strips every line: {line!r}"
    assert len(split_infotext(text)[2]) >= 3, "the last line must be read as the parameter line"


# ----------------------------------------------------------------------------------- round trip

@pytest.mark.parametrize("name", NAMES)
def test_round_trip_is_byte_exact(name):
    text = CORPUS[name]
    assert build_infotext(*split_infotext(text)) == text


@pytest.mark.parametrize("name", NAMES)
def test_split_of_built_text_is_stable(name):
    text = CORPUS[name]
    split = split_infotext(text)
    rebuilt = build_infotext(*split)
    assert split_infotext(rebuilt) == split
    assert parse_infotext(rebuilt) == parse_infotext(text)


@pytest.mark.parametrize("name", NAMES)
def test_editing_one_value_changes_only_its_bytes(name):
    text = CORPUS[name]
    prompt, negative, pairs = split_infotext(text)
    base = build_infotext(prompt, negative, pairs)
    edited = build_infotext(prompt, negative, {**pairs, "Seed": "7", "Steps": "a, b"})
    head, _, param_line = base.rpartition("\n")
    param_line = param_line.replace(f"Seed: {pairs['Seed']}", "Seed: 7", 1)
    param_line = param_line.replace(f"Steps: {pairs['Steps']}", 'Steps: "a, b"', 1)
    assert edited == (f"{head}\n{param_line}" if head else param_line)


# ------------------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("name", NAMES)
def test_parse_agrees_with_split(name):
    text = CORPUS[name]
    prompt, negative, pairs = split_infotext(text)
    res = parse_infotext(text)

    if "Hypernet" in pairs:  # A1111 turns the legacy key into a prompt tag
        prompt += f"<hypernet:{pairs['Hypernet']}:{pairs.get('Hypernet strength', '1.0')}>"
    assert res["Prompt"] == prompt
    assert res["Negative prompt"] == negative

    split_samplers = {key for key in SCHEDULE_KEY if key in pairs and res[key] != pairs[key]}
    expected_keys = {"Prompt", "Negative prompt"}
    for key, value in pairs.items():
        size = SIZE_RE.fullmatch(value) if isinstance(value, str) else None
        if size:
            expected_keys |= {f"{key}-1", f"{key}-2"}
            assert key not in res
            if key == "Size" and "First pass size" in pairs:
                continue  # A1111 rewrites Size from the pre-1.0 hires fix fields
            assert (res[f"{key}-1"], res[f"{key}-2"]) == size.groups(), key
            continue
        expected_keys.add(key)
        if key in split_samplers:
            # legacy "DPM++ 2M Karras": the sampler and the schedule label, joined by a space
            assert f"{res[key]} {res[SCHEDULE_KEY[key]]}" == value, key
        elif key in BACKCOMPAT_FLAGS:
            assert res[key] in (value, True), key
        elif key in {SCHEDULE_KEY[k] for k in split_samplers}:
            continue  # the schedule inside a legacy sampler name wins
        else:
            assert res[key] == value, key
    invented = set(res) - expected_keys - DEFAULT_KEYS - BACKCOMPAT_FLAGS
    assert not invented


@pytest.mark.parametrize("name", NAMES)
def test_missing_keys_get_defaults(name):
    _, _, pairs = split_infotext(CORPUS[name])
    res = parse_infotext(CORPUS[name])
    assert res["Clip skip"] == pairs.get("Clip skip", "1")
    assert res["RNG"] == pairs.get("RNG", "GPU")
    if "Schedule type" not in pairs and res["Sampler"] == pairs.get("Sampler"):
        assert res["Schedule type"] == "Automatic"
    if "Hires resize" not in pairs and "First pass size" not in pairs:  # that one is converted (test_hires)
        assert (res["Hires resize-1"], res["Hires resize-2"]) == (0, 0)
    assert res["Masked content"] == pairs.get("Masked content", "original")
    assert res["Inpaint area"] == pairs.get("Inpaint area", "Whole picture")


@pytest.mark.parametrize("substring, key, sampler, schedule", [
    ("Seed: 651296780", "Sampler", "DPM++ 2M", "Karras"),
    ("Seed: 1593064427", "Sampler", "DPM++ SDE", "Karras"),
    ("Seed: 2069142931", "Sampler", "DPM++ 2M SDE", "Exponential"),
    ("Seed: 1922608063", "Sampler", "DPM++ 3M SDE", "Karras"),
    ("Seed: 1471853203", "Sampler", "DPM++ 2M SDE", "Karras"),  # Forge 1
    ("Seed: 801283746", "Sampler", "DPM++ 2M", "Karras"),  # Dec 2022, no Version
    ("Seed: 1203948576", "Hires sampler", "DPM++ 2M SDE", "Karras"),
    ("Seed: 1203948576", "Sampler", "Euler a", "Automatic"),
    ("Sampler: k_euler_a", "Sampler", "k_euler_a", "Automatic"),  # an alias, no schedule in it
    ("Seed: 1638472190", "Sampler", "DPM++ 2M SDE Heun", "Exponential"),  # "Heun" is no schedule
    ("Seed: 2460711905", "Sampler", "DPM++ 2M", "Align Your Steps"),
    ("Seed: 2026598317", "Hires sampler", "DPM++ 2M", "Karras"),
])
def test_sampler_and_schedule(substring, key, sampler, schedule):
    res = parse_infotext(entry(substring))
    assert (res[key], res[SCHEDULE_KEY[key]]) == (sampler, schedule)


FLAGS_OFF = {"Old prompt editing timelines": None, "Pad conds v0": None, "Downcast alphas_cumprod": None,
             "Refiner switch by sampling steps": False}


@pytest.mark.parametrize("substring, flags", [
    # v1.5.1, "[knight:robot:0.4]" in the prompt
    ("Seed: 1593064427", {"Old prompt editing timelines": True, "Downcast alphas_cumprod": True}),
    # v1.3.2 DDIM, no "[" in the prompt
    ("Sampler: DDIM", {"Pad conds v0": True, "Downcast alphas_cumprod": True}),
    # v1.4.1 PLMS, "[dog|cat]"
    ("Sampler: PLMS", {"Old prompt editing timelines": True, "Pad conds v0": True,
                       "Downcast alphas_cumprod": True}),
    # API alias "k_euler_a" is not DDIM/PLMS; no "[": only the v1.7 flag
    ("Sampler: k_euler_a", {"Downcast alphas_cumprod": True}),
    # v1.6.0 with "[": the old timelines ended in 1.6.0
    ("Seed: 3331270457", {"Downcast alphas_cumprod": True}),
    # "v1.6.0-RC-28-g…" reads as 1.6.0rc0, before 1.6.0 (as in A1111, which uses the same parse)
    ("v1.6.0-RC-28-gd8b5d3b2", {"Old prompt editing timelines": True, "Downcast alphas_cumprod": True}),
    # v1.7.0 release and dev build 133: before v1.7.0-225
    ("Seed: 1922608063", {"Downcast alphas_cumprod": True}),
    ("v1.7.0-133-gde03882d", {"Downcast alphas_cumprod": True}),
    # dev build 375 is past v1.7.0-225 but before 1.8.0, and uses a refiner
    ("v1.7.0-375-gf92d6149", {"Refiner switch by sampling steps": True}),
    ("Version: 1.8.0-RC", {}),
    ("Seed: 651296780", {}),  # v1.8.0
    ("Seed: 2812034563", {}),  # v1.10.1 with a refiner
    ("Seed: 2460711905", {}),  # v1.10.1, "[neon rain:acid rain:0.4]"
    ("Seed: 1471853203", {}),  # Forge "f0.0.17v1.8.0rc-…", "[witch hat:wizard hat:0.3]"
    ("Seed: 3566210984", {}),  # the same Forge version with a refiner
    ("f2.0.1v1.10.1-previous-669-gdfdcbab6", {}),  # Forge 2
    ("Version: hanga-0.1.0", {}),  # Hanga's own version, "[stormy sea:calm sea:0.6]"
    ("Seed: 2847381290", {}),  # Nov 2022: no Version at all
])
def test_version_backcompat(substring, flags):
    res = parse_infotext(entry(substring))
    assert {key: res.get(key) for key in FLAGS_OFF} == {**FLAGS_OFF, **flags}


def test_backcompat_can_be_turned_off():
    res = parse_infotext(entry("Seed: 1593064427"), backcompat=False)
    assert "Old prompt editing timelines" not in res and "Downcast alphas_cumprod" not in res


def test_written_downcast_flag_is_kept_as_written():
    res = parse_infotext(entry("Noise Schedule: Zero Terminal SNR"))
    assert res["Downcast alphas_cumprod"] == "True"  # v1.10.1: from the text, no back-compat
    assert res["Noise Schedule"] == "Zero Terminal SNR"


def test_defaults_for_an_entry_without_clip_skip():
    res = parse_infotext(entry("Seed: 3456789012"))
    assert "Clip skip" not in split_infotext(entry("Seed: 3456789012"))[2]
    assert res["Clip skip"] == "1"
    assert res["RNG"] == "GPU"
    assert (res["Hires resize-1"], res["Hires resize-2"]) == (0, 0)
    assert res["Hires sampler"] == "Use same sampler"
    assert res["Masked area padding"] == 32
    assert "Emphasis" not in res  # no weights in the prompt
    assert (res["Variation seed"], res["Variation seed strength"]) == ("1234567890", "0.15")
    assert (res["Seed resize from-1"], res["Seed resize from-2"]) == ("512", "512")


def test_written_values_beat_defaults():
    res = parse_infotext(entry("Seed: 2147483647"))
    assert (res["Clip skip"], res["RNG"], res["Pad conds"]) == ("2", "CPU", "True")
    res = parse_infotext(entry("Seed: 3184721903"))
    assert (res["RNG"], res["ENSD"]) == ("NV", "31337")
    res = parse_infotext(entry("Seed: 2602481937"))
    assert (res["Masked content"], res["Inpaint area"], res["Masked area padding"]) == (
        "fill", "Only masked", "64")
    assert (res["Mask mode"], res["Mask blur"], res["Conditional mask weight"]) == (
        "Inpaint not masked", "8", "1.0")


def test_emphasis_default_only_without_a_written_mode():
    assert parse_infotext(entry("Seed: 1170634956"))["Emphasis"] == "Original"  # weights, no key
    assert parse_infotext(entry("Seed: 3942791127"))["Emphasis"] == "No norm"


def test_unicode_survives():
    text = entry("Seed: 1096512445")
    res = parse_infotext(text)
    assert res["Prompt"] == (
        "桜の木の下で眠る猫, 浮世絵風, (夕焼け:1.2), 🌸🐱✨, café au lait fur,"
        " crème brûlée colours, Ærøskøbing harbour in the background <lora:浮世絵スタイル_v2:0.7>")
    assert res["Negative prompt"] == "低品質, ぼやけた, ウォーターマーク, 🙅\u200d♀\ufe0f, naïve"
    assert res["Lora hashes"] == "浮世絵スタイル_v2: 5e2a8cfd0b1c"
    assert build_infotext(*split_infotext(text)).encode("utf-8") == text.encode("utf-8")
    assert parse_infotext(entry("Seed: 3120045873"))["Model"] == "墨幽人造人_v1080"


def test_multiline_prompts_and_blank_lines():
    res = parse_infotext(entry("Seed: 2209857326"))
    assert res["Prompt"] == (
        "masterpiece, best quality, scenery, mountain lake, reflections\n\npine trees, morning fog, sunrise,\n")
    assert res["Negative prompt"] == "lowres, blurry,\n"
    res = parse_infotext(entry("Seed: 3918327164"))
    assert res["Negative prompt"] == (
        "worst quality, low quality, normal quality,\nblurry, out of focus, jpeg artifacts,\n"
        "text, watermark, signature, logo")
    res = parse_infotext(entry("Seed: 1283749102"))
    assert res["Prompt"].count("BREAK\n") == 2 and res["RP Ratios"] == "1,1"


def test_empty_prompts():
    res = parse_infotext(entry("Seed: 1598745,"))
    assert (res["Prompt"], res["Negative prompt"]) == ("", "blurry, lowres, jpeg artifacts")
    res = parse_infotext(entry("Seed: 2375118492"))
    assert (res["Prompt"], res["Negative prompt"]) == ("", "")
    assert res["SD upscale upscaler"] == "4x-UltraSharp"


def test_quoted_and_unquoted_values():
    res = parse_infotext(entry("Seed: 2718281828"))
    assert res["Hires prompt"].startswith("hatsune miku \\(cosplay\\), \\(smile\\), (masterpiece:1.2)")
    assert res["Lora hashes"] == "add_detail: 7c6bad76eb54, miku_outfit_v3: 3fa0b6e2c871"
    res = parse_infotext(entry("Seed: 1029384756"))
    assert res["Hires prompt"] == (
        'photo of a french bulldog wearing a red hoodie that says "BIG MIKE" in white letters')
    assert res["Hires upscaler"] == "Latent"
    res = parse_infotext(entry("Seed: 3120045873"))
    assert res["ADetailer prompt"] == 'detailed face, smiling, "happy" expression'
    assert res["ADetailer negative prompt"] == "blurry, deformed"
    res = parse_infotext(entry("Seed: 2026598317"))
    assert res["Hires prompt"] == (
        "1girl, solo, red kimono, festival, night, fireworks,\n"
        "paper lanterns, looking back, smile, (detailed eyes:1.1)")
    assert res["Hires checkpoint"] == "animagineXLV31_v31 [e3c47aedb0]"
    assert (res["Hires upscale"], res["Hires steps"]) == ("1.5", "20")
    res = parse_infotext(entry("Seed: 3310927465"))
    assert res["Hires negative prompt"] == "blurry\ncartoon\nlowres"  # quoted for the line breaks alone
    assert res["Prompt"] == "photo of a red fox in the snow\nclose-up"
    assert res["Negative prompt"] == "blurry\ncartoon"
    res = parse_infotext(entry("Seed: 1180249561"))
    assert res["Template"] == (
        "a {red|blue|green} sports car parked in __cities__, night, rain, neon reflections")
    res = parse_infotext(entry("Seed: 3057196542"))
    assert res["ControlNet 0"].startswith(
        "Module: depth_midas, Model: control_v11f1p_sd15_depth [cfd03158], Weight: 0.8, ")
    res = parse_infotext(entry("Seed: 3942791127"))
    assert (res["Hires resize-1"], res["Hires resize-2"]) == ("1024", "1536")
    assert res["TI hashes"] == "EasyNegative: c74b4e810b03, bad-hands-5: aa7651be154c"


def test_legacy_entries_without_version():
    res = parse_infotext(entry("Seed: 2847381290"))
    assert res["Prompt"].endswith("indoors, sunlight<hypernet:aini:0.8>")
    assert (res["Model hash"], res["Clip skip"], res["ENSD"]) == ("925997e9", "2", "31337")
    res = parse_infotext(entry("Seed: 2539108421"))
    assert (res["Face restoration"], res["Model hash"], res["Batch pos"]) == ("GFPGAN", "7460a6fa", "1")
    assert "Model" not in res and "Version" not in res
    res = parse_infotext(entry("Seed: 1938472615"))
    assert res["AddNet Model 1"] == "koreanDollLikeness_v10(a8a2ff8bc5b5)"


def test_keys_after_version_are_read():
    res = parse_infotext(entry("Seed: 1826378263"))
    assert (res["Version"], res["Module 3"], res["Distilled CFG Scale"]) == (
        "f2.0.1v1.10.1-previous-669-gdfdcbab6", "t5xxl_fp16", "3.5")
    assert parse_infotext(entry("User: alice"))["User"] == "alice"


def test_bare_json_object_value_is_read_whole():
    # A1111 writes an extension's dict value as a bare JSON object. A1111's own regex stops it at the
    # first comma; we read the whole object back (decoded), so the round trip is exact, and the
    # keys inside the object are not mistaken for pairs.
    res = parse_infotext(entry("Tiled Diffusion: {"))
    assert res["Tiled Diffusion"] == {
        "Method": "MultiDiffusion", "Tile tile width": 96, "Tile tile height": 96, "Tile Overlap": 48,
        "Tile batch size": 4, "Upscaler": "4x-UltraSharp", "Upscale factor": 2, "Keep input size": True,
    }
    assert "Tile tile width" not in res and "Method" not in res
    assert (res["Lora hashes"], res["Version"]) == ("more_details: 3b8aa1d351ef", "v1.9.4")


def test_dict_values_are_written_as_a1111_writes_them():
    value = {"Method": "MultiDiffusion", "Keep input size": True}
    assert quote(value) == '{"Method": "MultiDiffusion", "Keep input size": true}'
    assert quote({"a": 1}) == '{"a": 1}' and quote(["x", "y"]) == '["x", "y"]'
    text = build_infotext("a", "", {"Steps": 20, "Seed": 1, "Tiled Diffusion": value, "CFG scale": 7})
    assert split_infotext(text)[2]["Tiled Diffusion"] == value
    # not JSON after all: read as A1111 reads it, up to the comma
    broken = "a\nSteps: 20, Odd: {not json, Seed: 1, CFG scale: 7"
    assert split_infotext(broken)[2] == {"Steps": "20", "Odd": "{not json", "Seed": "1", "CFG scale": "7"}


# ------------------------------------------------------------- texts A1111 writes but reads lossily

@pytest.mark.parametrize("text, prompt, negative", [
    # Whitespace at line ends and after the prefix: A1111 writes it, its reader strips it.
    ("a cat, \nblue sky \nNegative prompt:  blurry, \nlowres\nSteps: 20, Seed: 1, CFG scale: 7",
     "a cat,\nblue sky", "blurry,\nlowres"),
    ("a cat\nNegative prompt: \tblurry\t\nSteps: 20, Seed: 1, CFG scale: 7", "a cat", "blurry"),
])
def test_whitespace_at_line_ends_is_lost_but_stable(text, prompt, negative):
    split = split_infotext(text)
    assert split[:2] == (prompt, negative)
    assert split_infotext(build_infotext(*split)) == split


def test_negative_prompt_starting_with_a_newline_round_trips():
    # The user began the negative prompt with a line break. A1111 writes "Negative prompt: " and then
    # that line break, so the line ends in a space. The round trip gives the same bytes back.
    text = "a cat\nNegative prompt: \nblurry, lowres\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1"
    assert split_infotext(text)[:2] == ("a cat", "\nblurry, lowres")
    assert build_infotext(*split_infotext(text)) == text
