"""Saved pictures in A1111's formats (a1111-compat.md §3.1, §9.2, §12): PNG text chunk, JPEG/WebP with
the infotext as EXIF UserComment = b"UNICODE\\0" + UTF-16BE, save_txt, and reading them back.

The EXIF checks walk the JPEG segments / WebP chunks and the TIFF directory with a small parser of
their own, so they do not lean on the code (or the Pillow calls) that wrote the files."""

from __future__ import annotations

import base64
import csv
import io
import struct

import numpy as np
import pytest
from PIL import Image

from modules.core.generation.request import Txt2ImgRequest
from modules.core.images import OutputFormat, save_grid, save_image
from modules.core.png_meta import decode_user_comment, pnginfo_for, read_infotext
from modules.core.styles import PromptStyle, read_styles, write_styles
from modules.service.settings_schema import SCHEMA, InvalidSetting

INFOTEXT = ('a "cat", wearing a hat: ünïcödé 日本語 🐱\nNegative prompt: dog\n'
            'Steps: 2, Sampler: Euler, Schedule type: Automatic, CFG scale: 7, Seed: 5, Size: 64x64')


def expected_comment(text: str) -> bytes:
    return b"UNICODE\x00" + text.encode("utf-16-be")  # §12.4, spelled out


# -- an independent EXIF reader ----------------------------------------------------------------------

def tiff_entries(tiff: bytes, offset: int, order: str) -> dict[int, tuple[int, int, bytes]]:
    """tag → (type, count, raw value bytes) of the IFD at ``offset``."""
    sizes = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 9: 4, 10: 8}
    (count,) = struct.unpack(order + "H", tiff[offset:offset + 2])
    entries = {}
    for k in range(count):
        at = offset + 2 + 12 * k
        tag, typ, n = struct.unpack(order + "HHI", tiff[at:at + 8])
        length = sizes[typ] * n
        if length <= 4:
            raw = tiff[at + 8:at + 8 + length]
        else:
            (pointer,) = struct.unpack(order + "I", tiff[at + 8:at + 12])
            raw = tiff[pointer:pointer + length]
        entries[tag] = (typ, n, raw)
    return entries


def user_comment_in(tiff: bytes) -> tuple[int, bytes]:
    """(TIFF type, bytes) of the Exif IFD's UserComment."""
    order = {b"MM": ">", b"II": "<"}[tiff[:2]]
    assert struct.unpack(order + "H", tiff[2:4])[0] == 42
    (ifd0,) = struct.unpack(order + "I", tiff[4:8])
    typ, _, raw = tiff_entries(tiff, ifd0, order)[0x8769]
    assert typ == 4  # LONG pointer
    (exif_ifd,) = struct.unpack(order + "I", raw)
    typ, count, comment = tiff_entries(tiff, exif_ifd, order)[0x9286]
    assert len(comment) == count
    return typ, comment


def jpeg_exif(data: bytes) -> bytes:
    assert data[:2] == b"\xff\xd8"
    at = 2
    while data[at] == 0xFF and data[at + 1] != 0xDA:  # up to start-of-scan
        marker = data[at + 1]
        (length,) = struct.unpack(">H", data[at + 2:at + 4])
        body = data[at + 4:at + 2 + length]
        if marker == 0xE1 and body.startswith(b"Exif\x00\x00"):
            return body[6:]
        at += 2 + length
    raise AssertionError("no EXIF APP1 segment")


def webp_exif(data: bytes) -> bytes:
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    at = 12
    while at < len(data):
        kind = data[at:at + 4]
        (size,) = struct.unpack("<I", data[at + 4:at + 8])
        if kind == b"EXIF":
            body = data[at + 8:at + 8 + size]
            return body[6:] if body.startswith(b"Exif\x00\x00") else body
        at += 8 + size + (size & 1)
    raise AssertionError("no EXIF chunk")


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, chunks = 8, []
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind = data[at + 4:at + 8]
        chunks.append((kind, data[at + 8:at + 8 + length]))
        at += 12 + length
    return chunks


def picture(mode: str = "RGB", size=(40, 24)) -> Image.Image:
    rng = np.random.default_rng(0)
    channels = len(mode)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8), mode)


# -- JPEG and WebP -----------------------------------------------------------------------------------

