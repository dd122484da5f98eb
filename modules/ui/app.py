"""The Gradio page: quicksettings bar, then the tabs. A view only: every action calls the service."""

from __future__ import annotations

import html
import logging

import gradio as gr
import numpy as np
from PIL import Image

from modules.service.generation import GenerationService
from modules.service.models import ModelLoadError
from modules.service.settings_schema import InvalidSetting
from modules.service.sysinfo import sysinfo
from modules.ui import extensions_tab, img2img_tab, merger_tab, pnginfo_tab, settings_tab, txt2img_tab, ui_config
from modules.ui import extras_tab, gallery_tab
from modules.core.png_meta import read_infotext
from modules.ui.common import REFRESH_OPTIONS_JS, infotext_at, open_picture, picture_at

log = logging.getLogger("hanga")

CSS = """
.infotext { font-size: 0.9em; word-break: break-word; white-space: normal; }
#quicksettings { align-items: flex-end; }
#quicksettings .refresh { max-width: 3em; min-width: 3em; }
.token-counter { text-align: right; font-size: 0.8em; opacity: 0.7; margin-top: -0.5em; }
#settings_result .error { color: var(--error-text-color, #c00); }
.resolution { font-weight: bold; }
#sd_checkpoint_hash_box { flex-grow: 0; min-width: 6em; align-self: center; font-family: monospace; opacity: 0.7; }
"""


def _notice(service: GenerationService) -> str:
    if service.models.checkpoints:
        return ""
    return f"**No checkpoint found.** {service.models.folder_hint()}"


def checkpoint_hash_html(sha256: str) -> str:
    """A1111's ``#sd_checkpoint_hash``: the current checkpoint's short hash, the full one as its
    title (extensions watch it to learn the checkpoint changed). Kept current by hanga.js."""
    sha = html.escape(sha256 or "")
    return f'<a id="sd_checkpoint_hash" title="{sha}">{sha[:10]}</a>'


def _quicksettings(service: GenerationService) -> tuple[gr.Markdown, gr.Dropdown]:
    with gr.Row(elem_id="quicksettings"):
        checkpoint = gr.Dropdown(
            choices=service.models.titles(), value=service.current_checkpoint_title() or None,
            label="Stable Diffusion checkpoint", elem_id="setting_sd_model_checkpoint", scale=4,
        )
        refresh = gr.Button("🔄", elem_id="refresh_sd_model_checkpoint", elem_classes=["refresh"], scale=0)
        gr.HTML(lambda: checkpoint_hash_html(service.settings.get("sd_checkpoint_hash")),
                elem_id="sd_checkpoint_hash_box", elem_classes=["checkpoint-hash"], min_height=0, padding=False)
        for key in settings_tab.quick_keys(service.settings):
            _quicksetting(service, service.settings.schema[key])
    notice = gr.Markdown(_notice(service), elem_id="checkpoint_notice")

    def select(title: str | None):
        if not title:
            return gr.Dropdown()
        try:
            loaded = service.select_checkpoint(title)
        except ModelLoadError as error:
            gr.Warning(str(error))
            return gr.Dropdown(value=service.current_checkpoint_title() or None)
        return gr.Dropdown(choices=service.models.titles(), value=loaded.info.title)

    def rescan():
        service.models.refresh()
        return gr.Dropdown(choices=service.models.titles(), value=service.current_checkpoint_title() or None), _notice(service)

    checkpoint.input(select, checkpoint, checkpoint, concurrency_id="gpu").then(None, js=REFRESH_OPTIONS_JS)
    # A1111's JS selectCheckpoint(name) (extensions' checkpoint lists): the name goes into a hidden
    # box and a hidden button loads it.
    picked = gr.Textbox(visible="hidden", elem_id="hanga_checkpoint_pick")
    change = gr.Button("Change checkpoint", visible="hidden", elem_id="change_checkpoint")
    change.click(select, picked, checkpoint, concurrency_id="gpu").then(None, js=REFRESH_OPTIONS_JS)
    refresh.click(rescan, None, [checkpoint, notice], queue=False)
    return notice, checkpoint


def _quicksetting(service: GenerationService, setting) -> None:
    """One setting of ``quicksettings_list`` in the bar, saved as soon as it changes."""
    component = settings_tab.component_for(setting, service.settings.get(setting.key))

    def store(value):
        try:
            service.settings.set(setting.key, settings_tab.as_stored(setting, value))
        except InvalidSetting as error:
            gr.Warning(str(error))

    component.change(store, component, None, queue=False, show_progress="hidden")


