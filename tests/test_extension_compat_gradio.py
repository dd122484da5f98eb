"""The Gradio 3/4 → 6 shim extension code gets (spec §6.3, §6.4): only modules from extension folders
see it, and the real Gradio is left as it is."""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path

import gradio as gr
import pytest

from modules import gradio_compat
from modules.service.extensions import importer

GRADIO_3_CODE = '''
import gradio as gr
from gradio import Box
from gradio.components import IOComponent
from gradio.inputs import Slider as OldSlider

def imported_later():
    import gradio
    return gradio

with gr.Blocks() as demo:
    with gr.Box():
        hidden = gr.Textbox("kept", visible=False, tooltip="a tip", show_copy_button=True)
        button = gr.Button("go")
        picture = gr.Image(source="upload", tool="sketch", brush_radius=4)
        old = OldSlider(minimum=0, maximum=10, default=3, label="old")
        row = gr.Row(visible=False)
    first = button.click(fn=None, _js="() => 1", inputs=[], outputs=[])
    first.then(fn=None, _js="() => 2").then(fn=None, _js="() => 3")
    gr.on([button.click], fn=None, _js="() => 4")
    demo.load(fn=None, _js="() => 5")
updated = gr.Dropdown.update(choices=["b"], visible=True)
styled = hidden.style(full_width=True)
'''


def run_as_extension(code: str):
    module = type(sys)("an_extension_script")
    gradio_compat.prepare_module(module)
    exec(compile(textwrap.dedent(code), "an_extension_script.py", "exec"), module.__dict__)
    return module


def test_gradio_3_calls_work_in_extension_code(caplog):
    with caplog.at_level(logging.WARNING, logger="hanga"):
        ext = run_as_extension(GRADIO_3_CODE)
    assert ext.gr is not gr and ext.imported_later() is ext.gr and ext.Box is ext.gr.Box
    assert ext.IOComponent is gr.components.Component
    assert ext.hidden.visible == "hidden" and ext.row.visible == "hidden"  # in the DOM, hidden, as in Gradio 3
    assert ext.picture.sources == ["upload"] and ext.old.value == 3
    assert ext.updated == {"__type__": "update", "choices": ["b"], "visible": True} and ext.styled is ext.hidden
    config = ext.demo.get_config_file()
    assert [d.get("js") for d in config["dependencies"]] == ["() => 1", "() => 2", "() => 3", "() => 4", "() => 5"]
    types = {c["id"]: c["type"] for c in config["components"]}
    assert types[ext.hidden._id] == "textbox" and types[ext.old._id] == "slider"  # shown as the real component
    assert "Textbox(show_copy_button=…) is not known to Gradio 6 and was ignored" in caplog.text
    assert "Image(tool=…)" in caplog.text and "gr.inputs.Slider is gone" in caplog.text


def test_compat_classes_and_real_ones_are_interchangeable():
    ext = run_as_extension("import gradio as gr")
    with gr.Blocks():
        ours = gr.Textbox("hanga's own")
        theirs = ext.gr.Textbox("an extension's")
    assert isinstance(ours, ext.gr.Textbox) and isinstance(theirs, gr.Textbox)  # after_component checks work
    assert not isinstance(gr.Button(), ext.gr.Textbox)
    assert theirs.get_block_name() == "textbox" and ext.gr.Tab().get_block_name() == "tabitem"

    subclassing = run_as_extension('''
        import gradio as gr

        class ToolButton(gr.Button):  # A1111's pattern, in a script module Gradio cannot find the source of
            def __init__(self, value="", **kwargs):
                super().__init__(value, elem_classes=["tool"], **kwargs)

        class Plain(gr.Textbox):
            pass

        with gr.Blocks() as demo:
            button = ToolButton("x", tooltip="t")
            plain = Plain("y", visible=False)
            button.click(fn=None, _js="() => 1")
        config = demo.get_config_file()
    ''')
    assert subclassing.button.get_block_name() == "button" and subclassing.button.elem_classes == ["tool"]
    assert subclassing.plain.get_block_name() == "textbox" and subclassing.plain.visible == "hidden"
    assert subclassing.button._constructor_args  # Gradio's constructor bookkeeping still happens
    assert [c["type"] for c in subclassing.config["components"] if c["id"] == subclassing.button._id] == ["button"]