@pytest.mark.parametrize("extension, reader", [("jpg", jpeg_exif), ("jpeg", jpeg_exif), ("webp", webp_exif)])
def test_jpeg_and_webp_carry_the_infotext_as_unicode_user_comment(tmp_path, extension, reader):
    path = save_image(picture(), tmp_path, "5-a cat", INFOTEXT, OutputFormat(extension))
    assert path.name == f"00000-5-a cat.{extension}"
    data = path.read_bytes()
    typ, comment = user_comment_in(reader(data))
    assert typ == 7  # UNDEFINED, as EXIF (and piexif, which A1111 uses) has it
    assert comment == expected_comment(INFOTEXT)
    with Image.open(path) as opened:
        assert opened.format == {"jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}[extension]
        assert read_infotext(opened)[0] == INFOTEXT
        # Pillow's own EXIF reader finds the same bytes
        assert opened.getexif().get_ifd(0x8769)[0x9286] == expected_comment(INFOTEXT)
    assert not path.with_suffix(".txt").exists()


def test_enable_pnginfo_off_writes_no_exif(tmp_path):
    path = save_image(picture(), tmp_path, "x", INFOTEXT, OutputFormat("jpg", embed_infotext=False))
    with Image.open(path) as opened:
        assert "exif" not in opened.info and read_infotext(opened)[0] is None


def test_jpeg_quality_and_pixels(tmp_path):
    source = picture()
    for quality in (15, 95):
        path = save_image(source, tmp_path, f"q{quality}", INFOTEXT, OutputFormat("jpg", jpeg_quality=quality))
        plain = io.BytesIO()
        source.save(plain, "JPEG", quality=quality)  # the EXIF block does not change the coded picture
        with Image.open(path) as ours, Image.open(plain) as theirs:
            assert np.array_equal(np.asarray(ours), np.asarray(theirs))
    low, high = (np.asarray(Image.open(next(tmp_path.glob(f"*-q{q}.jpg")))) for q in (15, 95))
    assert not np.array_equal(low, high)


def test_webp_lossless_keeps_every_pixel(tmp_path):
    source = picture()
    lossy = save_image(source, tmp_path, "lossy", INFOTEXT, OutputFormat("webp"))
    lossless = save_image(source, tmp_path, "lossless", INFOTEXT, OutputFormat("webp", webp_lossless=True))
    with Image.open(lossless) as exact, Image.open(lossy) as rough:
        assert np.array_equal(np.asarray(exact.convert("RGB")), np.asarray(source))
        assert not np.array_equal(np.asarray(rough.convert("RGB")), np.asarray(source))
        assert read_infotext(exact)[0] == INFOTEXT


@pytest.mark.parametrize("extension", ["jpg", "webp"])
def test_rgba_is_converted_to_rgb(tmp_path, extension):
    source = picture("RGBA")
    path = save_image(source, tmp_path, "alpha", INFOTEXT, OutputFormat(extension, webp_lossless=True))
    with Image.open(path) as opened:
        assert opened.mode == "RGB"
        if extension == "webp":  # lossless: exactly the colour channels
            assert np.array_equal(np.asarray(opened), np.asarray(source)[..., :3])


@pytest.mark.parametrize("extension, size", [("webp", (16384, 1)), ("jpg", (65536, 1))])
def test_too_large_for_the_format_is_saved_as_png(tmp_path, extension, size):
    path = save_image(Image.new("RGB", size), tmp_path, "wide", INFOTEXT, OutputFormat(extension))
    assert path.suffix == ".png"
    with Image.open(path) as opened:
        assert opened.format == "PNG" and opened.info["parameters"] == INFOTEXT


def test_grid_in_grid_format(tmp_path):
    first = save_grid(picture(), tmp_path, "grid", INFOTEXT, OutputFormat("webp"))
    second = save_grid(picture(), tmp_path, "grid", None, OutputFormat("jpg"))
    assert (first.name, second.name) == ("grid-0000.webp", "grid-0001.jpg")
    assert user_comment_in(webp_exif(first.read_bytes()))[1] == expected_comment(INFOTEXT)
    with Image.open(second) as opened:
        assert "exif" not in opened.info


# -- reading other writers' EXIF -----------------------------------------------------------------------

def hand_made_exif(comment: bytes, order: str) -> bytes:
    """A minimal TIFF with IFD0 → Exif IFD → UserComment, in either byte order."""
    tag = b"MM\x00\x2a" if order == ">" else b"II\x2a\x00"
    ifd0 = struct.pack(order + "HHHII", 1, 0x8769, 4, 1, 26) + b"\0\0\0\0"
    exif = struct.pack(order + "HHHII", 1, 0x9286, 7, len(comment), 44) + b"\0\0\0\0"
    return b"Exif\x00\x00" + tag + struct.pack(order + "I", 8) + ifd0 + exif + comment


@pytest.mark.parametrize("comment, text", [
    (b"UNICODE\x00" + "héllo, 日本".encode("utf-16-be"), "héllo, 日本"),
    (b"UNICODE\x00\xfe\xff" + "héllo, 日本".encode("utf-16-be"), "héllo, 日本"),
    (b"UNICODE\x00\xff\xfe" + "héllo, 日本".encode("utf-16-le"), "héllo, 日本"),
    (b"ASCII\x00\x00\x00" + b"hello, ascii", "hello, ascii"),
])
@pytest.mark.parametrize("order", [">", "<"])
@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_reads_user_comments_of_either_byte_order_and_with_a_bom(comment, text, order, fmt):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, fmt, exif=hand_made_exif(comment, order))
    buffer.seek(0)
    with Image.open(buffer) as opened:
        assert read_infotext(opened)[0] == text


