"""The Gallery tab: every image under the outputs folder, newest first, a page of thumbnails at a
time, with search, the selected image's parameters, send-to buttons and delete (to the trash).
A view over `modules.service.gallery.Gallery`; the tab owns its one Gallery object."""

from __future__ import annotations

import datetime
import html
from dataclasses import dataclass
from urllib.parse import quote

import gradio as gr
from gradio import route_utils

from modules.service.gallery import Gallery, GalleryEntry, GalleryError, GalleryQuery
from modules.service.generation import GenerationService
from modules.ui import img2img_tab
from modules.ui.common import FormControls, infotext_html, open_picture

PAGE_SIZE = 36  # 6 x 6, as A1111's image browser extension
NO_PARAMETERS = "<p>This image carries no generation parameters.</p>"


@dataclass
class GalleryTab:
    gallery: Gallery
    thumbnails: gr.Gallery
    page: gr.Number
    parameters: gr.Textbox
    selected: gr.State


def parse_date(text: str | None, label: str) -> datetime.date | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise gr.Error(f"{label}: write the date as YYYY-MM-DD") from None


def query_of(text: str, model: str, seed: str, date_from: str, date_to: str) -> GalleryQuery:
    return GalleryQuery(text or "", model or "", str(seed or ""), parse_date(date_from, "From date"),
                        parse_date(date_to, "To date"))


def thumbnail_url(origin: str, path) -> str:
    """Gradio's own file route for a thumbnail (its folder is in ``allowed_paths``). An absolute
    URL is shown as it is, where a path would be hashed and copied into Gradio's cache folder on
    every page: that folder would grow with every thumbnail ever seen."""
    return f"{origin}/gradio_api/file={quote(str(path))}"


def request_origin(request: gr.Request | None) -> str | None:
    """The origin the browser used (a proxy's X-Forwarded-Host included), as Gradio computes it."""
    raw = getattr(request, "request", None)
    if raw is None:
        return None
    return str(route_utils.get_request_origin(raw, raw.url.path))


def page_outputs(gallery: Gallery, number, query: GalleryQuery, origin: str | None = None) -> tuple:
    """(thumbnails, 1-based page number, the count line, the page's relative paths). Thumbnails
    are URLs under ``origin`` when it is known, else file paths."""
    page = gallery.page(int(number or 1) - 1, PAGE_SIZE, query)
    thumbnails = gallery.thumbnail_paths(page.entries)
    items = [(thumbnail_url(origin, path) if origin else str(path), entry.path.name)
             for path, entry in zip(thumbnails, page.entries)]
    if page.total:
        noun = "image" if page.total == 1 else "images"
        count = f"{page.total} {noun} · page {page.number + 1} of {page.pages}"
    else:
        count = "No images" if query.empty else "No image matches the search"
    return items, page.number + 1, count, [entry.relpath for entry in page.entries]


def selection_outputs(gallery: Gallery, entry: GalleryEntry | None) -> tuple:
    """(picture path, file line, parameters HTML, parameters text, selected relative path)."""
    if entry is None:
        return None, "", "", "", ""
    text = gallery.infotext(entry) or ""
    when = entry.modified.strftime("%Y-%m-%d %H:%M:%S")
    name = f"<p><b>{html.escape(entry.relpath)}</b><br>{when} · {entry.size // 1024} KiB</p>"
    return str(entry.path), name, infotext_html(text) if text else NO_PARAMETERS, text, entry.relpath


