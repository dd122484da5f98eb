"""Published A1111 extensions load unmodified: the test extension ``a1111_patterns`` is written the way
they are (``from scripts.sub import x``, ``basedir()`` data files, settings with refresh buttons, a
FastAPI route from ``on_app_started``, Gradio 3's ``_js=`` and ``gr.Box``, an ``install.py`` calling
``launch.run_pip``), loaded through ``webui.py``'s start-up with pip faked (no network)."""

from __future__ import annotations

import base64
import json
import shutil
import sys
from pathlib import Path

import gradio as gr
import pytest
from fastapi.testclient import TestClient

import webui
from modules.core.flags import parse_flags
from modules.core.paths import INSTALL_DIR
from modules.service.extensions import context
from modules.ui.server import build_app

FIXTURES = Path(__file__).parent / "fixtures"
FAKE_PIP = FIXTURES / "fake_pip"
BASE = ["--skip-torch-cuda-test", "--use-cpu", "all", "--api"]


@pytest.fixture(scope="module")
def patterns(tmp_path_factory, tiny_checkpoint):
    """Hanga started with the patterns extension (its installer run against the fake pip) and its app."""
    folder = tmp_path_factory.mktemp("compat")
    data_dir = folder / "data"
    (data_dir / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, data_dir / "models" / "Stable-diffusion" / tiny_checkpoint.name)
    shutil.copytree(FIXTURES / "extensions" / "a1111_patterns", data_dir / "extensions" / "a1111_patterns")
    pip_log = folder / "pip.jsonl"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(FAKE_PIP))
        patch.setenv("HANGA_FAKE_PIP_LOG", str(pip_log))
        flags, settings, host = webui.prepare(["--data-dir", str(data_dir), *BASE])
    service = webui.create_service(flags, settings, host)
    app = build_app(service, flags)
    return {"data": data_dir, "flags": flags, "service": service, "app": app, "client": TestClient(app),
            "pip_log": pip_log, "folder": data_dir / "extensions" / "a1111_patterns"}


@pytest.fixture
def bound(patterns):
    """The facades answer from the patterns start-up (other test modules rebind them)."""
    service = patterns["service"]
    context.bind(settings=service.settings, flags=patterns["flags"], paths=service.paths, service=service,
                 callbacks=service.extensions.callbacks, host=service.extensions)
    return patterns


def state(patterns) -> dict:
    return patterns["client"].get("/patterns/v1/state").json()


def test_install_py_runs_pip_without_a_shell_under_hangas_pins(patterns):
    extension = patterns["service"].extensions.find("a1111_patterns")
    assert extension.status == "ok", extension.errors
    assert (patterns["folder"] / "installed.txt").read_text() == "run_pip done"
    call = json.loads(patterns["pip_log"].read_text().splitlines()[0])
    constraints = Path(call["PIP_CONSTRAINT"])
    assert call["argv"] == ["install", "patterns-dependency==1.0", "--prefer-binary", "--constraint", str(constraints)]
    pins = constraints.read_text().splitlines()
    assert "gradio==6.31.0" in pins and "torch==2.13.0" in pins
    assert any(line.startswith("huggingface-hub>=") for line in pins)  # what Gradio needs: never downgraded


def test_launch_builds_pip_commands_as_argument_lists(bound, monkeypatch):
    import launch

    monkeypatch.setenv("PIP_CONSTRAINT", "/x/constraints.txt")
    assert launch.pip_command('install "a b==1; rm -rf ~" --upgrade') == [
        sys.executable, "-m", "pip", "install", "a b==1; rm -rf ~", "--upgrade", "--prefer-binary",
        "--constraint", "/x/constraints.txt"]
    assert launch.pip_command("uninstall -y thing")[3:] == ["uninstall", "-y", "thing", "--prefer-binary"]
    monkeypatch.delenv("PIP_CONSTRAINT")
    written = Path(launch.constraints_file())
    assert written.parent == bound["service"].paths.tmp and "gradio==6.31.0" in written.read_text()
    assert launch.args.api is True and launch.is_installed("gradio") and not launch.is_installed("no-such-package-x")
    context.bind(flags=parse_flags(["--listen"]))  # reachable from other machines: extension routes fed run_pip
    try:
        with pytest.raises(RuntimeError, match="enable-insecure-extension-access"):
            launch.run_pip("install thing", "thing")
    finally:
        context.bind(flags=bound["flags"])
    assert context.current().serving  # (until the server answers, an extension's own start-up may install)


