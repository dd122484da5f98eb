"""End to end: the Extras tab of the real server (``webui.py``) in Chromium upscales a picture and
saves it with its ``parameters`` and the ``extras`` text; 📐 / "Send to extras" bring a txt2img
picture or a PNG Info picture there with its parameters; img2img's Interrogate DeepBooru fills the
prompt. One server for the module."""

from __future__ import annotations

import datetime
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from playwright.sync_api import Page, expect

from tests.fixtures.live_server import Server
from tests.test_deepbooru import controlled_model, save_model

pytestmark = pytest.mark.e2e

SOURCE_TEXT = "a lighthouse at dusk\nNegative prompt: fog\nSteps: 3, Sampler: Euler, CFG scale: 5, Seed: 77, Size: 40x24"


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_checkpoint) -> Path:
    folder = tmp_path_factory.mktemp("extras") / "data"
    (folder / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, folder / "models" / "Stable-diffusion" / tiny_checkpoint.name)
    (folder / "models" / "deepbooru").mkdir(parents=True)
    save_model(controlled_model({"1girl": 0.9, "blue_sky": 0.8, "dog": 0.1}),
               folder / "models" / "deepbooru" / "model-resnet_custom_v3.pt")
    return folder


@pytest.fixture(scope="module")
def server(data):
    running = Server(data)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def page(browser, server):
    opened = browser.new_page(viewport={"width": 1400, "height": 1000})
    opened.goto(server.url)
    expect(opened.locator("#txt2img_generate")).to_be_visible(timeout=60_000)
    yield opened
    opened.close()


def source_png(path: Path, text: str = SOURCE_TEXT, size=(40, 24)) -> Path:
    y, x = np.mgrid[0:size[1], 0:size[0]]
    rgb = np.stack([x * 255 // (size[0] - 1), y * 255 // (size[1] - 1), np.full_like(x, 90)], -1).astype(np.uint8)
    info = PngInfo()
    info.add_text("parameters", text)
    Image.fromarray(rgb).save(path, pnginfo=info)
    return path


def extras_files(data: Path) -> set[Path]:
    return set((data / "outputs" / "extras-images").rglob("*.png"))


def upscale_in_extras(page: Page, data: Path, factor: int = 2) -> Image.Image:
    """Upscaler 1 Lanczos, Resize ``factor``, Generate; the one new file the Extras tab saved."""
    before = extras_files(data)
    page.locator("#extras_upscaler_1 input").click()
    page.get_by_role("option", name="Lanczos", exact=True).click()
    expect(page.locator("#extras_upscaler_1 input")).to_have_value("Lanczos")
    resize = page.locator("#extras_upscaling_resize input[type=number]")
    resize.fill(str(factor))
    resize.press("Enter")
    page.click("#extras_generate")
    expect(page.locator("#extras_gallery img").first).to_be_visible(timeout=60_000)
    expect(page.locator("#html_info_x")).to_contain_text(f"Postprocess upscale by: {factor}", timeout=30_000)
    deadline = time.time() + 30
    while not (extras_files(data) - before):
        assert time.time() < deadline, "the Extras tab saved no file"
        time.sleep(0.2)
    (made,) = extras_files(data) - before
    with Image.open(made) as opened:
        opened.load()
        return opened.copy()


def test_extras_upscales_a_picture_and_keeps_its_parameters(page, data, tmp_path):
    picture = source_png(tmp_path / "source.png")
    page.click("#tab_extras-button")
    page.locator("#extras_image input[type=file]").set_input_files(str(picture))
    expect(page.locator("#extras_image img")).to_have_count(1, timeout=30_000)
    made = upscale_in_extras(page, data)
    assert made.size == (80, 48)
    assert made.info["parameters"] == SOURCE_TEXT
    assert "Postprocess upscale by: 2" in made.info["extras"] and "Lanczos" in made.info["extras"]


def test_txt2img_picture_sent_to_extras_keeps_its_parameters(page, data):
    page.fill("#txt2img_prompt textarea", "a red boat")
    for elem_id, value in (("txt2img_width", 64), ("txt2img_height", 64), ("txt2img_steps", 2)):
        field = page.locator(f"#{elem_id} input[type=number]").first
        field.fill(str(value))
        field.press("Enter")
    page.fill("#txt2img_seed input", "4321")
    page.locator("#txt2img_seed input").press("Tab")
    page.click("#txt2img_generate")
    expect(page.locator("#html_info_txt2img .infotext")).to_contain_text("Seed: 4321", timeout=120_000)
    folder = data / "outputs" / "txt2img-images" / datetime.date.today().isoformat()
    (generated,) = folder.glob("*-4321-a red boat.png")
    with Image.open(generated) as opened:
        text = opened.info["parameters"]

    page.click("#txt2img_send_to_extras")
    expect(page.locator("#tab_extras")).to_be_visible(timeout=30_000)
    expect(page.locator("#extras_image img")).to_have_count(1, timeout=30_000)
    made = upscale_in_extras(page, data)
    assert made.size == (128, 128)
    assert made.info["parameters"] == text and "Seed: 4321" in text
    assert "Postprocess upscale by: 2" in made.info["extras"]


def test_png_info_picture_sent_to_extras_keeps_its_parameters(page, data, tmp_path):
    text = "a windmill\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 99, Size: 32x32"
    picture = source_png(tmp_path / "windmill.png", text, size=(32, 32))
    page.click("#tab_pnginfo-button")
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(picture))
    expect(page.locator("#pnginfo_html")).to_contain_text("Seed: 99", timeout=30_000)
    page.click("#pnginfo_send_extras")
    expect(page.locator("#tab_extras")).to_be_visible(timeout=30_000)
    expect(page.locator("#extras_image img")).to_have_count(1, timeout=30_000)
    made = upscale_in_extras(page, data)
    assert made.size == (64, 64) and made.info["parameters"] == text


def test_interrogate_deepbooru_fills_the_img2img_prompt(page, tmp_path):
    picture = source_png(tmp_path / "tagged.png", size=(64, 64))
    page.click("#tab_img2img-button")
    page.locator("#img2img_image input[type=file]").set_input_files(str(picture))
    expect(page.locator("#img2img_image img")).to_have_count(1, timeout=30_000)
    page.click("#deepbooru")
    expect(page.locator("#img2img_prompt textarea")).to_have_value("1girl, blue sky", timeout=60_000)
