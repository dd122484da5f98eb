"""Infotext build/parse (a1111-compat.md §3) and its image containers (§3.1, §12)."""

from __future__ import annotations

import io
import random
import struct

import pytest
from PIL import Image

from modules.core.infotext import (
    IMAGE_SIZE_RE,
    INFOTEXT_KEY_ORDER,
    build_infotext,
    order_params,
    parse_infotext,
    quote,
    split_legacy_sampler,
)
from modules.core.png_meta import pnginfo_for, read_infotext

# §3.7, first example, with the abridged middle ("… ") of its negative prompt left out.
V1101_TXT2IMG = (
    "(8k, RAW photo, highest quality), hyperrealistic, Photo of a traditional young-age romanian man,"
    " highly detailed, cinematic, film grain, action-themed\n"
    "Negative prompt: ((censored) ), ((Asian) ), ((bad anatomy) ), bad hands, three hands,"
    " ((malformed feet) ), ((malformed foot) ), ((deformed iris, deformed pupils) )\n"
    "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1170634956, Size: 640x896,"
    " Model hash: 92970aa785, Model: dreamlike-photoreal-2.0, Version: 1.10.1"
)

# §3.7, second example (pre-1.9: the schedule is part of the sampler name).
V170_HIRES_LORA = (
    "A woman wearing an ais-metal bikini, standing on a tropical beach <lora:Metallic_Iridescence_SDXL:0.5>\n"
    "Steps: 42, Sampler: DPM++ 3M SDE Karras, CFG scale: 6, Seed: 1922608063, Size: 768x1024,"
    " Model hash: a928fee35b, Model: albedobaseXL_v20-mid_140737-vid_281176, Denoising strength: 0.7,"
    " Hires upscale: 2, Hires steps: 21, Hires upscaler: R-ESRGAN 4x+,"
    ' Lora hashes: "Metallic_Iridescence_SDXL: faec5ae5859d", Version: v1.7.0'
)

# §3.7, third example, exactly as printed.
V1101_INPAINT = (
    "a cat wearing a (red:1.2) hat\n"
    "Negative prompt: easynegative\n"
    "Steps: 30, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 42, Size: 512x512,"
    " Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44,"
    " VAE: vae-ft-mse-840000-ema-pruned.safetensors, Variation seed: 1234, Variation seed strength: 0.3,"
    " Denoising strength: 0.75, Clip skip: 2, ENSD: 31337, Mask blur: 4, Inpaint area: Only masked,"
    ' Masked area padding: 32, TI hashes: "easynegative: c74b4e810b03", Version: v1.10.1'
)


# --------------------------------------------------------------------------- published examples

def test_build_v1101_txt2img_example_byte_for_byte():
    prompt, negative, _ = V1101_TXT2IMG.split("\n")
    fixed = {
        "Steps": 25, "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": 7, "Seed": 1170634956,
        "Size": "640x896", "Model hash": "92970aa785", "Model": "dreamlike-photoreal-2.0",
        "Clip skip": None, "VAE": None,
    }
    params = order_params(fixed, {}, "1.10.1")
    text = build_infotext(prompt, negative.removeprefix("Negative prompt: "), params)
    assert text == V1101_TXT2IMG


def test_build_v1101_inpaint_example_byte_for_byte():
    fixed = {
        "Steps": 30, "Sampler": "Euler a", "Schedule type": "Automatic", "CFG scale": 7, "Seed": 42,
        "Size": "512x512", "Model hash": "6ce0161689", "Model": "v1-5-pruned-emaonly",
        "VAE hash": "735e4c3a44", "VAE": "vae-ft-mse-840000-ema-pruned.safetensors",
        "Variation seed": 1234, "Variation seed strength": 0.3, "Clip skip": 2, "ENSD": 31337,
    }
    # "Denoising strength" arrives among the extras (as in A1111) yet is written at its fixed place.
    extra = {
        "Mask blur": 4, "Inpaint area": "Only masked", "Masked area padding": 32,
        "TI hashes": "easynegative: c74b4e810b03", "Denoising strength": 0.75,
    }
    params = order_params(fixed, extra, "v1.10.1")
    assert build_infotext("a cat wearing a (red:1.2) hat", "easynegative", params) == V1101_INPAINT


