"""The Settings page's extras (Defaults view, system info) and ``ui-config.json``."""

from __future__ import annotations

import json

import gradio as gr

from modules.core.flags import parse_flags
from modules.service.sysinfo import sysinfo
from modules.ui.app import build_ui
from modules.ui.settings_tab import defaults_html
from modules.ui.ui_config import _components


def component(demo: gr.Blocks, elem_id: str):
    return next(c for c in _components(demo) if getattr(c, "elem_id", None) == elem_id)


def test_ui_config_sets_defaults_and_limits_and_is_completed(service):
    path = service.paths.data / "ui-config.json"
    path.write_text(json.dumps({"txt2img/Sampling steps/value": 33, "txt2img/Width/maximum": 1024,
                                "txt2img/Sampling method/value": "No such sampler", "img2img/Denoising strength/value": 0.5,
                                "txt2img/Height/value": 99999, "user/kept/value": 1}))
    demo = build_ui(service)
    assert component(demo, "txt2img_steps").value == 33
    assert component(demo, "txt2img_width").maximum == 1024
    assert component(demo, "txt2img_sampling").value != "No such sampler"  # not a choice: ignored
    assert component(demo, "txt2img_height").value != 99999  # outside the slider: ignored
    assert component(demo, "img2img_denoising_strength").value == 0.5
    written = json.loads(path.read_text())
    assert written["txt2img/Sampling steps/value"] == 33 and written["user/kept/value"] == 1
    assert written["txt2img/CFG Scale/value"] == component(demo, "txt2img_cfg_scale").value  # added with its default
    assert "img2img/Sampling steps/maximum" in written


def test_a_corrupt_ui_config_is_kept_aside(service):
    path = service.paths.data / "ui-config.json"
    path.write_text("{not json")
    build_ui(service)
    assert list(service.paths.data.glob("ui-config.json.corrupt-*")) and json.loads(path.read_text())


def test_defaults_view_and_system_info(service):
    assert "Every setting has its default value" in defaults_html(service.settings)
    service.settings.set("CLIP_stop_at_last_layers", 2)
    shown = defaults_html(service.settings)
    assert "CLIP_stop_at_last_layers" in shown and "eta_ddim" not in shown
    info = sysinfo(service, parse_flags(["--api-auth", "me:secret", "--listen"]))
    assert info["flags"]["api_auth"] == "(set)" and "secret" not in json.dumps(info, default=str)
    assert info["settings_changed"] == {"CLIP_stop_at_last_layers": 2}
    assert info["packages"]["torch"] and info["device"] == "cpu" and info["flags"]["listen"] is True


def test_style_library_edits_styles_csv_and_applies_styles(service):
    from modules.core.generation.request import Txt2ImgRequest

    styles = service.styles
    assert styles.names() == []
    styles.save("film", "{prompt}, film grain", "digital")
    styles.save("warm", "warm light", "")
    path = service.paths.styles_file
    first = path.read_bytes()
    assert first.startswith(b"\xef\xbb\xbf") and styles.names() == ["film", "warm"]
    styles.save("warm", "golden hour", "cold")  # changed: the previous file is kept as .bak
    assert path.with_name("styles.csv.bak").read_bytes() == first
    request = styles.apply(Txt2ImgRequest(prompt="a boat", negative_prompt="blurry"), ["warm", "nope", "film"])
    assert (request.prompt, request.negative_prompt) == ("a boat, golden hour, film grain", "blurry, cold, digital")
    assert styles.delete("film") and not styles.delete("film") and styles.names() == ["warm"]
    import pytest

    with pytest.raises(ValueError, match="name"):
        styles.save("  ", "x", "")


def test_quicksettings_list_puts_settings_in_the_bar_instead_of_the_page(service):
    service.settings.set("quicksettings_list", ["sd_model_checkpoint", "CLIP_stop_at_last_layers", "no_such_key"])
    demo = build_ui(service)
    bar = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "quicksettings")
    ids = [getattr(c, "elem_id", None) for c in _components(bar)]
    assert ids[0] == "setting_sd_model_checkpoint" and "setting_CLIP_stop_at_last_layers" in ids
    everywhere = [c for c in _components(demo) if getattr(c, "elem_id", None) == "setting_CLIP_stop_at_last_layers"]
    assert len(everywhere) == 1  # not on the Settings page twice
    assert component(demo, "setting_eta_ddim") is not None  # the rest stay on the page
    quick = component(demo, "setting_CLIP_stop_at_last_layers")
    store = next(f.fn for f in demo.fns.values() if list(f.inputs) == [quick])
    store(2.0)  # a slider's float for an integer setting
    assert service.settings.get("CLIP_stop_at_last_layers") == 2
