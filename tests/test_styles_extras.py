"""Prompt styles, the Extras upscale, the extension listing and all-or-nothing settings updates."""

import json

import pytest
from PIL import Image

from modules.core.generation.request import InvalidRequest
from modules.core.styles import PromptStyle, apply_style_text, apply_styles, read_styles
from modules.service.extensions_list import list_extensions
from modules.service.extras import ExtrasRequest, postprocess
from modules.service.settings import Settings
from modules.service.settings_schema import InvalidSetting

# -- styles.csv ---------------------------------------------------------------------------------------


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_read_styles_with_bom_quotes_and_comments(tmp_path):
    path = write(tmp_path / "styles.csv", (
        "name,prompt,negative_prompt\n"
        'Cinematic, "film still, {prompt}, bokeh", "cartoon, drawing"\n'
        "Plain, red hair, ugly\n"
        "#Disabled,should not appear,x\n"
        ",nameless,y\n"
        "Only prompt,sharp,\n"
    ), encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    styles = read_styles(path)
    assert set(styles) == {"Cinematic", "Plain", "Only prompt"}
    # skipinitialspace: a quoted field after ", " is still read as one quoted field
    assert styles["Cinematic"] == PromptStyle("Cinematic", "film still, {prompt}, bokeh", "cartoon, drawing")
    assert styles["Plain"] == PromptStyle("Plain", "red hair", "ugly")
    assert styles["Only prompt"] == PromptStyle("Only prompt", "sharp", "")


def test_read_styles_without_bom_and_old_two_column_format(tmp_path):
    plain = read_styles(write(tmp_path / "a.csv", "name,prompt,negative_prompt\nA,one,two\n"))
    assert plain == {"A": PromptStyle("A", "one", "two")}
    old = read_styles(write(tmp_path / "old.csv", 'name,text\nVintage,"old photo, sepia"\n'))
    assert old == {"Vintage": PromptStyle("Vintage", "old photo, sepia", "")}


def test_missing_styles_file_is_empty(tmp_path):
    assert read_styles(tmp_path / "nope.csv") == {}


def test_apply_style_text():
    assert apply_style_text("masterpiece, {prompt}, 4k", "a cat") == "masterpiece, a cat, 4k"
    assert apply_style_text("  4k, detailed ", "  a cat ") == "a cat, 4k, detailed"
    assert apply_style_text("4k", "") == "4k"
    assert apply_style_text("4k", "   ") == "4k"
    assert apply_style_text("", "a cat") == "a cat"
    assert apply_style_text("{prompt} twice {prompt}", "x") == "x twice x"


def test_apply_styles_in_order_to_prompt_and_negative():
    first = PromptStyle("first", "{prompt}, high quality", "lowres")
    second = PromptStyle("second", "oil painting", "{prompt}, blurry")
    prompt, negative = apply_styles("a dog", "bad hands", [first, second])
    assert prompt == "a dog, high quality, oil painting"
    assert negative == "bad hands, lowres, blurry"
    reverse = apply_styles("a dog", "", [second, first])
    assert reverse == ("a dog, oil painting, high quality", ", blurry, lowres")
    assert apply_styles("p", "n", []) == ("p", "n")


# -- Extras upscale --------------------------------------------------------------------------------------

COLOUR = (200, 40, 90)


def solid(width, height):
    return Image.new("RGB", (width, height), COLOUR)


def test_scale_by_two_with_lanczos():
    request = ExtrasRequest(resize_mode=0, scale=2, upscaler_1="Lanczos").validate()
    image, info = postprocess(solid(40, 24), request)
    assert image.size == (80, 48)
    assert image.getpixel((40, 24)) == COLOUR
    parts = info.split(", ")
    assert "Postprocess upscale by: 2" in parts
    assert "Postprocess upscaler: Lanczos" in parts


def test_scale_by_rounds_each_side_down_to_a_multiple_of_eight():
    image, _ = postprocess(solid(40, 24), ExtrasRequest(scale=2.5, upscaler_1="Nearest").validate())
    assert image.size == (40 * 5 // 2 // 8 * 8, 24 * 5 // 2 // 8 * 8)  # 100x60 → 96x56


def test_scale_to_size_with_crop_is_exact():
    # 40x24 → factor max(100/40, 66/24) = 2.75 → 110x66 rounded down to 104x64, then cropped to 100x66
    request = ExtrasRequest(resize_mode=1, width=100, height=66, crop=True, upscaler_1="Lanczos").validate()
    image, info = postprocess(solid(40, 24), request)
    assert image.size == (100, 66)
    assert image.getpixel((50, 33)) == COLOUR
    parts = info.split(", ")
    assert "Postprocess upscale to: 100x66" in parts
    assert "Postprocess crop to: 100x66" in parts
    assert "Postprocess upscaler: Lanczos" in parts


def test_scale_to_size_with_crop_unvalidated_small_height():
    # postprocess itself (without validate, which refuses heights under 64) crops to the asked size
    image, info = postprocess(solid(40, 24), ExtrasRequest(resize_mode=1, width=100, height=60, upscaler_1="Lanczos"))
    assert image.size == (100, 60)
    assert image.getpixel((50, 30)) == COLOUR
    assert "Postprocess crop to: 100x60" in info.split(", ")


def test_scale_to_size_without_crop_keeps_the_upscaled_size():
    request = ExtrasRequest(resize_mode=1, width=100, height=66, crop=False, upscaler_1="Lanczos").validate()
    image, info = postprocess(solid(40, 24), request)
    assert image.size == (110 // 8 * 8, 66 // 8 * 8)
    assert "Postprocess crop to" not in info


def test_second_upscaler_is_named_in_info():
    request = ExtrasRequest(scale=2, upscaler_1="Lanczos", upscaler_2="Nearest", upscaler_2_visibility=0.5)
    image, info = postprocess(solid(16, 16), request.validate())
    assert image.size == (32, 32)
    assert "Postprocess upscaler 2: Nearest" in info.split(", ")


@pytest.mark.parametrize("changes, field", [
    ({"upscaler_1": "R-ESRGAN 4x+"}, "upscaler_1"),
    ({"upscaler_2": "SwinIR"}, "upscaler_2"),
    ({"scale": 0.5}, "upscaling_resize"),
    ({"scale": 9}, "upscaling_resize"),
    ({"gfpgan_visibility": 0.5}, "gfpgan_visibility"),
    ({"codeformer_visibility": 1.0}, "codeformer_visibility"),
    ({"resize_mode": 2}, "resize_mode"),
])
def test_validate_names_the_bad_field(changes, field):
    with pytest.raises(InvalidRequest) as caught:
        ExtrasRequest(**changes).validate()
    assert caught.value.field == field
    assert field in str(caught.value)


def test_validate_accepts_the_bounds():
    for scale in (1, 8):
        assert ExtrasRequest(scale=scale).validate().scale == scale


# -- extension folders ------------------------------------------------------------------------------------

HASH = "0123456789abcdef0123456789abcdef01234567"


def fake_git(folder, head, refs=None, packed=None, remote=None):
    git = folder / ".git"
    git.mkdir(parents=True)
    (git / "HEAD").write_text(head + "\n")
    for ref, commit in (refs or {}).items():
        (git / ref).parent.mkdir(parents=True, exist_ok=True)
        (git / ref).write_text(commit + "\n")
    if packed:
        (git / "packed-refs").write_text("# pack-refs with: peeled fully-peeled sorted\n" + packed)
    if remote:
        (git / "config").write_text(f'[core]\n\tbare = false\n[remote "origin"]\n\turl = {remote}\n')


def test_list_extensions(tmp_path):
    folder = tmp_path / "extensions"
    fake_git(folder / "sd-webui-cool", "ref: refs/heads/main", refs={"refs/heads/main": HASH},
             remote="https://example.invalid/x.git")
    (folder / "plain-copy").mkdir()
    fake_git(folder / "detached", HASH[::-1])
    fake_git(folder / "packed", "ref: refs/heads/dev", packed=f"{HASH} refs/heads/dev\n")
    (folder / ".hidden").mkdir()
    (folder / "notes.txt").write_text("not an extension")
    found = list_extensions((tmp_path / "missing", folder))
    by_name = {entry["name"]: entry for entry in found}
    assert set(by_name) == {"sd-webui-cool", "plain-copy", "detached", "packed"}
    cool = by_name["sd-webui-cool"]
    assert (cool["remote"], cool["branch"], cool["commit_hash"], cool["version"]) == (
        "https://example.invalid/x.git", "main", HASH, HASH[:8])
    assert isinstance(cool["commit_date"], int)
    plain = by_name["plain-copy"]
    assert (plain["remote"], plain["branch"], plain["commit_hash"], plain["version"]) == ("", "", "", "")
    assert by_name["detached"]["commit_hash"] == HASH[::-1] and by_name["detached"]["branch"] == ""
    assert by_name["packed"]["commit_hash"] == HASH and by_name["packed"]["branch"] == "dev"


def test_list_extensions_of_missing_folders_is_empty(tmp_path):
    assert list_extensions((tmp_path / "a", tmp_path / "b")) == []


# -- Settings.update ---------------------------------------------------------------------------------------


def test_update_is_all_or_nothing(tmp_path):
    path = tmp_path / "config.json"
    settings = Settings(path)
    before = settings.data()
    with pytest.raises(InvalidSetting) as caught:
        settings.update({"queue_limit": 5, "CLIP_stop_at_last_layers": 99})
    assert caught.value.field == "CLIP_stop_at_last_layers"
    assert settings.data() == before
    assert settings.get("queue_limit") == before["queue_limit"]
    assert not path.exists()

    settings.set("queue_limit", 7)
    written = path.read_bytes()
    with pytest.raises(InvalidSetting):
        settings.update({"CLIP_stop_at_last_layers": 2, "queue_limit": "many"})
    assert settings.get("CLIP_stop_at_last_layers") == before["CLIP_stop_at_last_layers"]
    assert settings.get("queue_limit") == 7
    assert path.read_bytes() == written


def test_valid_update_persists(tmp_path):
    path = tmp_path / "config.json"
    settings = Settings(path)
    settings.update({"queue_limit": 12, "CLIP_stop_at_last_layers": 2, "some_extension_key": [1, 2]})
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert stored["queue_limit"] == 12
    assert stored["CLIP_stop_at_last_layers"] == 2
    assert stored["some_extension_key"] == [1, 2]
    reloaded = Settings(path)
    assert reloaded.get("queue_limit") == 12 and reloaded.get("CLIP_stop_at_last_layers") == 2
