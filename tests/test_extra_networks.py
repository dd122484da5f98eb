"""Extra-networks cards: what each page lists (tags, previews, descriptions, search text) from tiny
files in the data folders, the 🎴 panel in both tabs, and a click putting a tag into the prompt."""

from __future__ import annotations

import re
import shutil

import gradio as gr
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from modules.service.extra_networks import network_cards, toggle_tag
from modules.ui import extra_networks_ui
from modules.ui.app import build_ui


def write_picture(path, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 48), colour).save(path)


@pytest.fixture
def networks(service):
    models = service.paths.models
    lora = models / "Lora" / "styles"
    lora.mkdir(parents=True)
    save_file({"lora_unet_x.lora_up.weight": torch.zeros(2, 2)}, lora / "myLoraFile.safetensors",
              metadata={"ss_output_name": "pixelart", "modelspec.description": "from metadata"})
    save_file({"lora_unet_x.lora_up.weight": torch.zeros(2, 2)}, models / "Lora" / "plain.safetensors")
    write_picture(lora / "myLoraFile.preview.png")
    (models / "Lora" / "plain.txt").write_text("a plain lora\n")

    hypernetworks = models / "hypernetworks"
    hypernetworks.mkdir(parents=True)
    (hypernetworks / "anime.pt").write_bytes(b"not parsed for listing")
    write_picture(hypernetworks / "anime.jpg")

    embeddings = service.paths.embeddings
    (embeddings / "sub").mkdir(parents=True)
    (embeddings / "bad-hands.pt").write_bytes(b"x")
    (embeddings / "sub" / "style.safetensors").write_bytes(b"x")
    write_picture(embeddings / "bad-hands.png")  # a preview beside the file, not an embedding of its own
    write_picture(embeddings / "sub" / "style.preview.webp")
    (embeddings / "notes.md").write_text("ignored")
    return service


def by_name(cards):
    return {card.name: card for card in cards}


def test_lora_cards_use_the_alias_multiplier_preview_and_description(networks):
    cards = by_name(network_cards(networks, "lora"))
    assert list(cards) == ["myLoraFile", "plain"]
    aliased, plain = cards["myLoraFile"], cards["plain"]
    assert aliased.tag == "<lora:pixelart:1>" and plain.tag == "<lora:plain:1>"
    assert aliased.preview.name == "myLoraFile.preview.png" and plain.preview is None
    assert aliased.description == "from metadata" and plain.description == "a plain lora"
    assert "styles/myloraFile.safetensors".lower() in aliased.search_text and "pixelart" in aliased.search_text
    assert aliased.matches("PIXEL") and aliased.matches("styles my") and not plain.matches("pixel")

    networks.settings.set("extra_networks_default_multiplier", 0.6)
    assert by_name(network_cards(networks, "lora"))["plain"].tag == "<lora:plain:0.6>"


def test_alias_that_names_another_file_is_not_used(networks):
    folder = networks.paths.models / "Lora"
    save_file({"x": torch.zeros(1)}, folder / "other.safetensors", metadata={"ss_output_name": "plain"})
    assert by_name(network_cards(networks, "lora"))["other"].tag == "<lora:other:1>"


def test_hypernetwork_embedding_and_checkpoint_cards(networks):
    hypernets = network_cards(networks, "hypernetworks")
    assert [(c.name, c.tag, c.preview.name) for c in hypernets] == [("anime", "<hypernet:anime:1>", "anime.jpg")]

    embeddings = by_name(network_cards(networks, "textual_inversion"))
    assert list(embeddings) == ["bad-hands", "style"]
    assert embeddings["bad-hands"].tag == "bad-hands" and embeddings["bad-hands"].preview.name == "bad-hands.png"
    assert embeddings["style"].preview.name == "style.preview.webp" and "sub/style.safetensors" in embeddings["style"].search_text

    checkpoints = network_cards(networks, "checkpoints")
    assert [(c.name, c.tag) for c in checkpoints] == [(info.stem, info.title) for info in networks.models.checkpoints]
    assert checkpoints and checkpoints[0].name == "tiny-sd1"

    with pytest.raises(ValueError):
        network_cards(networks, "styles")


def test_empty_folders_list_nothing(service):
    assert network_cards(service, "lora") == [] and network_cards(service, "hypernetworks") == []
    assert network_cards(service, "textual_inversion") == []


def test_a_click_appends_the_tag_and_a_second_click_takes_it_out():
    assert toggle_tag("", "<lora:a:1>") == "<lora:a:1>"
    assert toggle_tag("a cat", "<lora:a:1>") == "a cat <lora:a:1>"
    assert toggle_tag("a cat <lora:a:0.5>, sky", "<lora:a:1>") == "a cat, sky"
    assert toggle_tag("a cat, <lora:a:1>", "<lora:a:1>") == "a cat"
    assert toggle_tag("a cat", "cat-style") == "a cat cat-style"
    assert toggle_tag("a cat-style, cat", "cat") == "a cat-style"


