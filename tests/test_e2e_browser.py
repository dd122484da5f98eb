"""End to end: start the real server (``webui.py``) on a free loopback port with a user's A1111
flags, generate in Chromium, and check the PNG on disk, the API and the PNG Info tab."""

from __future__ import annotations

import base64
import datetime
import io
import json
import re
import threading
import shutil
import time
import urllib.request
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from modules.core.hashing import file_sha256
from modules.core.infotext import parse_infotext
from tests.fixtures.live_server import Server as LiveServer

pytestmark = pytest.mark.e2e

# Flags from a typical A1111 webui-user.sh; most are not implemented yet and must not stop start-up.
A1111_FLAGS = ["--xformers", "--medvram", "--no-half-vae", "--opt-sdp-attention", "--enable-insecure-extension-access",
               "--theme", "dark", "--some-extension-flag"]


def Server(data_dir: Path, *flags: str) -> LiveServer:  # noqa: N802 - reads as the class it builds
    """The real server started with a typical A1111 user's COMMANDLINE_ARGS."""
    return LiveServer(data_dir, *flags, commandline_args=tuple(A1111_FLAGS))


def set_number(page: Page, elem_id: str, value: int) -> None:
    field = page.locator(f"#{elem_id} input[type=number]").first
    field.fill(str(value))
    field.press("Enter")


def generate(page: Page, expected_file: Path, steps: int = 6) -> str:
    """Click Generate and wait until the image is on disk and its infotext is shown."""
    page.click("#txt2img_generate")
    deadline = time.time() + 120
    while not expected_file.exists():
        assert time.time() < deadline, f"{expected_file} was not written"
        time.sleep(0.2)
    info = page.locator("#html_info_txt2img .infotext")
    expect(info).to_contain_text(f"Steps: {steps}", timeout=30_000)
    return info.inner_text()


