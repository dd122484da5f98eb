"""End to end: the Gallery tab of the real server (``webui.py``) in Chromium shows thumbnails of
the images under outputs, narrows them by seed, shows the selected image's parameters, sends them
to txt2img and deletes an image into the trash."""

from __future__ import annotations

import datetime

import pytest
from playwright.sync_api import expect

from tests.fixtures.gallery_images import infotext, write_png
from tests.fixtures.live_server import Server

pytestmark = pytest.mark.e2e



def test_gallery_tab_lists_searches_selects_and_deletes(tmp_path, browser):
    data = tmp_path / "data"
    folder = data / "outputs" / "txt2img-images" / datetime.date.today().isoformat()
    now = datetime.datetime.now().timestamp()
    for index in range(5):
        write_png(folder / f"{index:05d}-{1000 + index}-a photo of subject {index}.png", infotext(index),
                  mtime=now - 100 + index, color=(40 * index, 90, 200))
    server = Server(data)
    try:
        page = browser.new_page()
        page.goto(server.url)
        page.get_by_role("tab", name="Gallery").click()
        thumbnails = page.locator("#gallery_thumbnails img")
        expect(thumbnails).to_have_count(5, timeout=30_000)
        expect(page.locator("#gallery_page_count")).to_contain_text("5 images · page 1 of 1")
        expect(page.locator("#gallery_thumbnails")).to_contain_text("00004-1004")  # newest first
        # Served from the thumbnail cache by Gradio's file route, not copied into Gradio's cache.
        page.wait_for_function("() => [...document.querySelectorAll('#gallery_thumbnails img')]"
                               ".every(image => image.complete && image.naturalWidth > 0)")
        assert f"/gradio_api/file={data / 'cache' / 'thumbnails'}/" in thumbnails.first.get_attribute("src")

        page.fill("#gallery_seed textarea", "1002")
        page.click("#gallery_search_button")
        expect(thumbnails).to_have_count(1)
        expect(page.locator("#gallery_page_count")).to_contain_text("1 image · page 1 of 1")

        thumbnails.first.click()
        info = page.locator("#gallery_info .infotext")
        expect(info).to_contain_text("Seed: 1002", timeout=30_000)
        expect(info).to_contain_text("a photo of subject 2, blue background")
        expect(page.locator("#gallery_image img")).to_have_count(1)

        page.click("#gallery_send_txt2img")
        expect(page.locator("#txt2img_prompt textarea")).to_have_value("a photo of subject 2, blue background")
        expect(page.locator("#txt2img_seed input")).to_have_value("1002")

        page.get_by_role("tab", name="Gallery").click()
        page.click("#gallery_delete")
        expect(page.locator("#gallery_page_count")).to_contain_text("No image matches the search")
        expect(page.locator("#gallery_info")).not_to_contain_text("Seed")
        trashed = data / "outputs" / ".trash" / "txt2img-images" / folder.name / "00002-1002-a photo of subject 2.png"
        assert trashed.is_file() and not (folder / trashed.name).exists()

        page.fill("#gallery_seed textarea", "")
        page.click("#gallery_search_button")
        expect(thumbnails).to_have_count(4)
        write_png(folder / "00005-1005-a photo of subject 5.png", infotext(5), mtime=now + 10)
        page.click("#gallery_refresh")
        expect(thumbnails).to_have_count(5)
        expect(page.locator("#gallery_page_count")).to_contain_text("5 images · page 1 of 1")
    finally:
        server.stop()