def _follow_checkpoint_cards(service: GenerationService, checkpoint: gr.Dropdown, *tabs) -> None:
    """A checkpoint card loads its checkpoint; the quicksettings dropdown then shows it."""
    def current():
        return gr.Dropdown(choices=service.models.titles(), value=service.current_checkpoint_title() or None)

    for tab in tabs:
        tab.extra_networks.pages["checkpoints"].clicked.then(current, None, checkpoint, queue=False,
                                                             show_progress="hidden").then(None, js=REFRESH_OPTIONS_JS)


def _wire_send_to(service: GenerationService, tabs: gr.Tabs, txt2img: txt2img_tab.Txt2ImgTab,
                  img2img: img2img_tab.Img2ImgTab, pnginfo: pnginfo_tab.PngInfoTab) -> None:
    """🖼 / 🎨 under the galleries and PNG Info's buttons: the picture goes into the img2img or
    Inpaint sub-tab, its infotext is pasted into img2img's controls, and the img2img tab opens."""

    def from_gallery(mode: int):
        def send(gallery_value, index: int, state: dict, *target):
            pasted = service.paste(infotext_at(state, index))
            return [*img2img.send_updates(mode, picture_at(gallery_value, index), pasted, *target),
                    gr.Tabs(selected="img2img")]
        return send

    def from_file(mode: int):
        def send(path: str | None, text: str, *target):
            return [*img2img.send_updates(mode, open_picture(path), service.paste(text or ""), *target),
                    gr.Tabs(selected="img2img")]
        return send

    for mode, source_buttons, pnginfo_button in (
        (img2img_tab.IMG2IMG, (txt2img.panel.send_to_img2img, img2img.panel.send_to_img2img), pnginfo.send_img2img),
        (img2img_tab.INPAINT, (txt2img.panel.send_to_inpaint, img2img.panel.send_to_inpaint), pnginfo.send_inpaint),
    ):
        outputs = [*img2img.send_outputs(mode), tabs]
        for button, panel in zip(source_buttons, (txt2img.panel, img2img.panel)):
            button.click(from_gallery(mode), [panel.gallery, panel.selected, panel.generation, *img2img.send_inputs()],
                         outputs, queue=False)
        pnginfo_button.click(from_file(mode), [pnginfo.image, pnginfo.parameters, *img2img.send_inputs()], outputs,
                             queue=False)


def _wire_send_to_extras(tabs: gr.Tabs, extras: extras_tab.ExtrasTab, txt2img: txt2img_tab.Txt2ImgTab,
                         img2img: img2img_tab.Img2ImgTab, pnginfo: pnginfo_tab.PngInfoTab) -> None:
    """📐 under the galleries and PNG Info's "Send to extras": the picture, opened with its text
    chunks (the saved result keeps its ``parameters``), goes into Extras' Single Image, which opens."""

    def from_gallery(gallery_value, index: int):
        return [*extras.send_updates(picture_at(gallery_value, index)), gr.Tabs(selected="extras")]

    def from_file(path: str | None):
        return [*extras.send_updates(open_picture(path)), gr.Tabs(selected="extras")]

    outputs = [*extras.send_outputs(), tabs]
    for panel in (txt2img.panel, img2img.panel):
        panel.send_to_extras.click(from_gallery, [panel.gallery, panel.selected], outputs, queue=False)
    pnginfo.send_extras.click(from_file, pnginfo.image, outputs, queue=False)


def _source_picture(value, component) -> Image.Image | None:
    """A paste binding's picture: what an image component gives (a picture, an array, a file
    Gradio stored); a path typed in a text box is not opened."""
    if value is None:
        return None
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, np.ndarray):
        return Image.fromarray(value)
    if isinstance(value, dict):
        value = value.get("composite") or value.get("background") or value.get("path")
        return _source_picture(value, component)
    if isinstance(value, str) and isinstance(component, (gr.Image, gr.File, gr.ImageEditor)):
        return open_picture(value)
    return None


