"""End to end: the real server with the ``a1111_patterns`` test extension (written as published A1111
extensions are), its installer run against a fake pip, driven in Chromium: each documented pattern
works on the txt2img and the img2img tab."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect
from safetensors.torch import load_file, save_file

from tests.fixtures.live_server import Server, chromium

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    folder = tmp_path_factory.mktemp("e2e-extensions")
    data_dir = folder / "data"
    (data_dir / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, data_dir / "models" / "Stable-diffusion" / tiny_checkpoint.name)
    # The same weights in a file of its own (other metadata, so another sha256).
    save_file(load_file(tiny_checkpoint), data_dir / "models" / "Stable-diffusion" / "zz-second.safetensors",
              metadata={"made_for": "the second checkpoint"})
    shutil.copytree(FIXTURES / "extensions" / "a1111_patterns", data_dir / "extensions" / "a1111_patterns")
    with pytest.MonkeyPatch.context() as patch:  # pip is faked: installers reach no network
        patch.setenv("PYTHONPATH", str(FIXTURES / "fake_pip"))
        patch.setenv("HANGA_FAKE_PIP_LOG", str(folder / "pip.jsonl"))
        live = Server(data_dir, "--api")
    live.data_dir, live.pip_log = data_dir, folder / "pip.jsonl"
    yield live
    live.stop()


@pytest.fixture(scope="module")
def page(server):
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server.url)
        page.wait_for_function("document.body.dataset.patternsSetup !== undefined", timeout=60_000)
        yield page


def state(server) -> dict:
    return httpx.get(server.url + "/patterns/v1/state").json()


def test_installer_and_route(server):
    assert json.loads(server.pip_log.read_text().splitlines()[0])["argv"][:2] == ["install", "patterns-dependency==1.0"]
    reply = state(server)  # a FastAPI route added in on_app_started
    assert reply["greeting"] == "hello from scripts.pattern_lib" and reply["gradio_is_real"] is False
    assert reply["basedir"] == str(server.data_dir / "extensions" / "a1111_patterns")


def test_page_script_attaches_to_both_prompts_with_a1111_selectors(server, page):
    # One-shot set-up at the first onUiUpdate found both prompts as `#<tab>_prompt > label > textarea`
    # (img2img's too: it was built before), the hidden input (visible=False) and, with opts, a file= fetch.
    assert page.evaluate("document.body.dataset.patternsSetup") == "txt2img,hidden:hidden-value,img2img,hidden:hidden-value"
    page.wait_for_function("document.body.dataset.patternsWords === 'kite,lantern'")
    for tab, text in (("txt2img", "a cat"), ("img2img", "a dog")):
        page.click(f"#tab_{tab}-button")
        prompt = page.locator(f"#{tab}_prompt > label > textarea")
        prompt.click()
        prompt.press_sequentially(f"{text} !!")
        expect(prompt).to_have_value(f"{text} kite")  # the extension's input handler + updateInput
        page.click(f"#patterns_echo_{tab}")  # _js= runs first, then the server sees the synced prompt
        expect(page.locator(f"#patterns_echo_out_{tab} textarea")).to_have_value(f"{text.upper()} KITE (JS)")
    assert page.evaluate("document.body.dataset.patternsJs") == "ran"
    assert page.evaluate("get_uiCurrentTab().id") == "tab_img2img-button"
    assert page.evaluate("document.querySelector('#txt2img_prompt').classList.contains('gradio-textbox')")


def test_extension_tab_with_gradio_3_code(page):
    page.click("#tab_patterns-button")
    note = page.locator("#patterns_tab_note").first  # gr.Box (Gradio 6 puts the id on two nested divs)
    expect(note).to_contain_text("hello from scripts.pattern_lib")
    assert page.evaluate("getComputedStyle(document.querySelector('#patterns_tab_note')).borderLeftColor") == \
        "rgb(4, 5, 6)"  # the extension's style.css, which comes after the page's own CSS
    assert page.evaluate("""() => {
        const sheets = [...document.querySelectorAll("style, link[rel=stylesheet]")];
        const own = sheets.findIndex((e) => e.tagName === "STYLE" && e.textContent.includes(".token-counter"));
        return own >= 0 && sheets.findIndex((e) => (e.href || "").includes("a1111_patterns/style.css")) > own;
    }""")
    page.click("#patterns_tab_reload")  # .click(...).then(_js=...)
    expect(page.locator("#patterns_tab_marker textarea")).to_have_value("chained _js ran")


def test_setting_with_a_refresh_button(server, page):
    page.click("#tab_settings-button")
    assert page.evaluate("hangaSelectTab('settings_sections', 'settings_patterns', 'Patterns')")
    (server.data_dir / "extensions" / "a1111_patterns" / "data" / "extra.txt").write_text("moth\n")
    page.click("#refresh_patterns_word_list")
    page.locator("#setting_patterns_word_list input").click()
    expect(page.get_by_role("option", name="extra.txt")).to_be_visible()  # choices read again
    assert state(server)["refreshed"] == 1
    page.get_by_role("option", name="more.txt").click()
    page.click("#settings_submit")
    expect(page.locator("#settings_result")).to_contain_text("1 settings changed")
    page.wait_for_function("opts.patterns_word_list === 'more.txt'")  # the page's opts follow
    assert json.loads((server.data_dir / "config.json").read_text())["patterns_word_list"] == "more.txt"


def test_input_accordion_enables_a_script_from_the_page_and_from_js(page):
    page.click("#tab_txt2img-button")
    checkbox = page.locator("#patterns_acc_txt2img-checkbox input[type=checkbox]")
    page.locator("#patterns_acc_txt2img .label-wrap").first.click()  # open the accordion
    expect(checkbox).not_to_be_checked()
    expect(page.locator("#patterns_acc_tool_txt2img")).to_be_visible()  # extra(): beside the checkbox
    checkbox.click()
    expect(checkbox).to_be_checked()
    page.locator("#txt2img_steps input[type=number]").fill("1")
    page.click("#txt2img_generate")
    expect(page.locator("#html_info_txt2img")).to_contain_text("Patterns accordion: on", timeout=60_000)
    page.click("#tab_img2img-button")  # A1111's JS helper sets it on a closed accordion too
    page.evaluate("inputAccordionChecked('patterns_acc_img2img', true)")
    expect(page.locator("#patterns_acc_img2img-checkbox input[type=checkbox]")).to_be_checked()


def test_a1111_ids_extensions_select_and_the_swap_button(page):
    for selector in ("#txt2img_settings #txt2img_width", "#img2img_settings", "#mode_img2img",
                     "#img2img_settings #img2img_res_switch_btn"):
        expect(page.locator(selector).first).to_be_attached()
    page.click("#tab_txt2img-button")
    width, height = (page.locator(f"#txt2img_{side} input[type=number]") for side in ("width", "height"))
    width.fill("640")
    width.press("Enter")
    height.fill("384")
    height.press("Enter")
    page.click("#txt2img_res_switch_btn")
    expect(width).to_have_value("384")
    expect(height).to_have_value("640")


def test_select_checkpoint_from_js_and_the_hash_element_follows(page, server, tiny_checkpoint):
    folder = server.data_dir / "models" / "Stable-diffusion"

    def sha(name: str) -> str:
        return hashlib.sha256((folder / name).read_bytes()).hexdigest()

    first, second = sha(tiny_checkpoint.name), sha("zz-second.safetensors")
    assert first != second
    page.evaluate("selectCheckpoint('zz-second')")  # A1111's helper, by any of the checkpoint's names
    expect(page.locator("#setting_sd_model_checkpoint input")).to_have_value(re.compile(r"^zz-second\.safetensors"),
                                                                             timeout=60_000)
    # A1111's #sd_checkpoint_hash (tag autocomplete watches its title) and opts.sd_checkpoint_hash follow.
    hash_link = page.locator("#sd_checkpoint_hash")
    expect(hash_link).to_have_attribute("title", second, timeout=30_000)
    expect(hash_link).to_have_text(second[:10])
    assert page.evaluate("[gradioApp().getElementById('sd_checkpoint_hash').title, opts.sd_checkpoint_hash]") == [second] * 2
    assert httpx.get(server.url + "/sdapi/v1/options").json()["sd_checkpoint_hash"] == second
    page.evaluate(f"selectCheckpoint({tiny_checkpoint.stem!r})")
    expect(hash_link).to_have_attribute("title", first, timeout=60_000)
    page.reload()  # a fresh page shows it from the start
    page.wait_for_function("document.body.dataset.patternsSetup !== undefined", timeout=60_000)
    expect(page.locator("#sd_checkpoint_hash")).to_have_attribute("title", first)


def test_an_image_browsers_paste_buttons_send_to_the_tabs(page, tmp_path):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    infotext = PngInfo()
    infotext.add_text("parameters", "a paper crane\nSteps: 9, Sampler: Euler, CFG scale: 6, Seed: 1234, Size: 64x48")
    picture = tmp_path / "sent.png"
    Image.new("RGB", (64, 48), (30, 120, 200)).save(picture, pnginfo=infotext)
    page.click("#tab_patterns-button")
    page.locator("#patterns_send_info textarea").fill(
        "a red fox\nNegative prompt: mud\nSteps: 7, Sampler: Euler, CFG scale: 5, Seed: 77, Size: 64x64")
    page.click("#patterns_send_txt2img")  # register_paste_params_button: the text box's infotext
    expect(page.locator("#txt2img_prompt textarea")).to_have_value("a red fox")
    expect(page.locator("#txt2img_neg_prompt textarea")).to_have_value("mud")
    expect(page.locator("#txt2img_steps input[type=number]")).to_have_value("7")
    page.click("#tab_patterns-button")
    page.locator("#patterns_send_image input[type=file]").set_input_files(str(picture))
    expect(page.locator("#patterns_send_image img")).to_have_count(1, timeout=30_000)
    page.locator("#patterns_send_info textarea").fill("")  # no text: the picture's own infotext
    page.click("#patterns_send_img2img")
    expect(page.locator("#img2img_prompt textarea")).to_have_value("a paper crane")
    expect(page.locator("#img2img_steps input[type=number]")).to_have_value("9")
    expect(page.locator("#img2img_image img")).to_have_count(1)
    page.click("#tab_patterns-button")
    page.click("#inpaint_tab")
    expect(page.locator("#img2maskimg")).to_be_visible(timeout=30_000)  # the Inpaint sub-tab and its controls
    expect(page.locator("#img2img_mask_blur")).to_be_visible()
    page.click("#tab_patterns-button")
    page.click("#extras_tab")  # create_buttons + bind_buttons (the old module name)
    expect(page.locator("#extras_image img")).to_have_count(1, timeout=30_000)
    expect(page.locator("#tab_extras")).to_be_visible()