def test_parse_pre19_example_splits_sampler_and_unquotes():
    res = parse_infotext(V170_HIRES_LORA)
    assert res["Prompt"] == V170_HIRES_LORA.split("\n")[0]
    assert res["Negative prompt"] == ""
    assert res["Sampler"] == "DPM++ 3M SDE"
    assert res["Schedule type"] == "Karras"
    assert res["Hires upscale"] == "2"
    assert res["Hires steps"] == "21"
    assert res["Hires upscaler"] == "R-ESRGAN 4x+"
    assert res["Lora hashes"] == "Metallic_Iridescence_SDXL: faec5ae5859d"
    assert (res["Size-1"], res["Size-2"]) == ("768", "1024")
    assert "Size" not in res  # A1111 replaces a WxH key by its two halves
    assert res["Version"] == "v1.7.0"
    assert res["Clip skip"] == "1"
    assert (res["Hires resize-1"], res["Hires resize-2"]) == (0, 0)
    assert "Emphasis" not in res


def test_parse_v1101_inpaint_example():
    res = parse_infotext(V1101_INPAINT)
    assert res["Prompt"] == "a cat wearing a (red:1.2) hat"
    assert res["Negative prompt"] == "easynegative"
    assert res["Schedule type"] == "Automatic"
    assert res["Variation seed strength"] == "0.3"
    assert res["Clip skip"] == "2"
    assert res["ENSD"] == "31337"
    assert res["Masked area padding"] == "32"  # read from the text: a string, not the default int
    assert res["TI hashes"] == "easynegative: c74b4e810b03"
    assert res["Emphasis"] == "Original"  # the prompt uses a weight and the text names no mode


# --------------------------------------------------------------------------------- round trip

ROUND_TRIP_KEYS = [k for k in INFOTEXT_KEY_ORDER if k != "Sampler"] + [
    "Hires prompt", "Hires negative prompt", "Hires upscaler", "Lora hashes", "TI hashes", "Mask blur",
    "Eta", "Noise multiplier", "Refiner", "Some extension/key-1", "Version",
]
ATOMS = ["cat", "a", "8k", "猫", "がんばって", "é", "ü", "🙂", "(red:1.2)", "[dog]", "<lora:x:0.5>",
         ",", ":", '"', "\\", "\\n", "\t", "{", "}", "x", "Steps: 20", "Negative prompt:", "BREAK"]


def random_text(rng: random.Random, max_lines: int) -> str:
    lines = []
    for _ in range(rng.randint(1, max_lines)):
        words = [rng.choice(ATOMS) for _ in range(rng.randint(0, 6))]
        lines.append("".join(w + rng.choice(["", " ", ", "]) for w in words).strip())
    # The format cannot carry whitespace at line ends or a line that starts with the negative
    # prefix (A1111 strips and splits on those); every other text must survive.
    return "\n".join(line for line in lines if not line.startswith("Negative prompt:")).strip()


def random_value(rng: random.Random, key: str) -> object:
    kind = rng.choice(["int", "float", "bool", "text", "text"])
    if kind == "int":
        return rng.randint(-5, 2**32)
    if kind == "float":
        return rng.choice([7.0, 0.3, 1e-05, -2.5, rng.random()])
    if kind == "bool":
        return rng.choice([True, False])
    while True:
        value = rng.choice([" ", "", '"']) + random_text(rng, 2) + rng.choice(["", " ", '"', "\n"])
        # Not representable: empty values are dropped, a value equal to its key is written as the
        # bare key, and WxH values come back as Key-1/Key-2 (tested separately).
        if value and value != key and not IMAGE_SIZE_RE.match(value):
            return value


@pytest.mark.parametrize("seed", range(300))
def test_round_trip(seed):
    rng = random.Random(seed)
    prompt = random_text(rng, 4)
    negative = random_text(rng, 3) if rng.random() < 0.7 else ""
    keys = rng.sample(ROUND_TRIP_KEYS, rng.randint(3, 12))
    params = {key: random_value(rng, key) for key in keys}

    res = parse_infotext(build_infotext(prompt, negative, params))

    assert res["Prompt"] == prompt
    assert res["Negative prompt"] == negative
    for key, value in params.items():
        assert res[key] == str(value), key


def test_round_trip_of_awkward_values():
    params = {
        "Steps": 20,
        "Hires prompt": 'a "quoted" word',
        "Lora hashes": 'x: 1, y: 2',
        "Refiner": '"starts with a quote',
        "TI hashes": '"fully quoted"',
        "Hires negative prompt": "  padded  ",
        "Hires upscaler": "line one\nline two",
        "Eta": "back\\slash",
        "Version": " trailing ",
    }
    res = parse_infotext(build_infotext("p", "", params))
    for key, value in params.items():
        assert res[key] == str(value), key