def build(tab: gr.Tab, tabs: gr.Tabs, txt2img: FormControls, img2img: img2img_tab.Img2ImgTab,
          service: GenerationService) -> GalleryTab:
    gallery = Gallery.for_paths(service.paths)
    with gr.Row(elem_id="gallery_filters"):
        text = gr.Textbox(label="Prompt contains", elem_id="gallery_search", scale=3,
                          placeholder="words of the prompt or negative prompt")
        model = gr.Textbox(label="Model or hash", elem_id="gallery_model", scale=1)
        seed = gr.Textbox(label="Seed", elem_id="gallery_seed", scale=1)
        date_from = gr.Textbox(label="From date", elem_id="gallery_date_from", placeholder="YYYY-MM-DD", scale=1)
        date_to = gr.Textbox(label="To date", elem_id="gallery_date_to", placeholder="YYYY-MM-DD", scale=1)
    with gr.Row(elem_id="gallery_pager"):
        search = gr.Button("Search", variant="primary", elem_id="gallery_search_button", scale=0, min_width=100)
        first = gr.Button("«", elem_id="gallery_first", scale=0, min_width=48)
        previous = gr.Button("◀", elem_id="gallery_prev", scale=0, min_width=48)
        number = gr.Number(value=1, precision=0, minimum=1, label="Page", elem_id="gallery_page", scale=0,
                           min_width=100)
        following = gr.Button("▶", elem_id="gallery_next", scale=0, min_width=48)
        last = gr.Button("»", elem_id="gallery_last", scale=0, min_width=48)
        rescan = gr.Button("🔄", elem_id="gallery_refresh", elem_classes=["refresh"], scale=0, min_width=48)
        count = gr.Markdown(elem_id="gallery_page_count")
    with gr.Row():
        with gr.Column(scale=3):
            thumbnails = gr.Gallery(label="Images", show_label=False, elem_id="gallery_thumbnails", columns=6,
                                    allow_preview=False, height="auto", object_fit="contain", interactive=False)
        with gr.Column(scale=2):
            picture = gr.Image(label="Selected image", type="filepath", interactive=False, elem_id="gallery_image",
                               height=384)
            name = gr.HTML(elem_id="gallery_filename")
            info = gr.HTML(elem_id="gallery_info")
            parameters = gr.Textbox(visible=False, elem_id="gallery_generation_info")
            with gr.Row():
                send_txt2img = gr.Button("Send to txt2img", elem_id="gallery_send_txt2img")
                send_img2img = gr.Button("Send to img2img", elem_id="gallery_send_img2img")
                send_inpaint = gr.Button("Send to inpaint", elem_id="gallery_send_inpaint")
            delete = gr.Button("Delete (to outputs/.trash)", variant="stop", elem_id="gallery_delete")
    shown = gr.State([])  # the page's relative paths, in order
    selected = gr.State("")

    filters = [text, model, seed, date_from, date_to]
    listing = [thumbnails, number, count, shown]
    chosen = [picture, name, info, parameters, selected]

    def show(request: gr.Request, page_number, *values):
        return page_outputs(gallery, page_number, query_of(*values), request_origin(request))

    def go(by: int | None):
        """A handler of (page number, *filters): page ``number + by``, or page 1 when ``by`` is None."""
        def handler(request: gr.Request, page_number, *values):
            return show(request, 1 if by is None else int(page_number or 1) + by, *values)
        return handler

    tab.select(go(0), [number, *filters], listing, queue=False)
    for trigger in (search.click, first.click, *(box.submit for box in filters)):
        trigger(go(None), [number, *filters], listing, queue=False)
    number.submit(go(0), [number, *filters], listing, queue=False)
    previous.click(go(-1), [number, *filters], listing, queue=False)
    following.click(go(+1), [number, *filters], listing, queue=False)
    last.click(go(1 << 40), [number, *filters], listing, queue=False)

    def rescan_all(request: gr.Request, page_number, *values):
        """Re-stat every file: finds images rewritten in place, which leave their folder's mtime alone."""
        gallery.refresh(force=True)
        return show(request, page_number, *values)

    rescan.click(rescan_all, [number, *filters], listing, queue=False)

    def select(paths: list, event: gr.SelectData):
        index = event.index if isinstance(event.index, int) else -1
        entry = gallery.entry(paths[index]) if 0 <= index < len(paths) else None
        return selection_outputs(gallery, entry)

    thumbnails.select(select, shown, chosen, queue=False)

    def remove(request: gr.Request, relpath: str, page_number, *values):
        if relpath:
            try:
                gallery.delete(relpath)
            except (GalleryError, OSError) as error:
                raise gr.Error(f"Cannot delete: {error}") from None
        return [*show(request, page_number, *values), *selection_outputs(gallery, None)]

    delete.click(remove, [selected, number, *filters], [*listing, *chosen], queue=False)

    def to_txt2img(text_value: str):
        return [*txt2img.paste_updates(service.paste(text_value or "")), gr.Tabs(selected="txt2img")]

    send_txt2img.click(to_txt2img, parameters, [*txt2img.paste_outputs(), tabs], queue=False)

    def to_img2img(mode: int):
        def send(relpath: str, text_value: str, *target):
            entry = gallery.entry(relpath) if relpath else None
            if entry is None:
                raise gr.Error("No image selected")
            pasted = service.paste(text_value or "")
            return [*img2img.send_updates(mode, open_picture(entry.path), pasted, *target), gr.Tabs(selected="img2img")]
        return send

    for mode, button in ((img2img_tab.IMG2IMG, send_img2img), (img2img_tab.INPAINT, send_inpaint)):
        button.click(to_img2img(mode), [selected, parameters, *img2img.send_inputs()],
                     [*img2img.send_outputs(mode), tabs], queue=False)
    return GalleryTab(gallery, thumbnails, number, parameters, selected)