def test_namespace_scripts_root_packages_basedir_and_the_extensions_package(bound):
    reply = state(bound)
    assert reply["greeting"] == "hello from scripts.pattern_lib"  # from scripts.pattern_lib.helpers import …
    assert reply["basedir"] == str(bound["folder"])
    assert reply["api"] == "pattern api"  # extensions.a1111_patterns.pattern_root.api
    assert reply["word"] == "kite"  # a setting's default read from basedir()/data/words.txt
    assert reply["gradio_is_real"] is False  # extension code sees the compat Gradio …
    assert "scripts" not in sys.modules or not hasattr(sys.modules["scripts"], "__file__") or \
        sys.modules["scripts"].__file__ is None  # … and `scripts` stays a namespace package
    from modules import scripts

    data = [entry for entry in scripts.scripts_data if entry.path.endswith("patterns.py")]
    assert data and data[0].basedir == str(bound["folder"]) and data[0].script_class.__name__ == "Patterns"
    assert [s.title() for s in scripts.scripts_txt2img.alwayson_scripts if s.title() == "Patterns"] == ["Patterns"]


def test_hanga_has_no_top_level_scripts_or_extensions_package():
    assert not (INSTALL_DIR / "scripts" / "__init__.py").exists()
    assert not (INSTALL_DIR / "extensions" / "__init__.py").exists()
    assert not (INSTALL_DIR / "scripts.py").exists()


def test_settings_from_option_info(bound):
    from modules import shared

    settings = bound["service"].settings
    word_list = settings.schema["patterns_word_list"]
    assert word_list.hint.component.__name__ == "Dropdown" and word_list.hint.refresh is not None
    assert word_list.hint.component_args() == {"choices": ["more.txt", "words.txt"]}
    assert getattr(shared.opts, "patterns_activeIn.txt2img") is True  # dotted keys
    info = shared.OptionInfo(1, "x").info("a").needs_restart().needs_reload_ui().html("<b>b</b>").link("l", "u")
    assert isinstance(info, shared.OptionInfo) and "(a)" in info.comment_after and "href='u'" in info.comment_before
    before = state(bound)["changed"]
    shared.opts.patterns_word = "lamp"  # onchange= runs
    shared.opts.onchange("patterns_word", lambda: shared.opts.data.__setitem__("patterns_folder", "seen"), call=False)
    settings.set("patterns_word", "kite")  # from the Settings page or the API: both callbacks run
    assert state(bound)["changed"] == before + 2 and shared.opts.patterns_folder == "seen"
    settings.set("patterns_folder", str(bound["folder"]))
    assert shared.opts.data_labels["patterns_word"].label == "Word that !! becomes"
    assert shared.prompt_styles.styles == {} and shared.cmd_opts.lora_dir == str(bound["data"] / "models" / "Lora")


def test_the_settings_page_shows_extension_components_and_refresh_buttons(bound):
    from modules.ui.settings_tab import build

    settings = bound["service"].settings
    with gr.Blocks() as page:
        build(settings)
    found = {block.elem_id: block for block in page.blocks.values() if getattr(block, "elem_id", None)}
    assert isinstance(found["setting_patterns_word_list"], gr.Dropdown)
    assert found["setting_patterns_word_list"].choices == [("more.txt", "more.txt"), ("words.txt", "words.txt")]
    assert isinstance(found["refresh_patterns_word_list"], gr.Button)
    assert "refresh_patterns_word" not in found


