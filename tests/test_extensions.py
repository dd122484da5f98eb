"""Drop-in extensions: test extensions (``tests/fixtures/extensions``) in ``<data>/extensions``,
loaded the way ``webui.py`` loads them — install.py, preload.py, scripts, callbacks, settings."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import webui
from modules.core.generation.request import Txt2ImgRequest
from modules.core.infotext import parse_infotext
from modules.service.extensions import context
from modules.service.extensions.install import folder_name, install_from_url
from modules.ui.server import build_app

FIXTURES = Path(__file__).parent / "fixtures" / "extensions"
BASE = ["--skip-torch-cuda-test", "--use-cpu", "all", "--api"]


def with_extensions(data_dir: Path, *names: str) -> Path:
    for name in names:
        shutil.copytree(FIXTURES / name, data_dir / "extensions" / name)
    return data_dir


def start(data_dir: Path, *flags: str):
    """webui.main's start-up without serving: prepare (install.py, preload.py), then the service."""
    parsed, settings, host = webui.prepare(["--data-dir", str(data_dir), *BASE, *flags])
    return parsed, webui.create_service(parsed, settings, host)


def request(**fields) -> Txt2ImgRequest:
    return Txt2ImgRequest(**{"prompt": "a kite", "steps": 2, "width": 64, "height": 64, "seed": 3, **fields})


@pytest.fixture
def loaded(data_dir):
    with_extensions(data_dir, "always-key", "selectable-one", "ui-bits", "broken", "broken-install", "ordered")
    flags, service = start(data_dir, "--ui-bits-flag", "on")
    return data_dir, flags, service


def test_a_broken_extension_is_reported_and_the_others_load(loaded):
    _, _, service = loaded
    host = service.extensions
    assert [e.name for e in host.extensions if not e.is_builtin] == ["always-key", "broken", "broken-install", "ordered", "selectable-one",
                                                 "ui-bits"]
    broken = host.find("broken")
    assert broken.status == "error" and "RuntimeError: this extension is broken on purpose" in broken.errors[0]
    assert "Traceback" in broken.errors[0]
    failed = host.find("broken-install")
    assert not failed.enabled and "install.py failed" in failed.errors[0] and "cannot install" in failed.errors[0]
    assert "Never loaded" not in service.scripts.titles(False)  # a failed installer leaves the extension off
    assert host.find("ui-bits").status == "ok" and host.find("always-key").scripts == ["Always key"]


def test_install_py_runs_with_launch_importable_and_preload_adds_flags(loaded):
    data_dir, flags, _ = loaded
    marker = data_dir / "extensions" / "ui-bits" / "installed.txt"
    assert marker.read_text() == "launch.is_installed(torch)=True"
    assert flags.ui_bits_flag == "on"


def test_skip_install_runs_no_installer(data_dir):
    with_extensions(data_dir, "ui-bits", "broken-install")
    _, service = start(data_dir, "--skip-install")
    assert not (data_dir / "extensions" / "ui-bits" / "installed.txt").exists()
    assert service.extensions.find("broken-install").enabled


def test_scripts_are_listed_per_tab_and_ordered_by_metadata(loaded):
    _, _, service = loaded
    titles = service.scripts.titles(False)
    assert titles[-3:] == ["Ordered Z", "Ordered A", "Double steps"]  # z_last before a_first (After=)
    assert [s.title() for s in service.scripts.always_on(False)] == ["Always key"]
    assert [s.title() for s in service.scripts.always_on(True)] == ["Always key"]
    txt2img, img2img = [s for s in service.scripts.scripts if s.title() == "Always key"]
    assert (txt2img.is_img2img, img2img.is_img2img) == (False, True) and txt2img is not img2img
    assert txt2img.elem_id("enabled") == "script_txt2img_always_key_enabled"


def test_an_always_on_script_adds_its_infotext_key(loaded):
    _, _, service = loaded
    on = service.txt2img(request(), alwayson={"always key": [True, "yes"]})
    assert parse_infotext(on.processed.infotexts[0])["Test key"] == "yes"
    assert on.processed.comments == "always-key saw 1 image(s)"
    two = service.txt2img(request(n_iter=2, seed=10), alwayson={"always key": [True, "yes"]})  # per-batch hooks
    assert parse_infotext(two.processed.infotexts[-1])["Batches seen"] == "b0:10;p0;b1:11;p1;"
    off = service.txt2img(request())  # no args given: the script's defaults (checkbox off)
    assert "Test key" not in off.processed.infotexts[0]
    inverted = service.txt2img(request(), alwayson={"Always key": [True, "invert"]})  # postprocess_image
    from PIL import ImageChops, ImageOps

    assert ImageChops.difference(inverted.processed.images[0], ImageOps.invert(off.processed.images[0])).getbbox() is None
    with pytest.raises(ValueError, match="alwayson_scripts"):
        service.txt2img(request(), alwayson={"ADetailer": []})


