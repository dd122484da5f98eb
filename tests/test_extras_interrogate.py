"""Issue 10 through the service and the API: upscaler files in the user's folders (names as A1111
shows them, the restricted loader, the hires fix, SD upscale, the Extras output that keeps the
original parameters), and interrogation with DeepBooru and CLIP from tiny models."""

from __future__ import annotations

import base64
import io
import json
import shutil

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import webui
from modules.core.flags import parse_flags
from modules.core.generation.request import InvalidRequest, Txt2ImgRequest
from modules.core.png_meta import read_infotext
from modules.core.upscalers.compact import SRVGGNetCompact
from modules.core.upscalers.rrdb import RRDBNet
from modules.service.extras import ExtrasRequest
from modules.ui.server import build_app
from tests.test_clip_interrogate import _build_blip, _build_clip
from tests.test_deepbooru import controlled_model, save_model
from tests.test_upscalers import old_esrgan_layout, randomized

PARAMETERS = "a lighthouse at dusk\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 40x24"


def source_png(size=(40, 24)) -> bytes:
    picture = Image.new("RGB", size)
    picture.putdata([((x * 7) % 256, (y * 11) % 256, (x * y) % 256) for y in range(size[1]) for x in range(size[0])])
    info = PngInfo()
    info.add_text("parameters", PARAMETERS)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_checkpoint):
    folder = tmp_path_factory.mktemp("extras") / "data"
    models = folder / "models"
    (models / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, models / "Stable-diffusion" / tiny_checkpoint.name)
    for name in ("ESRGAN", "RealESRGAN", "SwinIR", "deepbooru"):
        (models / name).mkdir()
    esrgan = randomized(RRDBNet(nf=8, nb=2, gc=4, num_upsamples=2), seed=3)
    torch.save(old_esrgan_layout(esrgan.state_dict(), 2, 2), models / "ESRGAN" / "4x-Tiny.pth")
    plus = randomized(RRDBNet(nf=8, nb=1, gc=4, num_upsamples=2), seed=4)
    torch.save({"params_ema": plus.state_dict()}, models / "RealESRGAN" / "RealESRGAN_x4plus.pth")
    compact = randomized(SRVGGNetCompact(num_feat=8, num_conv=2, scale=4), seed=5)
    torch.save({"params": compact.state_dict()}, models / "RealESRGAN" / "realesr-general-x4v3.pth")
    save_model(controlled_model({"1girl": 0.9, "blue_sky": 0.8, "cat_(animal)": 0.7, "rating:safe": 0.99, "dog": 0.1}),
               models / "deepbooru" / "model-resnet_custom_v3.pt")
    _build_blip(models / "BLIP" / "tiny")
    _build_clip(models / "CLIP" / "tiny")
    return folder


@pytest.fixture(scope="module")
def app(data):
    flags = parse_flags(["--api", "--nowebui", "--data-dir", str(data), "--skip-torch-cuda-test", "--use-cpu", "all"])
    service = webui.create_service(flags)
    return service, TestClient(build_app(service, flags))


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_upscaler_files_are_listed_by_a1111s_names(app, data):
    listed = {item["name"]: item for item in app[1].get("/sdapi/v1/upscalers").json()}
    assert list(listed)[:3] == ["None", "Lanczos", "Nearest"]
    assert listed["R-ESRGAN 4x+"]["model_name"] == "RealESRGAN"
    assert listed["R-ESRGAN 4x+"]["model_path"].endswith("RealESRGAN_x4plus.pth")
    assert listed["R-ESRGAN General 4xV3"]["scale"] == 4
    assert listed["4x-Tiny"]["model_name"] == "ESRGAN" and listed["4x-Tiny"]["scale"] == 4