def test_on_app_started_routes_and_callbacks(bound):
    client = bound["client"]
    reply = state(bound)
    assert {"txt2img_prompt", "img2img_prompt", "txt2img_generate", "txt2img_width"} <= set(reply["components"])
    txt2img, img2img = [s for s in bound["service"].scripts.scripts if s.title() == "Patterns"]
    assert txt2img.prompt.elem_id == "txt2img_prompt" and img2img.prompt.elem_id == "img2img_prompt"  # after_component
    pasted = bound["service"].paste("a fox\nSteps: 3, Seed: 5, Size: 64x64")
    assert state(bound)["pasted"][-1] == "a fox" and pasted.fields["steps"] == 3
    from modules import infotext_utils

    assert infotext_utils.parse_generation_parameters("an owl\nSteps: 2, Seed: 5, Size: 64x64")["Patterns"] == "seen"
    assert client.get("/patterns/v1/state").status_code == 200
    page = client.get("/").text
    assert "patterns.js" in page and "a1111_patterns/style.css" in page


def test_script_hooks_and_image_saving_callbacks(bound):
    from PIL import Image

    from modules.core.generation.request import Txt2ImgRequest
    from modules.core.infotext import parse_infotext

    request = Txt2ImgRequest(prompt="a kite", steps=2, width=64, height=64, seed=3)
    outcome = bound["service"].txt2img(request, alwayson={"Patterns": ["from the test"]})
    shown = parse_infotext(outcome.processed.infotexts[0])
    assert shown["Patterns hidden"] == "from the test" and "Patterns saved" not in shown
    with Image.open(outcome.processed.saved[0]) as saved:
        from modules import images

        assert parse_infotext(images.read_info_from_image(saved)[0])["Patterns saved"] == "yes"
    assert state(bound)["saved"] == ["a kite"]
    assert state(bound)["saved_files"] == [str(outcome.processed.saved[0])]  # the path it is written to


def test_small_facades(bound):
    from modules import devices, extensions, generation_parameters_copypaste, hashes, infotext_utils, sd_hijack

    assert generation_parameters_copypaste is infotext_utils
    assert devices.device.type == "cpu"
    assert any(e.name == "a1111_patterns" for e in extensions.active())
    assert extensions.extensions_dir == str(bound["data"] / "extensions")
    db = sd_hijack.model_hijack.embedding_db
    assert db.word_embeddings == {} and db.skipped_embeddings == {}
    used, limit = sd_hijack.model_hijack.get_prompt_lengths("a red fox")
    assert (used, limit) == (3, 75)
    words = bound["folder"] / "data" / "words.txt"
    assert hashes.sha256_from_cache(str(words), "x") is None and len(hashes.sha256(str(words), "x")) == 64
    assert hashes.sha256_from_cache(str(words), "x") == hashes.calculate_sha256(str(words))
    # The patterns tab's paste buttons: two registered by hand, two by create_buttons + bind_buttons.
    bindings = infotext_utils.registered_param_bindings
    assert bindings is bound["service"].callbacks.paste_buttons
    assert [b.tabname for b in bindings] == ["txt2img", "img2img", "inpaint", "extras"]
    assert [b.paste_button.elem_id for b in bindings[2:]] == ["inpaint_tab", "extras_tab"]
    assert all(b.source_image_component is bindings[0].source_image_component for b in bindings)


def test_a_paste_button_for_an_unknown_tab_is_left_unwired(bound, caplog):
    import gradio as gr

    from modules import infotext_utils
    from modules.ui.app import build_ui

    service = bound["service"]
    before = list(service.callbacks.paste_buttons)
    with gr.Blocks():
        stray = gr.Button("Send to nowhere")
    infotext_utils.register_paste_params_button(infotext_utils.ParamBinding(stray, "train"))
    try:
        with caplog.at_level("WARNING", logger="hanga"):
            build_ui(service)  # (the patterns tab, built again, registers its buttons again)
    finally:
        service.callbacks.paste_buttons[:] = before
    assert "Paste button for 'train' ignored" in caplog.text


def encoded(path: str) -> str:
    return path.replace(".", "%2E").replace("/", "%2F")