def test_a_selectable_extension_script_runs(loaded):
    _, _, service = loaded
    outcome = service.txt2img(request(), script=("Double steps", ["from the test"]))
    params = parse_infotext(outcome.processed.infotexts[0])
    assert params["Steps"] == "4" and params["Script note"] == "from the test" and params["Script saw img2img"] == "False"


def test_settings_callbacks_facades_and_routes(loaded):
    data_dir, flags, service = loaded
    settings = service.settings
    assert settings.get("ui_bits_greeting") == "hello" and settings.sections["ui_bits"] == "UI bits"
    assert settings.schema["ui_bits_mode"].choices == ("calm", "loud")
    from modules import shared

    assert shared.opts.ui_bits_greeting == "hello" and getattr(shared.opts, "no_such_key", "dflt") == "dflt"
    shared.opts.ui_bits_greeting = "bonjour"
    assert json.loads((data_dir / "config.json").read_text())["ui_bits_greeting"] == "bonjour"
    assert shared.cmd_opts.ui_bits_flag == "on" and shared.opts.data["CLIP_stop_at_last_layers"] == 1
    assert shared.cmd_opts.embeddings_dir == str(data_dir / "embeddings") and flags.embeddings_dir is None  # A1111's defaults
    client = TestClient(build_app(service, flags))
    ping = client.get("/ui_bits/ping").json()  # on_app_started added this route
    assert ping["greeting"] == "bonjour" and ping["flag"] == "on"
    assert ping["basedir"] == str(data_dir / "extensions" / "ui-bits")  # scripts.basedir() while importing
    options = client.get("/sdapi/v1/options").json()
    assert options["ui_bits_mode"] == "calm"
    assert client.post("/sdapi/v1/options", json={"ui_bits_mode": "shouting"}).status_code == 422
    assert client.post("/sdapi/v1/options", json={"ui_bits_mode": "loud"}).status_code == 200
    body = {"prompt": "a kite", "steps": 2, "width": 64, "height": 64, "alwayson_scripts": {"Always Key": {"args": [True, "api"]}}}
    info = json.loads(client.post("/sdapi/v1/txt2img", json=body).json()["info"])
    assert "Test key: api" in info["infotexts"][0] and ping["models"] == 0
    assert shared.sd_model is not None  # a model is loaded now, and on_model_loaded heard of it
    ping = client.get("/ui_bits/ping").json()
    assert ping["models"] == 1
    # A1111's hidden option: the loaded checkpoint's full sha256, set before on_model_loaded runs.
    checkpoint = service.models.loaded.info.path
    assert ping["hashes"] == [hashlib.sha256(checkpoint.read_bytes()).hexdigest()] == [shared.opts.sd_checkpoint_hash]
    assert client.get("/sdapi/v1/options").json()["sd_checkpoint_hash"] == ping["hashes"][0]
    body_override = {**body, "override_settings": {"sd_checkpoint_hash": "0" * 64}}
    refused = client.post("/sdapi/v1/txt2img", json=body_override)
    assert refused.status_code == 422 and "sd_checkpoint_hash" in refused.text
    info = client.get("/sdapi/v1/script-info").json()
    assert {"name": "always key", "is_alwayson": True, "is_img2img": False} == {
        k: v for k, v in next(s for s in info if s["name"] == "always key").items() if k != "args"}
    assert "always-key" in [entry["name"] for entry in client.get("/sdapi/v1/extensions").json()]


def test_extension_files_are_served_and_nothing_else(loaded):
    data_dir, flags, service = loaded
    client = TestClient(build_app(service, flags))
    page = client.get("/").text
    script = data_dir / "extensions" / "ui-bits" / "javascript" / "ui_bits.js"
    assert f"file={script.as_posix()}?" in page and "window.opts = {" in page and "hanga.js" in page
    assert client.get(f"/file={script.as_posix()}?123").text.startswith("onUiLoaded")
    assert client.get(f"/file={(data_dir / 'extensions' / 'ui-bits' / 'style.css').as_posix()}").status_code == 200
    assert client.get("/file=javascript/hanga.js").status_code == 200  # relative to the install folder
    assert client.get(f"/file={(data_dir / 'config.json').as_posix()}").status_code == 404
    assert client.get(f"/file={script.parent.as_posix()}/../../../config.json").status_code == 404
    assert client.get("/file=/etc/passwd").status_code == 404


def test_disabled_extensions_are_not_loaded(data_dir):
    with_extensions(data_dir, "always-key", "ui-bits")
    (data_dir / "config.json").write_text(json.dumps({"disabled_extensions": ["always-key"]}))
    _, service = start(data_dir, "--skip-install")
    assert not service.extensions.find("always-key").enabled and service.scripts.always_on(False) == []
    _, service = start(data_dir, "--skip-install", "--disable-extra-extensions")
    assert not any(e.enabled for e in service.extensions.extensions if not e.is_builtin)
    assert "ui_bits_greeting" not in service.settings.schema and context.current().service is service