def test_generate_in_browser_writes_png_with_infotext(tmp_path, tiny_checkpoint, browser):
    data = tmp_path / "data"
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    checkpoint = data / "models" / "Stable-diffusion" / "tiny-sd1.safetensors"
    shutil.copy(tiny_checkpoint, checkpoint)
    server = Server(data, "--api")
    try:
        page = browser.new_page()
        page.goto(server.url)
        page.fill("#txt2img_prompt textarea", "a photo of a cat")
        page.fill("#txt2img_neg_prompt textarea", "blurry, ugly")
        for elem_id, value in (("txt2img_width", 64), ("txt2img_height", 64), ("txt2img_steps", 6)):
            set_number(page, elem_id, value)
        page.fill("#txt2img_seed input", "1234")
        page.locator("#txt2img_seed input").press("Tab")
        folder = data / "outputs" / "txt2img-images" / datetime.date.today().isoformat()
        first = folder / "00000-1234-a photo of a cat.png"
        shown = generate(page, first)
        with Image.open(first) as image:
            text = image.info["parameters"]
            first_pixels = np.asarray(image.convert("RGB"))
        params = parse_infotext(text)
        assert params["Prompt"] == "a photo of a cat" and params["Negative prompt"] == "blurry, ugly"
        assert (params["Steps"], params["Sampler"], params["CFG scale"], params["Seed"]) == ("6", "DPM++ 2M", "7", "1234")
        assert (params["Size-1"], params["Size-2"]) == ("64", "64")
        assert params["Model hash"] == file_sha256(checkpoint)[:10] and params["Model"] == "tiny-sd1"
        assert shown.replace("\n", "") == text.replace("\n", "")

        second = folder / "00001-1234-a photo of a cat.png"
        generate(page, second)  # the same request again: bit-identical pixels, next file number
        with Image.open(second) as image:
            assert np.array_equal(np.asarray(image.convert("RGB")), first_pixels)
            assert image.info["parameters"] == text

        body = {"prompt": "a photo of a cat", "negative_prompt": "blurry, ugly", "steps": 6, "sampler_name": "DPM++ 2M",
                "cfg_scale": 7.0, "width": 64, "height": 64, "seed": 1234}
        request = urllib.request.Request(server.url + "/sdapi/v1/txt2img", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            reply = json.load(response)
        with Image.open(io.BytesIO(base64.b64decode(reply["images"][0]))) as from_api:
            assert from_api.info["parameters"] == text
            assert np.array_equal(np.asarray(from_api.convert("RGB")), first_pixels)

        seed_field = page.locator("#txt2img_seed input")
        page.click("#txt2img_random_seed")
        expect(seed_field).to_have_value("-1")
        page.click("#txt2img_reuse_seed")
        expect(seed_field).to_have_value("1234")

        # PNG Info → Send to txt2img puts the image's parameters back into the form
        page.fill("#txt2img_prompt textarea", "something else")
        set_number(page, "txt2img_steps", 9)
        page.click("#txt2img_random_seed")
        page.click("#tab_pnginfo-button")
        page.locator("#pnginfo_image input[type=file]").set_input_files(str(first))
        expect(page.locator("#pnginfo_html")).to_contain_text("Steps: 6, Sampler: DPM++ 2M", timeout=30_000)
        page.click("#pnginfo_send_txt2img")
        expect(page.locator("#txt2img_prompt textarea")).to_have_value("a photo of a cat", timeout=30_000)
        expect(page.locator("#txt2img_neg_prompt textarea")).to_have_value("blurry, ugly")
        expect(page.locator("#txt2img_steps input[type=number]")).to_have_value("6")
        expect(seed_field).to_have_value("1234")

        # ↙ reads an infotext typed into the prompt box, settings keys become override entries,
        # and the next image is made with them
        pasted = ("a watercolor fox\nNegative prompt: text\nSteps: 5, Sampler: Euler a Karras, CFG scale: 6.5, "
                  "Seed: 42, Size: 64x72, Clip skip: 2, ENSD: 31337")
        page.fill("#txt2img_prompt textarea", pasted)
        page.click("#txt2img_paste")
        expect(page.locator("#txt2img_prompt textarea")).to_have_value("a watercolor fox", timeout=30_000)
        expect(page.locator("#txt2img_neg_prompt textarea")).to_have_value("text")
        expect(page.locator("#txt2img_steps input[type=number]")).to_have_value("5")
        expect(page.locator("#txt2img_height input[type=number]")).to_have_value("72")
        expect(page.locator("#txt2img_sampling input")).to_have_value("Euler a")
        expect(page.locator("#txt2img_scheduler input")).to_have_value("Karras")
        expect(seed_field).to_have_value("42")
        overrides = page.locator("#txt2img_override_settings")
        expect(overrides).to_contain_text("Clip skip: 2")
        expect(overrides).to_contain_text("ENSD: 31337")
        made = generate(page, folder / "00002-42-a watercolor fox.png", steps=5)  # the API saved nothing
        made_params = parse_infotext(made.replace("\n", ""))
        assert (made_params["Sampler"], made_params["Schedule type"], made_params["Size-2"]) == ("Euler a", "Karras", "72")
        assert (made_params["Clip skip"], made_params["ENSD"], made_params["CFG scale"]) == ("2", "31337", "6.5")
    finally:
        server.stop()
    log = server.log.read_text()
    assert "not supported yet: --theme" in log
    assert "xformers was asked for but it is not installed" in log  # --xformers acts: a clear fallback
    assert "ignoring unknown command-line arguments: --some-extension-flag" in log


def test_without_checkpoint_the_ui_says_where_to_put_one(tmp_path, browser):
    data = tmp_path / "empty"
    server = Server(data)
    try:
        page = browser.new_page()
        page.goto(server.url)
        notice = page.locator("#checkpoint_notice")
        expect(notice).to_contain_text("No checkpoint found", timeout=30_000)
        expect(notice).to_contain_text(str(data / "models" / "Stable-diffusion"))
        page.click("#txt2img_generate")
        expect(page.get_by_text("No checkpoint found").last).to_be_visible(timeout=30_000)
    finally:
        server.stop()


def test_inpaint_a_stroke_in_the_browser(tmp_path, tiny_checkpoint, browser):
    """img2img → Inpaint: upload a picture, paint a stroke on the canvas with the mouse, Generate;
    the PNG has the inpainting infotext, the stroke was repainted and the rest kept."""
    data = tmp_path / "data"
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, data / "models" / "Stable-diffusion" / "tiny-sd1.safetensors")
    y, x = np.mgrid[0:64, 0:64]
    source = tmp_path / "source.png"
    Image.fromarray(np.stack([x * 4, y * 4, np.full_like(x, 128)], -1).astype(np.uint8)).save(source)
    server = Server(data)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server.url)
        page.click("#tab_img2img-button")
        page.click("#img2img_inpaint_tab-button")
        expect(page.locator("#img2img_mask_blur")).to_be_visible(timeout=30_000)  # the inpaint controls show
        # the editor's upload handler answers once the picture is on the canvas
        with page.expect_response(lambda response: "/gradio_api/run/predict" in response.url, timeout=30_000):
            page.locator("#img2maskimg input[type=file]").set_input_files(str(source))
        canvas = page.locator("#img2maskimg .pixi-target canvas")
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        middle_x, middle_y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(middle_x - 40, middle_y)
        page.mouse.down()
        for step in (1, 2, 3):  # few moves: each one redraws the canvas, slowly without a GPU
            page.mouse.move(middle_x - 40 + step * 25, middle_y + step * 5)
        page.mouse.up()

        page.fill("#img2img_prompt textarea", "a red ball")
        for elem_id, value in (("img2img_width", 64), ("img2img_height", 64), ("img2img_steps", 3)):
            set_number(page, elem_id, value)
        page.click("#img2img_generate")
        shown = page.locator("#img2img_gallery img").first
        expect(shown).to_be_visible(timeout=60_000)
        with urllib.request.urlopen(shown.get_attribute("src"), timeout=30) as response:
            made = Image.open(io.BytesIO(response.read()))
            made.load()
        text = made.info["parameters"]
        assert "Mask blur: 4" in text and "Denoising strength: 0.75" in text
        assert "Inpaint area" not in text  # Whole picture is the default
        assert made.size == (64, 64)
        same = np.all(np.asarray(made.convert("RGB")) == np.asarray(Image.open(source).convert("RGB")), axis=-1)
        assert same.sum() > 100 and (~same).sum() > 100  # kept outside the stroke, repainted under it
        expect(page.locator("#html_info_img2img")).to_contain_text("Mask blur: 4")
    finally:
        server.stop()