def test_file_route_keeps_a1111_scope(bound, tmp_path):
    client, folder = bound["client"], bound["folder"]
    words = folder / "data" / "words.txt"
    assert client.get(f"/file={words.as_posix()}?123").text == "kite\nlantern\n"
    assert client.get("/file=javascript/hanga.js").status_code == 200  # relative: the install folder
    assert client.get("/file=requirements.txt").status_code == 200  # the webui root, as A1111
    (folder / ".secret").write_text("x")
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    refused = [
        f"/file={folder.as_posix()}/.secret",  # hidden files
        "/file=.git/config",  # hidden folders
        f"/file={outside.as_posix()}",  # outside every root
        "/file=/etc/passwd",
        f"/file={(bound['data'] / 'config.json').as_posix()}",
        "/file=webui-user.sh",  # may hold --gradio-auth
        f"/file={folder.as_posix()}/../../config.json",
        "/file=" + encoded(f"{folder.as_posix()}/../../config.json"),
        "/file=" + encoded("../" * 12 + "etc/passwd"),
        "/file=javascript/../../" + outside.relative_to(outside.anchor).as_posix(),
    ]
    for url in refused:
        assert client.get(url).status_code == 404, url
    allowed_dir = tmp_path / "allowed"
    allowed_dir.mkdir()
    (allowed_dir / "ok.txt").write_text("fine")
    flags = parse_flags([*BASE, "--gradio-allowed-path", str(allowed_dir)])
    other = TestClient(build_app(bound["service"], flags))
    assert other.get(f"/file={(allowed_dir / 'ok.txt').as_posix()}").text == "fine"


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_extension_routes_when_reachable_from_other_machines(bound):
    service = bound["service"]
    far, near = ("10.1.2.3", 5000), ("127.0.0.1", 5000)
    local = TestClient(build_app(service, parse_flags(BASE)), client=far)
    assert local.get("/patterns/v1/state").status_code == 200  # loopback-only server: as A1111
    listening = build_app(service, parse_flags([*BASE, "--listen", "--api-auth", "api:key"]))
    assert TestClient(listening, client=far).get("/patterns/v1/state").status_code == 403
    assert TestClient(listening, client=near).get("/patterns/v1/state").status_code == 200
    assert TestClient(listening, client=far).get("/patterns/v1/state", headers=basic("api", "key")).status_code == 200
    assert TestClient(listening, client=far).get("/patterns/v1/state", headers=basic("api", "no")).status_code == 403
    assert TestClient(listening, client=far).get("/file=javascript/hanga.js").status_code == 200  # the page's files
    insecure = build_app(service, parse_flags([*BASE, "--listen", "--enable-insecure-extension-access"]))
    assert TestClient(insecure, client=far).get("/patterns/v1/state").status_code == 200
    login = build_app(service, parse_flags([*BASE, "--listen", "--gradio-auth", "me:pw"]))
    anonymous = TestClient(login, client=far)
    assert anonymous.get("/patterns/v1/state").status_code == 403
    assert anonymous.get("/file=javascript/hanga.js").status_code == 403  # the page's login covers /file=
    assert anonymous.get("/hanga/opts").status_code == 403
    assert anonymous.post("/login", data={"username": "me", "password": "pw"}).status_code == 200
    assert anonymous.get("/patterns/v1/state").status_code == 200  # the UI's login cookie
    assert anonymous.get("/file=javascript/hanga.js").status_code == 200
    assert anonymous.get("/hanga/opts").json()["patterns_word"] == "kite"


def test_a_script_whose_ui_fails_is_left_out_of_the_page(caplog):
    from modules import scripts
    from modules.service.scripts.api import ScriptRegistry
    from modules.ui import scripts_ui

    class Broken(scripts.Script):
        def title(self):
            return "Broken always"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def ui(self, is_img2img):
            raise RuntimeError("ui bug")

    class BrokenToo(Broken):
        def title(self):
            return "Broken selectable"

        def show(self, is_img2img):
            return True

    class Fine(scripts.Script):
        def title(self):
            return "Fine"

        def ui(self, is_img2img):
            return [gr.Textbox("x")]

    with gr.Blocks():
        controls = scripts_ui.build(ScriptRegistry([Broken(), BrokenToo(), Fine()]), is_img2img=False)
    assert controls.always_titles == [] and controls.titles == ["Fine"] and len(controls.controls[0]) == 1
    assert [choice for choice, _ in controls.dropdown.choices] == ["None", "Fine"]
    assert "Script 'Broken always' left out of the txt2img tab" in caplog.text
