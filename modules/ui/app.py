"""The Gradio page: quicksettings bar, then the tabs. A view only: every action calls the service."""

from __future__ import annotations

import gradio as gr

from modules.service.generation import GenerationService
from modules.service.models import ModelLoadError
from modules.ui import pnginfo_tab, settings_tab, txt2img_tab

CSS = """
.infotext { font-size: 0.9em; word-break: break-word; white-space: normal; }
#quicksettings { align-items: flex-end; }
#quicksettings .refresh { max-width: 3em; min-width: 3em; }
.token-counter { text-align: right; font-size: 0.8em; opacity: 0.7; margin-top: -0.5em; }
#settings_result .error { color: var(--error-text-color, #c00); }
"""


def _notice(service: GenerationService) -> str:
    if service.models.checkpoints:
        return ""
    return f"**No checkpoint found.** {service.models.folder_hint()}"


def _quicksettings(service: GenerationService) -> gr.Markdown:
    with gr.Row(elem_id="quicksettings"):
        checkpoint = gr.Dropdown(
            choices=service.models.titles(), value=service.current_checkpoint_title() or None,
            label="Stable Diffusion checkpoint", elem_id="setting_sd_model_checkpoint", scale=4,
        )
        refresh = gr.Button("🔄", elem_id="refresh_sd_model_checkpoint", elem_classes=["refresh"], scale=0)
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

    checkpoint.input(select, checkpoint, checkpoint, concurrency_id="gpu")
    refresh.click(rescan, None, [checkpoint, notice], queue=False)
    return notice


def build_ui(service: GenerationService) -> gr.Blocks:
    with gr.Blocks(title="Hanga", analytics_enabled=False) as demo:
        _quicksettings(service)
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                txt2img = txt2img_tab.build(service)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                pnginfo_tab.build(tabs, txt2img, service)
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                settings_tab.build(service.settings)
    return demo