def git(folder: Path, *args: str) -> str:
    import subprocess

    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=folder, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_install_from_a_git_url(tmp_path, data_dir):
    source = tmp_path / "sd-webui-sample"
    shutil.copytree(FIXTURES / "always-key", source)
    for command in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "first"]):
        git(source, *command)
    url = source.as_uri() + "/"
    assert folder_name("https://github.com/someone/sd-webui-thing.git") == "sd-webui-thing"
    target = install_from_url(url, data_dir / "extensions", data_dir / "tmp", [])
    assert target == data_dir / "extensions" / "sd-webui-sample" and (target / "scripts" / "always_key.py").is_file()
    with pytest.raises(ValueError, match="already exists"):
        install_from_url(url, data_dir / "extensions", data_dir / "tmp", [])
    with pytest.raises(ValueError, match="git URL"):
        install_from_url("ftp://example.invalid/x", data_dir / "extensions", data_dir / "tmp", [])
    _, service = start(data_dir, "--skip-install")
    assert service.extensions.find("sd-webui-sample").remote == url


def test_extension_actions_are_refused_when_reachable_from_other_machines():
    from modules.core.flags import parse_flags
    from modules.ui.server import extension_actions_allowed

    assert extension_actions_allowed(parse_flags([]))
    for flag in (["--listen"], ["--share"], ["--server-name", "box.local"]):
        assert not extension_actions_allowed(parse_flags(flag))
        assert extension_actions_allowed(parse_flags([*flag, "--enable-insecure-extension-access"]))


def test_small_facades_answer_from_the_running_host(loaded):
    data_dir, _, service = loaded
    from modules import generation_parameters_copypaste, infotext_utils, paths, sd_models

    text = "a cat\nNegative prompt: dog\nSteps: 3, Seed: 5, Size: 64x72"
    params = infotext_utils.parse_generation_parameters(text)
    assert params["Prompt"] == "a cat" and params["Size-2"] == "72" and params["Steps"] == "3"
    assert generation_parameters_copypaste.parse_generation_parameters is infotext_utils.parse_generation_parameters
    assert paths.data_path == str(data_dir) and paths.extensions_dir == str(data_dir / "extensions")
    assert paths.models_path == str(data_dir / "models")
    assert sd_models.model_data.get_sd_model() is None
    service.txt2img(request())
    assert sd_models.model_data.sd_model is service.models.loaded.model


def test_images_facade_saves_with_the_infotext_and_reads_it_back(loaded, tmp_path):
    from PIL import Image

    from modules import images

    picture = Image.new("RGB", (32, 24), (9, 8, 7))
    first, txt = images.save_image(picture, tmp_path / "out", "", seed=42, prompt="a red fox", info="a red fox\nSteps: 3")
    second, _ = images.save_image(picture, tmp_path / "out", "ext", seed=43, prompt="x", extension="webp", info="x\nSteps: 2")
    assert Path(first).name == "00000-42-a red fox.png" and txt is None
    assert Path(second).name == "00001-ext-43-x.webp"
    with Image.open(first) as saved, Image.open(second) as webp:
        assert images.read_info_from_image(saved)[0] == "a red fox\nSteps: 3"
        assert images.read_info_from_image(webp)[0] == "x\nSteps: 2"


def test_check_for_updates_fetches_and_fast_forwards(tmp_path, data_dir):
    from modules.service.extensions.discovery import discover
    from modules.service.extensions.install import check_for_update, update

    source = tmp_path / "sd-webui-sample"
    shutil.copytree(FIXTURES / "always-key", source)
    for command in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "first"]):
        git(source, *command)
    install_from_url(source.as_uri(), data_dir / "extensions", data_dir / "tmp", [])
    installed = discover(tmp_path / "none", data_dir / "extensions", set())[0]
    assert check_for_update(installed) == "latest"
    (source / "NEWS.md").write_text("a new version")
    git(source, "add", ".")
    git(source, "commit", "-qm", "second")
    assert check_for_update(installed) == "behind"
    assert update(installed) == git(source, "rev-parse", "HEAD")
    assert (data_dir / "extensions" / "sd-webui-sample" / "NEWS.md").read_text() == "a new version"
    assert check_for_update(installed) == "latest"
    plain = discover(tmp_path / "none", FIXTURES, set())[0]
    assert check_for_update(plain).startswith("unknown")


def test_listening_without_a_login_is_warned_about():
    from modules.core.flags import parse_flags
    from modules.ui.server import exposure_warnings

    assert exposure_warnings(parse_flags(["--api"])) == []  # loopback only
    both = exposure_warnings(parse_flags(["--listen", "--api"]))
    assert len(both) == 2 and "--gradio-auth" in both[0] and "--api-auth" in both[1]
    assert exposure_warnings(parse_flags(["--listen", "--gradio-auth", "a:b", "--api", "--api-auth", "c:d"])) == []
    assert exposure_warnings(parse_flags(["--server-name", "0.0.0.0", "--nowebui"])) == [
        "the API is reachable from other machines WITHOUT A LOGIN. Add --api-auth user:password."]