def test_real_gradio_is_untouched():
    run_as_extension(GRADIO_3_CODE)
    assert sys.modules["gradio"] is gr and not hasattr(gr, "Box") and not hasattr(gr, "inputs")
    assert not hasattr(gr.Dropdown, "update") and not hasattr(gr.Textbox, "style")
    with gr.Blocks():
        button = gr.Button()
        with pytest.raises(TypeError):
            button.click(fn=None, _js="() => 1")
    for folder in (Path(gradio_compat.__file__).parent, Path(__file__).parent):  # Gradio wrote no .pyi files
        assert not list(folder.glob("*.pyi"))


def test_only_modules_from_extension_folders_get_the_shim(tmp_path, monkeypatch):
    extension = tmp_path / "extensions" / "sd-webui-thing"
    (extension / "thing_lib").mkdir(parents=True)
    (extension / "thing_lib" / "__init__.py").write_text("import gradio\nBOX = gradio.Box\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "plain_lib.py").write_text("import gradio\nREAL = gradio\n")
    saved = (importer.FINDER.roots, importer.FINDER.user_dir, importer.FINDER.prepare)
    importer.watch([extension], tmp_path / "extensions", gradio_compat.prepare_module)
    monkeypatch.syspath_prepend(str(extension))
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))
    try:
        import plain_lib
        import thing_lib

        assert thing_lib.BOX is gradio_compat.gradio.Box and plain_lib.REAL is gr
    finally:
        importer.FINDER.roots, importer.FINDER.user_dir, importer.FINDER.prepare = saved
        for name in ("thing_lib", "plain_lib"):
            sys.modules.pop(name, None)


def test_compat_components_keep_their_page_properties():
    ext = run_as_extension('''
        import gradio as gr

        class ToolButton(gr.Button):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)

        with gr.Blocks() as demo:
            box = gr.Textbox("v", label="L", elem_id="an_id", visible=False)
            tool = ToolButton("🔄", elem_id="tool_id")
        config = demo.get_config_file()
    ''')
    props = {c["id"]: c["props"] for c in ext.config["components"]}
    assert props[ext.box._id]["elem_id"] == "an_id" and props[ext.box._id]["value"] == "v"
    assert props[ext.box._id]["label"] == "L" and props[ext.box._id]["visible"] == "hidden"
    assert props[ext.tool._id]["elem_id"] == "tool_id" and props[ext.tool._id]["value"] == "🔄"


def test_ui_components_input_accordion_and_wrappers_keep_their_ids():
    ext = run_as_extension('''
        import gradio as gr
        from modules.ui_components import DropdownMulti, InputAccordion, ToolButton

        with gr.Blocks() as demo:
            with InputAccordion(True, label="Regional", elem_id="rp_acc") as enabled:
                with enabled.extra():
                    tool = ToolButton("🔄", elem_id="rp_tool")
                strength = gr.Slider(0, 1, 0.5, label="Strength", elem_id="rp_strength")
            closed = InputAccordion(False, label="Other")
            multi = DropdownMulti(choices=["a", "b"], value=["a"], elem_id="rp_multi")
        config = demo.get_config_file()
    ''')
    components = {c["id"]: c for c in ext.config["components"]}
    assert isinstance(ext.enabled, gr.Checkbox) and ext.enabled.value is True and ext.closed.value is False

    def tree(node):
        props = components[node["id"]]["props"]
        return (components[node["id"]]["type"], props.get("elem_id"), [tree(child) for child in node.get("children", [])])

    layout = [tree(node) for node in ext.config["layout"]["children"]]
    accordion = layout[0]
    assert accordion[:2] == ("accordion", "rp_acc") and components[ext.enabled.accordion._id]["props"]["open"] is True
    head, body = accordion[2]
    assert head[0] == "row" and ("checkbox", "rp_acc-checkbox", []) in head[2][0][2]
    assert head[2][1] == ("column", "rp_acc-extra", [("button", "rp_tool", [])])  # extra(): beside the checkbox
    assert ("slider", "rp_strength", []) in body[2]
    assert "input-accordion" in components[ext.enabled.accordion._id]["props"]["elem_classes"]
    assert components[ext.closed.accordion._id]["props"]["open"] is False
    assert components[ext.closed._id]["props"]["elem_id"] == f"{ext.closed.accordion_id}-checkbox"
    assert components[ext.tool._id]["props"]["elem_classes"][0] == "tool"
    assert components[ext.multi._id]["props"]["elem_id"] == "rp_multi" and components[ext.multi._id]["props"]["multiselect"]