@pytest.mark.parametrize("name", ["4x-Tiny", "R-ESRGAN 4x+", "R-ESRGAN General 4xV3"])
def test_extra_single_image_upscales_with_a_model_and_keeps_the_parameters(app, name):
    response = app[1].post("/sdapi/v1/extra-single-image", json={
        "image": base64.b64encode(source_png()).decode(), "upscaling_resize": 2, "upscaler_1": name})
    assert response.status_code == 200, response.text
    picture = decode(response.json()["image"])
    assert picture.size == (80, 48)
    assert picture.info["parameters"] == PARAMETERS
    assert f"Postprocess upscaler: {name}" in picture.info["postprocessing"]
    # The model really ran: it differs from a plain Lanczos resize of the same picture.
    lanczos = Image.open(io.BytesIO(source_png())).convert("RGB").resize((80, 48), Image.Resampling.LANCZOS)
    assert list(picture.convert("RGB").getdata()) != list(lanczos.getdata())


def test_model_upscale_equals_the_models_own_output_then_lanczos(app, data):
    """One ×4 pass of the network, then Lanczos down to ×2 (A1111's Upscaler.upscale)."""
    from modules.core.upscalers import build_upscaler, upscale_image
    from modules.core.safe_load import load_state_dict

    service = app[0]
    source = Image.open(io.BytesIO(source_png())).convert("RGB")
    got = service.upscalers.upscale(source, 2, "R-ESRGAN 4x+")
    model, scale, _ = build_upscaler(load_state_dict(data / "models" / "RealESRGAN" / "RealESRGAN_x4plus.pth"))
    expected = upscale_image(model, scale, source, tile=192, overlap=8).resize((80, 48), Image.Resampling.LANCZOS)
    assert list(got.getdata()) == list(expected.getdata())


def test_extras_saves_a_png_with_the_original_parameters_and_the_extras_text(app, data):
    service = app[0]
    source = Image.open(io.BytesIO(source_png()))
    request = ExtrasRequest(resize_mode=1, width=96, height=64, crop=True, upscaler_1="R-ESRGAN 4x+",
                            upscaler_2="Lanczos", upscaler_2_visibility=0.5)
    (picture, text, path), = service.extras([source], request, save=True)
    assert path.parent == data / "outputs" / "extras-images" and path.suffix == ".png"
    with Image.open(path) as saved:
        assert saved.size == (96, 64)
        assert read_infotext(saved)[0] == PARAMETERS  # a reader of generation parameters still finds them
        assert saved.info["extras"] == text
    assert text == ("Postprocess upscale to: 96x64, Postprocess crop to: 96x64, Postprocess upscaler: R-ESRGAN 4x+, "
                    "Postprocess upscaler 2: Lanczos")


def test_hires_fix_and_sd_upscale_use_upscaler_models(app):
    service, client = app
    response = client.post("/sdapi/v1/txt2img", json={
        "prompt": "a cat", "width": 64, "height": 64, "steps": 2, "seed": 9, "enable_hr": True, "hr_scale": 2,
        "hr_upscaler": "4x-Tiny", "denoising_strength": 0.5})
    assert response.status_code == 200, response.text
    assert decode(response.json()["images"][0]).size == (128, 128)
    assert "Hires upscaler: 4x-Tiny" in json.loads(response.json()["info"])["infotexts"][0]
    sd_upscale = next(s for s in service.scripts.scripts if s.title() == "SD upscale")
    assert "R-ESRGAN 4x+" in sd_upscale.ui(True)[2].choices
    xyz = next(s for s in service.scripts.scripts if s.title() == "X/Y/Z plot")
    hires_axis = next(axis for axis in xyz.axis_options if axis.label == "Hires upscaler")
    assert "R-ESRGAN General 4xV3" in hires_axis.choices()