def test_decode_user_comment_rules():
    assert decode_user_comment(b"UNICODE\x00" + "a\nb".encode("utf-16-be")) == "a\nb"
    assert decode_user_comment(b"UNICODE\x00\xff\xfe" + "日".encode("utf-16-le")) == "日"
    assert decode_user_comment(b"UNICODE\x00\xfe\xff" + "日".encode("utf-16-be")) == "日"
    assert decode_user_comment(b"JIS\x00\x00\x00\x00\x00" + "日本".encode("shift_jis")) == "日本"
    # unknown prefix: the whole field as UTF-8, errors ignored (A1111's fallback)
    assert decode_user_comment("plain é".encode("utf-8") + b"\xff") == "plain é"


# -- PNG stays as it was ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, chunk", [("Latin-1 only: café\nSteps: 2", b"tEXt"), (INFOTEXT, b"iTXt")])
def test_png_is_byte_identical_to_a_plain_pillow_save_with_the_text_chunk_first(tmp_path, text, chunk):
    source = picture()
    path = save_image(source, tmp_path, "5-a cat", text, OutputFormat("png"))
    reference = io.BytesIO()
    source.save(reference, "PNG", pnginfo=pnginfo_for(text))
    assert path.read_bytes() == reference.getvalue()
    chunks = png_chunks(path.read_bytes())
    assert [kind for kind, _ in chunks[:2]] == [b"IHDR", chunk]
    if chunk == b"tEXt":
        assert chunks[1][1] == b"parameters\x00" + text.encode("latin-1")
    else:  # keyword, no compression (flag 0, method 0), empty language and translated keyword, UTF-8
        assert chunks[1][1] == b"parameters\x00\x00\x00\x00\x00" + text.encode("utf-8")
    assert all(kind != b"eXIf" for kind, _ in chunks)
    assert [kind for kind, _ in chunks].index(b"IDAT") > 1


def test_png_with_pnginfo_off_has_no_text(tmp_path):
    path = save_image(picture(), tmp_path, "", INFOTEXT, OutputFormat("png", embed_infotext=False))
    assert path.name == "00000.png"
    assert not [kind for kind, _ in png_chunks(path.read_bytes()) if kind in (b"tEXt", b"iTXt", b"zTXt")]