def test_login_for_the_ui_and_basic_auth_for_the_api(data_dir, browser):
    data = data_dir
    server = Server(data, "--api", "--api-auth", "bot:s3cret", "--gradio-auth", "me:pa55")
    try:
        models = server.url + "/sdapi/v1/sd-models"
        refused = httpx.get(models)
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
        assert refused.json()["error"] == "HTTPException"
        assert httpx.get(models, auth=("bot", "wrong")).status_code == 401
        assert httpx.get(models, auth=("me", "pa55")).status_code == 401  # UI users are not API users
        allowed = httpx.get(models, auth=("bot", "s3cret"))
        assert allowed.status_code == 200 and allowed.json()[0]["model_name"] == "tiny-sd1"

        page = browser.new_page()
        page.goto(server.url)
        expect(page.locator("#txt2img_generate")).to_have_count(0)
        page.get_by_label("username").fill("me")
        page.get_by_label("password").fill("wrong")
        page.get_by_role("button", name="Login").click()
        expect(page.get_by_text("Incorrect credentials")).to_be_visible(timeout=30_000)
        page.get_by_label("username").fill("me")
        page.get_by_label("password").fill("pa55")
        page.get_by_role("button", name="Login").click()
        expect(page.locator("#txt2img_generate")).to_be_visible(timeout=60_000)
    finally:
        server.stop()


def test_ui_waits_in_the_shared_queue_and_shows_a_live_preview(data_dir, browser):
    data = data_dir
    server = Server(data, "--api")
    api = httpx.Client(base_url=server.url + "/sdapi/v1", timeout=300)
    try:
        assert api.post("/options", json={"show_progress_every_n_steps": 1}).status_code == 200
        page = browser.new_page()
        page.goto(server.url)
        for elem_id, value in (("txt2img_width", 128), ("txt2img_height", 128), ("txt2img_steps", 60)):
            set_number(page, elem_id, value)
        body = {"prompt": "first in line", "steps": 40, "width": 128, "height": 128, "force_task_id": "api-job"}
        first = threading.Thread(target=lambda: httpx.post(server.url + "/sdapi/v1/txt2img", json=body, timeout=300),
                                 daemon=True)
        first.start()
        deadline = time.time() + 60
        while api.get("/progress").json()["current_task"] != "api-job":
            assert time.time() < deadline, "the API job did not start"
            time.sleep(0.05)
        page.click("#txt2img_generate")
        gallery = page.locator("#txt2img_gallery")
        expect(gallery.get_by_text("In queue: 2/2")).to_be_visible(timeout=30_000)  # behind the API's job
        page.click("#txt2img_interrupt")  # takes this page's waiting job out of the queue, not the API's job
        expect(page.get_by_text("was cancelled").first).to_be_visible(timeout=30_000)
        assert api.get("/progress").json()["current_task"] == "api-job" and api.get("/queue").json()[1:] == []
        page.click("#txt2img_generate")
        expect(gallery.get_by_text("In queue: 2/2")).to_be_visible(timeout=30_000)
        first.join(300)
        expect(gallery.get_by_text("Preview")).to_be_visible(timeout=60_000)
        expect(gallery.get_by_text(re.compile(r"Batch 1/1, step \d+/60"))).to_be_visible(timeout=30_000)
        expect(page.locator("#html_info_txt2img .infotext")).to_contain_text("Steps: 60", timeout=120_000)
    finally:
        api.close()
        server.stop()
    log = server.log.read_text()
    api_job = re.search(r"Job #(\d+) api-job txt2img: 128x128, 40 steps, Euler, 1 image\(s\) in [\d.]+ s \([\d.]+ it/s\)\n", log)
    ui_job = re.search(r"Job #(\d+) \w+ txt2img: 128x128, 60 steps, DPM\+\+ 2M", log)
    assert api_job and ui_job and int(ui_job.group(1)) == int(api_job.group(1)) + 2 and api_job.end() < ui_job.start()