def _wire_paste_buttons(service: GenerationService, tabs: gr.Tabs, txt2img: txt2img_tab.Txt2ImgTab,
                        img2img: img2img_tab.Img2ImgTab, extras: extras_tab.ExtrasTab) -> None:
    """Extensions' paste buttons (A1111's ``register_paste_params_button``, image browsers): a click
    sends the binding's picture and infotext (the text box's, else the picture's own) to the tab it
    names, pasting the infotext into that tab's controls as PNG Info's buttons do."""
    for binding in list(service.callbacks.paste_buttons):
        button, tab = binding.paste_button, str(binding.tabname or "")
        image_source, text_source = binding.source_image_component, binding.source_text_component
        if not hasattr(button, "click") or tab not in ("txt2img", "img2img", "inpaint", "extras"):
            log.warning("Paste button for %r ignored: the tab must be txt2img, img2img, inpaint or extras", tab)
            continue
        sources = [source for source in (image_source, text_source) if source is not None]

        def read(values, image_source=image_source, text_source=text_source):
            values = list(values)
            picture = _source_picture(values.pop(0), image_source) if image_source is not None else None
            text = values.pop(0) if text_source is not None else None
            if not isinstance(text, str) or not text.strip():
                text = read_infotext(picture)[0] if picture is not None else None
            return picture, text or "", values

        if tab == "txt2img":
            def send(*values, read=read):
                _, text, _ = read(values)
                return [*txt2img.controls.paste_updates(service.paste(text)), gr.Tabs(selected="txt2img")]

            button.click(send, sources, [*txt2img.controls.paste_outputs(), tabs], queue=False)
        elif tab == "extras":
            def send(*values, read=read):
                picture, _, _ = read(values)
                if picture is None:
                    raise gr.Error("No image to send")
                return [*extras.send_updates(picture), gr.Tabs(selected="extras")]

            button.click(send, sources, [*extras.send_outputs(), tabs], queue=False)
        else:
            mode = img2img_tab.IMG2IMG if tab == "img2img" else img2img_tab.INPAINT

            def send(*values, read=read, mode=mode):
                picture, text, (known, factor) = read(values)
                pasted = service.paste(text)
                if picture is None:  # the infotext alone: the controls change, the picture stays
                    controls = img2img.controls.paste_updates(pasted)
                    rest = len(img2img.send_outputs(mode)) - 1 - len(controls)
                    return [gr.skip(), *controls, *[gr.skip()] * rest, gr.Tabs(selected="img2img")]
                return [*img2img.send_updates(mode, picture, pasted, known, factor), gr.Tabs(selected="img2img")]

            button.click(send, [*sources, *img2img.send_inputs()], [*img2img.send_outputs(mode), tabs], queue=False)


def _extension_tabs(service: GenerationService) -> list[tuple]:
    """``on_ui_tabs`` results, built before the page (A1111 renders them into tabs later)."""
    callbacks = service.callbacks
    callbacks.call("before_ui")
    tabs = []
    for result in callbacks.call("ui_tabs"):
        for entry in result or ():
            if isinstance(entry, (tuple, list)) and len(entry) >= 3 and isinstance(entry[0], gr.Blocks):
                tabs.append(tuple(entry[:3]))
    return tabs


def build_ui(service: GenerationService, extension_access: bool = True, flags=None) -> gr.Blocks:
    """The page; ``extension_access`` False refuses the Extensions tab's actions (a server
    reachable from other machines without --enable-insecure-extension-access)."""
    extension_tabs = _extension_tabs(service)
    with gr.Blocks(title="Hanga", analytics_enabled=False) as demo:
        _, checkpoint = _quicksettings(service)
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img") as txt2img_block:
                txt2img = txt2img_tab.build(service)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img") as img2img_block:
                img2img = img2img_tab.build(service)
            with gr.Tab("Extras", id="extras", elem_id="tab_extras"):
                extras = extras_tab.build(service)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                pnginfo = pnginfo_tab.build(tabs, txt2img.controls, service)
            with gr.Tab("Gallery", id="gallery", elem_id="tab_gallery") as gallery:
                gallery_tab.build(gallery, tabs, txt2img.controls, img2img, service)
            with gr.Tab("Checkpoint Merger", id="modelmerger", elem_id="tab_modelmerger"):
                merger_tab.build(service)
            for blocks, title, elem_id in extension_tabs:
                with gr.Tab(title, id=elem_id, elem_id=f"tab_{elem_id}"):
                    blocks.render()
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                settings_tab.build(service.settings, sysinfo=lambda: sysinfo(service, flags),
                                   reload_ui=(lambda: extensions_tab.restart_process(before=service.before_restart))
                                   if extension_access else None,
                                   lock_folders=bool(getattr(flags, "hide_ui_dir_config", False)))
            if getattr(service, "extensions", None) is not None:
                with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions"):
                    extensions_tab.build(service, extension_access)
        ui_config.apply(service.paths.data / "ui-config.json", {"txt2img": txt2img_block, "img2img": img2img_block})
        _wire_send_to(service, tabs, txt2img, img2img, pnginfo)
        _wire_send_to_extras(tabs, extras, txt2img, img2img, pnginfo)
        _wire_paste_buttons(service, tabs, txt2img, img2img, extras)
        _follow_checkpoint_cards(service, checkpoint, txt2img, img2img)
    return demo