def test_unknown_and_hostile_upscalers_are_refused(app, data, tmp_path):
    service, client = app
    response = client.post("/sdapi/v1/extra-single-image", json={
        "image": base64.b64encode(source_png()).decode(), "upscaler_1": "../ESRGAN/4x-Tiny"})
    assert response.status_code == 422 and "R-ESRGAN 4x+" in response.json()["errors"]  # lists what there is
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "width": 64, "height": 64, "steps": 1,
                                                      "enable_hr": True, "hr_upscaler": "4x-Missing"})
    assert response.status_code == 422 and "hr_upscaler" in response.json()["errors"]
    marker = tmp_path / "MARKER"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    evil = data / "models" / "ESRGAN" / "4x-Evil.pth"
    torch.save({"params": Payload()}, evil)
    try:
        with pytest.raises(InvalidRequest, match=r"4x-Evil \(4x-Evil\.pth\) cannot be used"):
            service.upscalers.upscale(Image.new("RGB", (16, 16)), 2, "4x-Evil")
        assert not marker.exists()
        assert service.upscalers.upscale(Image.new("RGB", (16, 16)), 2, "4x-Tiny").size == (32, 32)  # goes on
    finally:
        evil.unlink()


def test_interrogate_deepbooru_through_the_api(app):
    service, client = app
    image = base64.b64encode(source_png()).decode()
    response = client.post("/sdapi/v1/interrogate", json={"image": image, "model": "deepdanbooru"})
    assert response.status_code == 200, response.text
    assert response.json() == {"caption": "1girl, blue sky, cat \\(animal\\)"}
    service.settings.update({"deepbooru_sort_alpha": False, "deepbooru_use_spaces": False,
                             "interrogate_deepbooru_score_threshold": 0.75, "interrogate_return_ranks": True})
    try:
        caption = client.post("/sdapi/v1/interrogate", json={"image": image, "model": "deepdanbooru"}).json()["caption"]
        assert caption == "(1girl:0.900), (blue_sky:0.800)"
    finally:
        service.settings.update({"deepbooru_sort_alpha": True, "deepbooru_use_spaces": True,
                                 "interrogate_deepbooru_score_threshold": 0.5, "interrogate_return_ranks": False})
    assert service.interrogator._deepbooru is None  # let go after use (interrogate_keep_models_in_memory off)


def test_interrogate_clip_through_the_api(app):
    service, client = app
    image = base64.b64encode(source_png()).decode()
    response = client.post("/sdapi/v1/interrogate", json={"image": image})  # model defaults to clip
    assert response.status_code == 200, response.text
    caption = response.json()["caption"]
    parts = caption.split(", ")
    assert len(parts) >= 5  # BLIP's caption, then one phrase per default category (artists, flavors, …)
    lists = service.interrogator.paths.install / "modules" / "core" / "interrogate" / "lists"
    for category, phrase in zip(("artists", "flavors", "mediums", "movements"), parts[-4:]):
        assert phrase in (lists / f"{category}.txt").read_text().splitlines()
    service.settings.set("interrogate_clip_skip_categories", ["artists", "flavors", "mediums", "movements"])
    try:
        only_caption = client.post("/sdapi/v1/interrogate", json={"image": image}).json()["caption"]
    finally:
        service.settings.set("interrogate_clip_skip_categories", [])
    assert only_caption == ", ".join(parts[:-4])


def test_interrogate_refuses_unknown_models_and_names_missing_files(app, data):
    client = app[1]
    image = base64.b64encode(source_png()).decode()
    response = client.post("/sdapi/v1/interrogate", json={"image": image, "model": "wd14"})
    assert response.status_code == 422 and "clip, deepdanbooru" in response.json()["errors"]
    moved = data / "models" / "deepbooru-away"
    (data / "models" / "deepbooru").rename(moved)
    try:
        response = client.post("/sdapi/v1/interrogate", json={"image": image, "model": "deepdanbooru"})
        assert response.status_code == 422
        assert "model-resnet_custom_v3.pt" in response.json()["errors"] and "models/deepbooru" in response.json()["errors"]
    finally:
        moved.rename(data / "models" / "deepbooru")


def test_builtin_upscalers_still_work_without_model_folders(service):
    outcome = service.txt2img(Txt2ImgRequest(prompt="x", width=64, height=64, steps=1, enable_hr=True, hr_scale=1.5,
                                             hr_upscaler="Lanczos", denoising_strength=0.3))
    assert outcome.processed.images[0].size == (96, 96)
    assert service.upscalers.names() == ["None", "Lanczos", "Nearest"]