def test_round_trip_of_sizes():
    params = {"Steps": 20, "Size": "512x768", "Hires resize": "1024x1536", "Seed resize from": "64x64"}
    res = parse_infotext(build_infotext("p", "n", params))
    assert (res["Size-1"], res["Size-2"]) == ("512", "768")
    assert (res["Hires resize-1"], res["Hires resize-2"]) == ("1024", "1536")
    assert (res["Seed resize from-1"], res["Seed resize from-2"]) == ("64", "64")
    assert "Size" not in res


# ------------------------------------------------------------------------------ build details

@pytest.mark.parametrize("value, written", [
    (7, "7"), (7.0, "7.0"), (0.3, "0.3"), (True, "True"), ("Euler a", "Euler a"),
    ("a, b", '"a, b"'), ("a: b", '"a: b"'), ("a\nb", '"a\\nb"'), ("猫, 犬", '"猫, 犬"'),
    ('say "hi"', 'say "hi"'),  # A1111 writes this raw, and the regex reads it back
    ('"hi"', '"\\"hi\\""'), (" x", '" x"'), ("x ", '"x "'), ("", ""),
])
def test_quote(value, written):
    assert quote(value) == written


def test_build_layout_rules():
    params = {"Steps": 20, "Tiling": "Tiling", "Clip skip": None, "CFG scale": 7.0}
    assert build_infotext("a cat", "", params) == "a cat\nSteps: 20, Tiling, CFG scale: 7.0"
    assert build_infotext("a\nb", "c\nd", {"Steps": 1}) == "a\nb\nNegative prompt: c\nd\nSteps: 1"
    assert build_infotext("", "neg", {"Steps": 1, "Seed": 2, "Size": "8x8"}) == (
        "Negative prompt: neg\nSteps: 1, Seed: 2, Size: 8x8")


def test_order_params():
    fixed = {"Seed": 1, "Steps": 20, "Clip skip": None, "Sampler": "Euler"}
    extra = {"Hires upscale": 2, "Clip skip": 2, "Mask blur": None, "Eta": 0.5}
    ordered = order_params(fixed, extra, "v1.10.1")
    assert list(ordered.items()) == [
        ("Steps", 20), ("Sampler", "Euler"), ("Seed", 1), ("Clip skip", 2),
        ("Hires upscale", 2), ("Eta", 0.5), ("Version", "v1.10.1"),
    ]
    assert "Version" not in order_params({"Steps": 1}, {}, None)
    with pytest.raises(ValueError, match="Hires upscale"):
        order_params({"Hires upscale": 2}, {}, None)


# ------------------------------------------------------------------------------ parse details

def test_last_line_with_fewer_than_three_params_is_prompt_text():
    res = parse_infotext("a cat\nSteps: 20, Sampler: Euler")
    assert res["Prompt"] == "a cat\nSteps: 20, Sampler: Euler"
    assert "Steps" not in res and "Sampler" not in res
    assert parse_infotext("a cat\nSteps: 20, Sampler: Euler, Seed: 1")["Prompt"] == "a cat"


def test_negative_prompt_detection():
    res = parse_infotext("a cat, Negative prompt: dog\nSteps: 1, Seed: 2, CFG scale: 3")
    assert (res["Prompt"], res["Negative prompt"]) == ("a cat, Negative prompt: dog", "")

    res = parse_infotext("a\nNegative prompt:b\nc\n  Negative prompt:  d  \nSteps: 1, Seed: 2, CFG scale: 3")
    # No space needed after the colon, and, as in A1111, a later line starting with the prefix loses it.
    assert (res["Prompt"], res["Negative prompt"]) == ("a", "b\nc\nd")

    res = parse_infotext("  a  \n b \nSteps: 1, Seed: 2, CFG scale: 3  \n\n")
    assert (res["Prompt"], res["Negative prompt"], res["CFG scale"]) == ("a\nb", "", "3")


def test_values_that_are_not_json_stay_as_written():
    res = parse_infotext('p\nSteps: 1, Model: "bad \\x escape", Seed: 3, Empty: , Lone: "')
    assert res["Model"] == '"bad \\x escape"'
    assert res["Lone"] == '"'
    assert "Empty" not in res  # A1111 drops empty values