def test_both_tabs_have_the_panel_and_a_card_click_fills_the_prompt(networks):
    demo = build_ui(networks)
    blocks = {block.elem_id: block for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    for tab in ("txt2img", "img2img"):
        assert isinstance(blocks[f"{tab}_extra_networks"], gr.Button)
        assert blocks[f"{tab}_extra_networks_panel"].visible is False
        for page in ("textual_inversion", "hypernetworks", "checkpoints", "lora"):
            assert isinstance(blocks[f"{tab}_{page}_cards"], gr.Gallery)
            assert isinstance(blocks[f"{tab}_{page}_extra_search"], gr.Textbox)
    labels = [tab.label for tab in blocks["txt2img_extra_tabs"].children]
    assert labels == ["Textual Inversion", "Hypernetworks", "Checkpoints", "Lora"]

    thumbnails = extra_networks_ui.Thumbnails()
    value, tags = extra_networks_ui.shown_cards(networks, "lora", "pixel", thumbnails)
    assert tags == ["<lora:pixelart:1>"] and value[0][1] == "myLoraFile\nfrom metadata"
    assert value[0][0].getpixel((5, 5)) == (200, 30, 30)  # the preview, not the placeholder
    value, tags = extra_networks_ui.shown_cards(networks, "lora", "", thumbnails)
    assert value[1][0] is thumbnails.placeholder()
    assert extra_networks_ui.card_click(networks, "lora", tags, 0, "a cat")[0] == "a cat <lora:pixelart:1>"
    # a LoRA goes into the prompt even while the negative prompt has the focus; an embedding follows the focus
    assert extra_networks_ui.card_click(networks, "lora", tags, 0, "a cat", "ugly", True)[0] == "a cat <lora:pixelart:1>"
    prompt, negative = extra_networks_ui.card_click(networks, "textual_inversion", ["bad-hands"], 0, "a cat", "ugly", True)
    assert negative == "ugly bad-hands" and prompt == gr.update()
    prompt, negative = extra_networks_ui.card_click(networks, "textual_inversion", ["bad-hands"], 0, "a cat", "ugly", False)
    assert prompt == "a cat bad-hands" and negative == gr.update()


def test_checkpoint_card_selects_the_checkpoint(networks):
    copy = networks.paths.checkpoints / "second.safetensors"
    shutil.copy(networks.models.checkpoints[0].path, copy)
    networks.models.refresh()
    _, tags = extra_networks_ui.shown_cards(networks, "checkpoints", "second", extra_networks_ui.Thumbnails())
    assert len(tags) == 1
    extra_networks_ui.card_click(networks, "checkpoints", tags, 0, "a cat")
    assert networks.current_checkpoint_title().startswith("second.safetensors")


@pytest.mark.e2e
def test_browser_lora_card_click_puts_the_tag_into_the_prompt(tmp_path, tiny_checkpoint):
    from playwright.sync_api import expect

    from tests.fixtures.live_server import Server, chromium

    data = tmp_path / "data"
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, data / "models" / "Stable-diffusion" / "tiny-sd1.safetensors")
    (data / "models" / "Lora").mkdir(parents=True)
    save_file({"x": torch.zeros(1)}, data / "models" / "Lora" / "detail.safetensors")
    shutil.copy(tiny_checkpoint, data / "models" / "Stable-diffusion" / "second.safetensors")
    (data / "embeddings").mkdir(parents=True)
    torch.save({"string_to_param": {"*": torch.zeros(1, 64)}, "name": "bad-hands"}, data / "embeddings" / "bad-hands.pt")
    server = Server(data)
    try:
        with chromium() as browser:
            page = browser.new_page()
            page.goto(server.url)
            page.fill("#txt2img_prompt textarea", "a cat")
            page.click("#txt2img_extra_networks")
            page.locator("#txt2img_extra_tabs button[role=tab]", has_text="Lora").click()
            card = page.locator("#txt2img_lora_cards button.thumbnail-item").first
            card.click()
            prompt = page.locator("#txt2img_prompt textarea")
            expect(prompt).to_have_value("a cat <lora:detail:1>", timeout=10_000)
            card.click()  # a second click takes it out again
            expect(prompt).to_have_value("a cat", timeout=10_000)
            # an embedding card goes into the negative prompt while that box has the focus
            page.click("#txt2img_neg_prompt textarea")
            page.locator("#txt2img_extra_tabs button[role=tab]", has_text="Textual Inversion").click()
            page.locator("#txt2img_textual_inversion_cards button.thumbnail-item").first.click()
            expect(page.locator("#txt2img_neg_prompt textarea")).to_have_value("bad-hands", timeout=10_000)
            expect(prompt).to_have_value("a cat")
            # a checkpoint card loads it, and the quicksettings dropdown follows
            page.locator("#txt2img_extra_tabs button[role=tab]", has_text="Checkpoints").click()
            page.locator("#txt2img_checkpoints_cards button.thumbnail-item", has_text="second").click()
            expect(page.locator("#setting_sd_model_checkpoint input")).to_have_value(
                re.compile(r"^second\.safetensors"), timeout=20_000)
    finally:
        server.stop()
