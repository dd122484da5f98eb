"""🎴 Extra networks: the button under the prompt row that shows A1111's card pages (Textual
Inversion, Hypernetworks, Checkpoints, Lora). A click on a card puts its tag into the prompt (or
takes it out again); a textual-inversion card goes into whichever prompt box was last focused (the
negative one too, as in A1111); a checkpoint card loads that checkpoint. The listing is the service's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from PIL import Image, ImageDraw, ImageOps

from modules.service.extra_networks import PAGES, NetworkCard, network_cards, toggle_tag
from modules.service.generation import GenerationService
from modules.service.models import ModelLoadError

LABELS = {"textual_inversion": "Textual Inversion", "hypernetworks": "Hypernetworks",
          "checkpoints": "Checkpoints", "lora": "Lora"}
THUMBNAIL = (256, 384)  # A1111's card aspect (extra_networks_card_width/height defaults scaled)


@dataclass
class PageControls:
    page: str
    search: gr.Textbox
    refresh: gr.Button
    gallery: gr.Gallery
    shown: gr.State  # the tags of the cards in the gallery, in order
    clicked: object = None  # the gallery's select event (app.py chains the quicksettings update to it)


@dataclass
class ExtraNetworksUI:
    toggle: gr.Button
    panel: gr.Column
    pages: dict[str, PageControls]


class Thumbnails:
    """Card pictures, re-read when a preview file changes. Pictures (not paths) go to the gallery,
    so previews in any model folder show without widening the server's allowed paths."""

    def __init__(self):
        self._cache: dict[tuple[Path, float], Image.Image] = {}
        self._placeholder: Image.Image | None = None

    def of(self, card: NetworkCard) -> Image.Image:
        if card.preview is not None:
            try:
                key = (card.preview, card.preview.stat().st_mtime)
                if key not in self._cache:
                    with Image.open(card.preview) as image:
                        self._cache[key] = ImageOps.fit(image.convert("RGB"), THUMBNAIL)
                return self._cache[key]
            except OSError:
                pass  # an unreadable preview shows as no preview
        return self.placeholder()

    def placeholder(self) -> Image.Image:
        if self._placeholder is None:
            image = Image.new("RGB", THUMBNAIL, (72, 72, 80))
            ImageDraw.Draw(image).text((THUMBNAIL[0] // 2, THUMBNAIL[1] // 2), "No preview", fill=(200, 200, 210),
                                       anchor="mm")
            self._placeholder = image
        return self._placeholder


def caption(card: NetworkCard) -> str:
    return f"{card.name}\n{card.description}" if card.description else card.name


def shown_cards(service: GenerationService, page: str, query: str, thumbnails: Thumbnails):
    """The gallery value and the tags behind it for one page filtered by the search box."""
    cards = [card for card in network_cards(service, page) if card.matches(query or "")]
    return [(thumbnails.of(card), caption(card)) for card in cards], [card.tag for card in cards]


def card_click(service: GenerationService, page: str, tags: list[str], index: int, prompt: str,
               negative: str = "", negative_active: bool = False):
    """The new (prompt, negative prompt) after a click on card ``index``: the tag is toggled in the
    prompt, or in the negative prompt for a textual inversion while that box was the last focused.
    A checkpoint card loads the checkpoint instead."""
    if index is None or not 0 <= index < len(tags):
        return gr.update(), gr.update()
    if page == "checkpoints":
        try:
            service.select_checkpoint(tags[index])
        except ModelLoadError as error:
            gr.Warning(str(error))
        return gr.update(), gr.update()
    if page == "textual_inversion" and negative_active:
        return gr.update(), toggle_tag(negative, tags[index])
    return toggle_tag(prompt, tags[index]), gr.update()


def build(service: GenerationService, tab_name: str, prompt_box: gr.Textbox,
          negative_box: gr.Textbox | None = None) -> ExtraNetworksUI:
    thumbnails = Thumbnails()
    toggle = gr.Button("🎴", elem_id=f"{tab_name}_extra_networks", elem_classes=["tool"], scale=0, min_width=48)
    is_open = gr.State(False)
    pages: dict[str, PageControls] = {}
    with gr.Column(visible=False, elem_id=f"{tab_name}_extra_networks_panel") as panel:
        with gr.Tabs(elem_id=f"{tab_name}_extra_tabs"):
            for page in PAGES:
                with gr.Tab(LABELS[page], id=page, elem_id=f"{tab_name}_{page}"):
                    with gr.Row():
                        search = gr.Textbox("", show_label=False, placeholder="Search...", scale=4,
                                            elem_id=f"{tab_name}_{page}_extra_search")
                        refresh = gr.Button("🔄", elem_id=f"{tab_name}_{page}_extra_refresh", scale=0, min_width=48)
                    gallery = gr.Gallery(show_label=False, columns=6, height="auto", allow_preview=False,
                                         object_fit="cover", interactive=False, elem_id=f"{tab_name}_{page}_cards")
                    pages[page] = PageControls(page, search, refresh, gallery, gr.State([]))
    negative_active = gr.State(False)  # the negative prompt box was the last one focused
    if negative_box is not None:
        prompt_box.focus(lambda: False, None, negative_active, queue=False, show_progress="hidden")
        negative_box.focus(lambda: True, None, negative_active, queue=False, show_progress="hidden")
    boxes = (prompt_box, negative_box if negative_box is not None else gr.State(""), negative_active)
    _wire(service, toggle, is_open, panel, pages, boxes, thumbnails)
    return ExtraNetworksUI(toggle, panel, pages)


def _wire(service: GenerationService, toggle: gr.Button, is_open: gr.State, panel: gr.Column,
          pages: dict[str, PageControls], boxes: tuple, thumbnails: Thumbnails) -> None:
    prompt_box, negative_box, negative_active = boxes
    every_page = [output for controls in pages.values() for output in (controls.gallery, controls.shown)]
    searches = [controls.search for controls in pages.values()]

    def flip(was_open: bool, *queries):
        if was_open:
            return [False, gr.Column(visible=False), *(gr.update() for _ in every_page)]
        filled = [part for page, query in zip(pages, queries) for part in shown_cards(service, page, query, thumbnails)]
        return [True, gr.Column(visible=True), *filled]

    toggle.click(flip, [is_open, *searches], [is_open, panel, *every_page], queue=False, show_progress="hidden")

    for controls in pages.values():
        page = controls.page

        def fill(query: str, page=page):
            return shown_cards(service, page, query, thumbnails)

        def rescan(query: str, page=page):
            if page == "checkpoints":
                service.models.refresh()
            return shown_cards(service, page, query, thumbnails)

        def clicked(tags: list[str], prompt: str, negative: str, on_negative: bool, event: gr.SelectData, page=page):
            return card_click(service, page, tags, event.index, prompt, negative, on_negative)

        outputs = [controls.gallery, controls.shown]
        controls.search.input(fill, controls.search, outputs, queue=False, show_progress="hidden",
                              trigger_mode="always_last")
        controls.refresh.click(rescan, controls.search, outputs, queue=False, show_progress="hidden")
        controls.clicked = controls.gallery.select(
            clicked, [controls.shown, prompt_box, negative_box, negative_active], [prompt_box, negative_box],
            show_progress="hidden", **({"concurrency_id": "gpu"} if page == "checkpoints" else {"queue": False}))