def test_extensions_tab_script_setting_js_and_css_in_the_browser(data_dir, browser):
    fixtures = Path(__file__).parent / "fixtures" / "extensions"
    for name in ("always-key", "ui-bits", "broken"):
        shutil.copytree(fixtures / name, data_dir / "extensions" / name)
    (data_dir / "config.json").write_text(json.dumps({"localization": "de-test"}))  # ui-bits ships de-test.json
    server = Server(data_dir, "--api")
    try:
        page = browser.new_page()
        page.goto(server.url)
        expect(page.locator("#ui_bits_banner")).to_have_text("ui-bits banner", timeout=60_000)  # its JS ran
        assert page.evaluate("document.body.dataset.uiBits") == "loaded:hello"  # with opts filled
        expect(page.locator("#txt2img_generate")).to_have_text("Erzeugen")  # the chosen localization
        assert page.evaluate("getComputedStyle(document.querySelector('#ui_bits_banner')).color") == "rgb(1, 2, 3)"
        container = page.locator("#txt2img_script_container")
        container.get_by_text("Always key").first.click()  # the always-on script's own section
        expect(container.locator("#script_txt2img_always_key_enabled")).to_have_count(1)
        page.click("#tab_ui_bits-button")
        expect(page.locator("#ui_bits_hello")).to_contain_text("Hello from the ui-bits extension")
        page.click("#tab_settings-button")
        sections = page.locator("#settings_sections")
        sections.get_by_role("button", name="More tabs").click()  # an extension's section comes last
        sections.get_by_text("UI bits", exact=True).last.click()
        greeting = page.locator("#setting_ui_bits_greeting textarea, #setting_ui_bits_greeting input").first
        expect(greeting).to_have_value("hello")
        greeting.fill("hi there")
        page.click("#settings_submit")
        expect(page.locator("#settings_result")).to_contain_text("1 settings changed")
        assert json.loads((data_dir / "config.json").read_text())["ui_bits_greeting"] == "hi there"
        page.click("#tab_extensions-button")
        table = page.locator("#extensions_list")
        expect(table).to_contain_text("RuntimeError: this extension is broken on purpose")
        expect(table.locator("tr.extension-ok")).to_have_count(3)  # the two fixtures and the built-in tag autocomplete
        page.locator("#extensions_enabled").get_by_label("always-key").uncheck()
        page.click("#extensions_apply")  # saves the choice and restarts Hanga in place
        expect(page.locator("#extensions_message")).to_contain_text("restarts now", timeout=30_000)
        assert json.loads((data_dir / "config.json").read_text())["disabled_extensions"] == ["always-key"]
        deadline = time.time() + 120
        while server.log.read_text().count("Running on local URL") < 2 or not server.answers():  # started anew
            assert time.time() < deadline, "Hanga did not come back after Apply and restart UI"
            time.sleep(0.5)
        events = data_dir / "extensions" / "ui-bits" / "events.log"
        assert events.read_text(encoding="utf-8") == "before_reload\nscript_unloaded\n"  # fired before the restart
        page.goto(server.url)
        expect(page.locator("#ui_bits_banner")).to_have_count(1, timeout=60_000)
        expect(page.locator("#txt2img_script_container").get_by_text("Always key")).to_have_count(0)
    finally:
        server.stop()
    restarted = Server(data_dir, "--api")  # the setting survives a restart
    try:
        reply = httpx.get(restarted.url + "/ui_bits/ping").json()
        assert reply["greeting"] == "hi there"
    finally:
        restarted.stop()


def test_png_info_shows_a_hostile_infotext_as_text(data_dir, browser, tmp_path):
    from PIL.PngImagePlugin import PngInfo

    hostile = ('<script>window.hangaXss = 1</script><img src=x onerror="window.hangaXss = 2">\n'
               'Negative prompt: <b>bold</b>\nSteps: 3, Seed: 7, Size: 64x64')
    info = PngInfo()
    info.add_text("parameters", hostile)
    picture = tmp_path / "hostile.png"
    Image.new("RGB", (16, 16)).save(picture, pnginfo=info)
    server = Server(data_dir)
    try:
        page = browser.new_page()
        page.goto(server.url)
        page.click("#tab_pnginfo-button")
        page.locator("#pnginfo_image input[type=file]").set_input_files(str(picture))
        shown = page.locator("#pnginfo_html")
        expect(shown).to_contain_text("<script>window.hangaXss = 1</script>", timeout=30_000)  # as text
        expect(shown).to_contain_text("<b>bold</b>")
        assert shown.locator("script, img").count() == 0
        assert shown.locator("b").all_inner_texts() == ["parameters"]  # only the page's own heading is bold
        assert page.evaluate("window.hangaXss") is None
    finally:
        server.stop()