# -- save_txt ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extension", ["png", "jpg", "webp"])
def test_save_txt_writes_the_infotext_beside_the_picture(tmp_path, extension):
    path = save_image(picture(), tmp_path, "7-a.b cat", INFOTEXT, OutputFormat(extension, save_txt=True))
    text_file = tmp_path / "00000-7-a.b cat.txt"
    assert path.name == f"00000-7-a.b cat.{extension}"
    assert text_file.read_bytes() == (INFOTEXT + "\n").encode("utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, text_file.name])  # no temp files left


def test_save_txt_without_infotext_writes_nothing(tmp_path):
    save_grid(picture(), tmp_path, "grid", None, OutputFormat("png", save_txt=True))
    assert [p.name for p in tmp_path.iterdir()] == ["grid-0000.png"]


# -- styles.csv (§3.6) ---------------------------------------------------------------------------------

def test_write_styles_bytes_bom_header_and_quoting(tmp_path):
    path = tmp_path / "styles.csv"
    write_styles(path, [PromptStyle("Cinematic", "cinematic, {prompt}", 'blurry, "bad"'), PromptStyle("Plain", "x", "")])
    assert path.read_bytes() == (
        "\ufeffname,prompt,negative_prompt\r\n"
        'Cinematic,"cinematic, {prompt}","blurry, ""bad"""\r\n'
        "Plain,x,\r\n"
    ).encode("utf-8")
    assert not (tmp_path / "styles.csv.bak").exists()  # nothing to keep the first time


def test_styles_round_trip_and_backup(tmp_path):
    path = tmp_path / "styles.csv"
    original = ('\ufeffname,prompt,negative_prompt\n'
                'Old,"photo of {prompt}, 35mm","cartoon, ""drawing"""\n'
                '"Two\nlines","first line\nsecond, line",\n'
                '# comment,ignored,row\n'
                'Ünïcödé,日本語 {prompt},ノイズ\n').encode("utf-8")
    path.write_bytes(original)
    styles = read_styles(path)
    assert list(styles) == ["Old", "Two\nlines", "Ünïcödé"]
    assert styles["Two\nlines"].prompt == "first line\nsecond, line"
    write_styles(path, styles)
    assert (tmp_path / "styles.csv.bak").read_bytes() == original
    assert read_styles(path) == styles
    with open(path, encoding="utf-8-sig", newline="") as handle:  # what A1111 reads it with
        rows = list(csv.DictReader(handle, skipinitialspace=True))
    assert [(row["name"], row["prompt"], row["negative_prompt"]) for row in rows] == \
        [(s.name, s.prompt, s.negative_prompt) for s in styles.values()]
    written = path.read_bytes()
    write_styles(path, {**styles, "New": PromptStyle("New", "n", "m")})
    assert (tmp_path / "styles.csv.bak").read_bytes() == written  # the .bak is always the previous file
    assert list(read_styles(path)) == [*styles, "New"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["styles.csv", "styles.csv.bak"]


# -- settings --------------------------------------------------------------------------------------------

def test_output_settings_as_a1111_declares_them():
    by_key = {setting.key: setting for setting in SCHEMA}
    expected = {
        "samples_format": ("png", "File format for images", "saving-images"),
        "grid_format": ("png", "File format for grids", "saving-images"),
        "jpeg_quality": (80, "Quality for saved jpeg images", "saving-images"),
        "webp_lossless": (False, "Use lossless compression for webp images", "saving-images"),
        "save_txt": (False, "Create a text file next to every image with generation parameters.", "saving-images"),
        "directories_max_prompt_words": (8, "Max prompt words for [prompt_words] pattern", "saving-to-dirs"),
    }
    for key, (default, label, section) in expected.items():
        setting = by_key[key]
        assert (setting.default, setting.label, setting.section) == (default, label, section)
    for key in ("samples_format", "grid_format"):
        for value in ("png", "jpg", "jpeg", "webp"):
            assert by_key[key].validate(value) == value
        with pytest.raises(InvalidSetting):
            by_key[key].validate("gif")
    assert by_key["jpeg_quality"].validate(1) == 1 and by_key["jpeg_quality"].validate(100) == 100
    for bad in (0, 101):
        with pytest.raises(InvalidSetting):
            by_key["jpeg_quality"].validate(bad)


# -- through the generation service and the API -------------------------------------------------------------

SMALL = dict(width=64, height=64, steps=2)


@pytest.mark.parametrize("extension", ["jpg", "webp"])
def test_service_saves_jpeg_and_webp_whose_infotext_reads_back(service, extension):
    request = Txt2ImgRequest(prompt="a photo of a cat, ünïcödé", negative_prompt="dog: ugly", seed=42, batch_size=2,
                             **SMALL)
    outcome = service.txt2img(request, save_images=True, override_settings={
        "samples_format": extension, "grid_format": extension, "save_txt": True})
    infotexts = outcome.result.infotexts
    grid, *samples = outcome.saved
    assert len(samples) == 2 and grid.name == f"grid-0000.{extension}"
    for path, infotext in zip(samples, infotexts):
        assert path.suffix == f".{extension}"
        assert user_comment_in((jpeg_exif if extension == "jpg" else webp_exif)(path.read_bytes()))[1] \
            == expected_comment(infotext)
        with Image.open(path) as opened:
            assert read_infotext(opened)[0] == infotext
        assert path.with_suffix(".txt").read_text(encoding="utf-8") == infotext + "\n"
    with Image.open(grid) as opened:
        assert read_infotext(opened)[0] == infotexts[0]
    # the settings were for this job only: the next one is PNG again, without a .txt
    again = service.txt2img(Txt2ImgRequest(prompt="x", seed=1, **SMALL), save_images=True).saved[0]
    assert again.suffix == ".png" and not again.with_suffix(".txt").exists()


def test_api_png_info_reads_jpeg_and_webp(service, data_dir, tmp_path):
    import webui
    from fastapi.testclient import TestClient

    from modules.core.flags import parse_flags
    from modules.ui.server import build_app

    outcome = service.txt2img(Txt2ImgRequest(prompt="api, round trip", seed=8, **SMALL), save_images=True,
                              override_settings={"samples_format": "webp"})
    webp = outcome.saved[0]
    infotext = outcome.result.infotexts[0]
    jpeg = save_image(outcome.result.images[0].image, tmp_path, "x", infotext, OutputFormat("jpg"))
    flags = parse_flags(["--api", "--data-dir", str(data_dir), "--skip-torch-cuda-test", "--use-cpu", "all"])
    client = TestClient(build_app(webui.create_service(flags), flags))
    for file in (webp, jpeg):
        payload = base64.b64encode(file.read_bytes()).decode()
        info = client.post("/sdapi/v1/png-info", json={"image": payload}).json()
        assert info["info"] == infotext
        assert info["parameters"]["Prompt"] == "api, round trip" and info["parameters"]["Seed"] == "8"
