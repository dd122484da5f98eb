"""Checkpoint Merger tab (A1111's ``modelmerger``): a view over ``service/merger.run_merge``."""

from __future__ import annotations

import html

import gradio as gr

from modules.core.generation.request import InvalidRequest
from modules.core.models.merge import METHODS, WEIGHTED_SUM
from modules.core.safe_load import CorruptFileError, UnsafeFileError
from modules.service.generation import GenerationService
from modules.service.merger import CONFIG_SOURCES, FORMATS, read_metadata, run_merge

DESCRIPTIONS = {
    "No interpolation": "No interpolation will be used. Requires one model; A. Allows for format conversion and VAE baking.",
    "Weighted sum": "A weighted sum will be used for interpolation. Requires two models; A and B. "
                    "The result is calculated as A * (1 - M) + B * M",
    "Add difference": "The difference between the last two models will be added to the first. Requires three "
                      "models; A, B and C. The result is calculated as A + (B - C) * M",
}


def describe(method: str) -> str:
    return f"<p style='margin-bottom: 2.5em'>{html.escape(DESCRIPTIONS.get(method, ''))}</p>"


def build(service: GenerationService) -> None:
    models = service.models

    def vae_choices() -> list[str]:
        return ["None", *models.vaes()]

    with gr.Row(equal_height=False):
        with gr.Column(variant="compact"):
            description = gr.HTML(describe(WEIGHTED_SUM), elem_id="modelmerger_interp_description")
            with gr.Row(elem_id="modelmerger_models"):
                dropdowns = []
                for role, letter in (("primary", "A"), ("secondary", "B"), ("tertiary", "C")):
                    dropdowns.append(gr.Dropdown(models.titles(), value=None, label=f"{role.capitalize()} model ({letter})",
                                                 elem_id=f"modelmerger_{role}_model_name"))
                refresh = gr.Button("🔄", elem_id="modelmerger_refresh_checkpoints", scale=0, min_width=48)
            custom_name = gr.Textbox(label="Custom Name (Optional)", elem_id="modelmerger_custom_name")
            amount = gr.Slider(0.0, 1.0, value=0.3, step=0.05, label="Multiplier (M) - set to 0 to get model A",
                               elem_id="modelmerger_interp_amount")
            method = gr.Radio(list(METHODS), value=WEIGHTED_SUM, label="Interpolation Method",
                              elem_id="modelmerger_interp_method")
            with gr.Row():
                fmt = gr.Radio(list(FORMATS[::-1]), value="safetensors", label="Checkpoint format",
                               elem_id="modelmerger_checkpoint_format")
                save_as_half = gr.Checkbox(False, label="Save as float16", elem_id="modelmerger_save_as_half")
            with gr.Row():
                config_source = gr.Radio(list(CONFIG_SOURCES), value=CONFIG_SOURCES[0], type="index",
                                         label="Copy config from", elem_id="modelmerger_config_method")
                with gr.Row():
                    bake_in_vae = gr.Dropdown(vae_choices(), value="None", label="Bake in VAE",
                                              elem_id="modelmerger_bake_in_vae")
                    refresh_vae = gr.Button("🔄", elem_id="modelmerger_refresh_bake_in_vae", scale=0, min_width=48)
            discard = gr.Textbox("", label="Discard weights with matching name", elem_id="modelmerger_discard_weights")
            with gr.Accordion("Metadata", open=False) as metadata_editor:
                with gr.Row():
                    save_metadata = gr.Checkbox(True, label="Save metadata", elem_id="modelmerger_save_metadata")
                    add_recipe = gr.Checkbox(True, label="Add merge recipe metadata", elem_id="modelmerger_add_recipe")
                    copy_metadata = gr.Checkbox(True, label="Copy metadata from merged models",
                                                elem_id="modelmerger_copy_metadata")
                metadata_json = gr.TextArea("{}", label="Metadata in JSON format", elem_id="modelmerger_metadata_json")
                read = gr.Button("Read metadata from selected checkpoints", elem_id="modelmerger_read_metadata")
            merge = gr.Button("Merge", variant="primary", elem_id="modelmerger_merge")
        with gr.Column(variant="compact", elem_id="modelmerger_results_container"):
            result = gr.HTML(elem_id="modelmerger_result")

    def choices():
        titles = models.titles()
        return [gr.Dropdown(choices=titles) for _ in dropdowns]

    def rescan():
        models.refresh()
        return choices()

    def run(primary, secondary, tertiary, method_, multiplier, half, name, format_, config, vae, discard_,
            save_meta, recipe, copy_meta, meta_json):
        try:
            path = run_merge(models, primary, secondary, tertiary, method_, multiplier, name or "", half, format_,
                             vae or "None", discard_ or "", save_meta, recipe, copy_meta, meta_json,
                             config if config is not None else len(CONFIG_SOURCES) - 1)
        except (InvalidRequest, UnsafeFileError, CorruptFileError, OSError) as error:
            return [*choices(), f"<p class='error'>Error merging checkpoints: {html.escape(str(error))}</p>"]
        return [*choices(), f"<p>Checkpoint saved to {html.escape(str(path))}</p>"]

    method.change(describe, method, description, queue=False, show_progress="hidden")
    fmt.change(lambda value: gr.Accordion(visible=value == "safetensors"), fmt, metadata_editor, queue=False,
               show_progress="hidden")
    refresh.click(rescan, None, dropdowns, queue=False)
    refresh_vae.click(lambda: gr.Dropdown(choices=vae_choices()), None, bake_in_vae, queue=False)
    read.click(lambda a, b, c: read_metadata(models, a, b, c), dropdowns, metadata_json, queue=False)
    merge.click(lambda: "", None, result, queue=False)
    merge.click(run, [*dropdowns, method, amount, save_as_half, custom_name, fmt, config_source, bake_in_vae, discard,
                      save_metadata, add_recipe, copy_metadata, metadata_json], [*dropdowns, result],
                concurrency_id="gpu")