@pytest.mark.parametrize("legacy, sampler, schedule", [
    ("DPM++ 2M Karras", "DPM++ 2M", "Karras"),
    ("DPM++ 2M SDE Exponential", "DPM++ 2M SDE", "Exponential"),
    ("Euler SGMUniform", "Euler", "SGM Uniform"),
    ("Euler SGM Uniform", "Euler", "SGM Uniform"),
    ("Euler Uniform", "Euler", "Uniform"),
    ("DPM++ 2M Polyexponential", "DPM++ 2M", "Polyexponential"),
    ("Euler Align Your Steps", "Euler", "Align Your Steps"),
    ("DPM++ 2M kl_optimal", "DPM++ 2M", "KL Optimal"),
    ("Euler Simple", "Euler", "Simple"), ("Euler Normal", "Euler", "Normal"),
    ("Euler DDIM", "Euler", "DDIM"), ("Euler Beta", "Euler", "Beta"),
    ("DDIM", "DDIM", None), ("DDIM CFG++", "DDIM CFG++", None), ("Euler a", "Euler a", None),
    ("DPM++ 2M SDE Heun", "DPM++ 2M SDE Heun", None),
])
def test_split_legacy_sampler(legacy, sampler, schedule):
    assert split_legacy_sampler(legacy) == (sampler, schedule)


def test_legacy_sampler_names_in_infotext():
    res = parse_infotext("p\nSteps: 1, Sampler: Euler a, Hires sampler: DPM++ SDE Karras, Seed: 1")
    assert (res["Sampler"], res["Schedule type"]) == ("Euler a", "Automatic")
    assert (res["Hires sampler"], res["Hires schedule type"]) == ("DPM++ SDE", "Karras")


def test_legacy_hypernet_goes_into_the_prompt():
    res = parse_infotext("a cat\nSteps: 1, Hypernet: anime, Hypernet strength: 0.5, Seed: 1")
    assert res["Prompt"] == "a cat<hypernet:anime:0.5>"
    res = parse_infotext("a cat\nSteps: 1, Hypernet: anime, Seed: 1")
    assert res["Prompt"] == "a cat<hypernet:anime:1.0>"


def test_defaults_for_missing_keys():
    res = parse_infotext("a cat\nSteps: 1, Seed: 2, CFG scale: 3")
    assert {k: res[k] for k in ("Clip skip", "Hires resize-1", "Hires resize-2", "Hires sampler",
                                "Hires schedule type", "Hires checkpoint", "Hires prompt",
                                "Hires negative prompt", "Mask mode", "Masked content", "Inpaint area",
                                "Masked area padding", "RNG", "Schedule type", "Schedule max sigma",
                                "Schedule min sigma", "Schedule rho", "VAE Encoder", "VAE Decoder",
                                "FP8 weight", "Refiner switch by sampling steps")} == {
        "Clip skip": "1", "Hires resize-1": 0, "Hires resize-2": 0, "Hires sampler": "Use same sampler",
        "Hires schedule type": "Use same scheduler", "Hires checkpoint": "Use same checkpoint",
        "Hires prompt": "", "Hires negative prompt": "", "Mask mode": "Inpaint masked",
        "Masked content": "original", "Inpaint area": "Whole picture", "Masked area padding": 32,
        "RNG": "GPU", "Schedule type": "Automatic", "Schedule max sigma": 0, "Schedule min sigma": 0,
        "Schedule rho": 0, "VAE Encoder": "Full", "VAE Decoder": "Full", "FP8 weight": "Disable",
        "Refiner switch by sampling steps": False,
    }
    assert "Cache FP16 weight for LoRA" not in res and "Emphasis" not in res

    res = parse_infotext("a\nSteps: 1, FP8 weight: Enable for SDXL, Seed: 2")
    assert res["Cache FP16 weight for LoRA"] is False
    res = parse_infotext("a\nSteps: 1, Emphasis: No norm, Seed: 2")
    assert res["Emphasis"] == "No norm"


@pytest.mark.parametrize("prompt, negative, emphasis", [
    ("a (cat)", "", True), ("a cat", "[dog]", True), ("a (cat:1.3)", "", True), ("a (cat", "", True),
    ("a cat", "", False), ("a (cat:1.0)", "", False), ("a \\(cat\\)", "", False),
    ("a BREAK b", "", False), ("a (cat:.)", "", False),
])
def test_emphasis_default_only_when_weights_are_used(prompt, negative, emphasis):
    text = build_infotext(prompt, negative, {"Steps": 1, "Seed": 2, "CFG scale": 3})
    assert ("Emphasis" in parse_infotext(text)) is emphasis


