"""The page as A1111 extensions know it: ``after_component`` for every component, and A1111's
``gradio-<name>`` classes on every block.

A1111 fires ``after_component`` as each component is made (it patches Gradio's constructors; Hanga
patches nothing). Here the components made so far are announced just before a tab's script UI is
built (so a script's ``after_component`` has seen ``txt2img_prompt``, the size sliders and
``txt2img_generate`` before its ``ui()`` runs, as in A1111), and the rest once the page is built."""

from __future__ import annotations

from typing import Iterable

import gradio as gr
from gradio.context import get_blocks_context

from modules.service.scripts.api import ScriptRegistry


def announce_new(registry: ScriptRegistry) -> None:
    """Announce the components of the page being built that were not announced yet."""
    config = get_blocks_context()
    if config is not None and registry.component_listeners:
        _announce(config.root_block, list(config.blocks.values()), registry)


def announce_rest(demo: gr.Blocks, registry: ScriptRegistry) -> None:
    if registry.component_listeners:
        _announce(demo, list(demo.blocks.values()), registry)


def _announce(root: gr.Blocks, blocks: Iterable, registry: ScriptRegistry) -> None:
    done = root.__dict__.setdefault("_hanga_announced", set())
    for block in blocks:
        if block is root or block._id in done:
            continue
        done.add(block._id)
        made_with = getattr(block, "_constructor_args", None) or [{}]
        kwargs = {key: value for key, value in made_with[0].items() if key != "self"}
        kwargs["elem_id"] = block.elem_id
        registry.announce(block, **kwargs)


def add_a1111_classes(demo: gr.Blocks) -> None:
    """``gradio-textbox``, ``gradio-accordion`` … on every block (extension CSS and JS select them)."""
    for block in demo.blocks.values():
        if not hasattr(block, "elem_classes"):
            continue
        name = f"gradio-{block.get_block_name()}"
        classes = block.elem_classes
        classes = [classes] if isinstance(classes, str) else list(classes or [])
        if name not in classes:
            block.elem_classes = [name, *classes]