def test_parse_is_total():
    rng = random.Random(1234)
    alphabet = 'ab :,"\\\n()[]x0123456789-/Negative prompt:Steps'
    samples = ["", "\n", '"', 'a: "', 'a: "\\', "Steps: 1, a: 2, b: 3, Hypernet: x",
               'K: "\\ud800", L: 1, M: 2', "(a:1.2.3) (b:+)\nSteps: 1, a: 2, b: 3"]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(500)]
    for text in samples:
        res = parse_infotext(text)
        assert isinstance(res["Prompt"], str) and isinstance(res["Negative prompt"], str)


# ------------------------------------------------------------------------------ image containers

def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def save_png(text: str, extra=None) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "PNG", pnginfo=pnginfo_for(text, extra or {}))
    return buf.getvalue()


@pytest.mark.parametrize("text, chunk_type", [
    (V1101_INPAINT, b"tEXt"),
    ("café, crème brûlée\nSteps: 1, Seed: 2, CFG scale: 3", b"tEXt"),  # Latin-1 still fits tEXt
    ("猫が帽子をかぶっている\nNegative prompt: 低品質\nSteps: 20, Seed: 1, CFG scale: 7", b"iTXt"),
])
def test_png_parameters_chunk(text, chunk_type):
    data = save_png(text, {"extras": "Postprocess upscaler: None"})
    chunks = png_chunks(data)
    types = [t for t, _ in chunks]
    assert types[0] == b"IHDR" and types[1] == chunk_type  # first chunk after IHDR, before IDAT
    assert chunks[1][1].startswith(b"parameters\0")
    if chunk_type == b"iTXt":  # keyword, compression flag 0 (uncompressed), method, language, key
        assert chunks[1][1].startswith(b"parameters\0\0\0\0\0")
    assert types.index(chunk_type) < types.index(b"IDAT")
    assert b"eXIf" not in types

    parameters, others = read_infotext(Image.open(io.BytesIO(data)))
    assert parameters == text
    assert others == {"extras": "Postprocess upscaler: None"}


def test_pnginfo_extra_cannot_replace_parameters():
    data = save_png("real", {"parameters": "fake", "Software": "Hanga"})
    parameters, others = read_infotext(Image.open(io.BytesIO(data)))
    assert (parameters, others) == ("real", {"Software": "Hanga"})


def user_comment_exif(comment: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = comment
    return exif


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_exif_user_comment_unicode_read_back(fmt):
    text = "猫, a (cat:1.2)\nNegative prompt: 犬\nSteps: 20, Seed: 1, CFG scale: 7"
    buf = io.BytesIO()
    exif = user_comment_exif(b"UNICODE\0" + text.encode("utf-16-be"))
    Image.new("RGB", (8, 8)).save(buf, fmt, exif=exif)
    parameters, _ = read_infotext(Image.open(io.BytesIO(buf.getvalue())))
    assert parameters == text
    assert parse_infotext(parameters)["Negative prompt"] == "犬"


def test_exif_user_comment_ascii_and_unknown_prefix():
    for comment, expected in [(b"ASCII\0\0\0a cat", "a cat"), (b"a cat, plain utf-8 \xc3\xa9", "a cat, plain utf-8 é")]:
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, "JPEG", exif=user_comment_exif(comment))
        assert read_infotext(Image.open(io.BytesIO(buf.getvalue())))[0] == expected


def test_exif_user_comment_overrides_png_parameters():
    buf = io.BytesIO()
    # As bytes: Pillow skips an Exif object whose top-level IFD is empty when writing a PNG.
    exif = user_comment_exif(b"UNICODE\0" + "from exif".encode("utf-16-be")).tobytes()
    Image.new("RGB", (8, 8)).save(buf, "PNG", pnginfo=pnginfo_for("from chunk"), exif=exif)
    assert read_infotext(Image.open(io.BytesIO(buf.getvalue())))[0] == "from exif"


def test_gif_comment_is_the_fallback():
    buf = io.BytesIO()
    Image.new("P", (8, 8)).save(buf, "GIF", comment="a cat\nSteps: 1, Seed: 2, CFG scale: 3")
    assert read_infotext(Image.open(io.BytesIO(buf.getvalue())))[0] == "a cat\nSteps: 1, Seed: 2, CFG scale: 3"


def test_image_without_infotext():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG", dpi=(72, 72))
    assert read_infotext(Image.open(io.BytesIO(buf.getvalue()))) == (None, {})
