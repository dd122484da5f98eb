"""Hostile requests: every one is refused with a 4xx whose message names the field and what is
allowed, nothing is written outside its folder, and the server goes on answering.

The limits (size, steps, batch, prompt length, upload size, image pixels) are settings a request
cannot override; folder settings arriving over the API must stay inside the data folder."""

from __future__ import annotations

import base64
import io
import json
import shutil
import struct
import zlib

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import webui
from modules.core.flags import parse_flags
from modules.core.generation.request import InvalidRequest, Txt2ImgRequest
from modules.core.image_input import ImageTooLarge, read_image
from modules.ui.server import build_app


def bomb_png(width: int = 10_000, height: int = 10_000) -> bytes:
    """A real, decodable greyscale PNG of width×height zeros: about 100 kB on disk, 100 MB decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0 + the pixels
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def png(size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_checkpoint):
    folder = tmp_path_factory.mktemp("hostile") / "data"
    (folder / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, folder / "models" / "Stable-diffusion" / tiny_checkpoint.name)
    return folder


@pytest.fixture(scope="module")
def app(data):
    flags = parse_flags(["--api", "--data-dir", str(data), "--skip-torch-cuda-test", "--use-cpu", "all"])
    service = webui.create_service(flags)
    # Loaded first, as the server preloads it at start: the first generation then changes no setting
    # (loading sets sd_checkpoint_hash), so the tests can ask that a refused request changes none.
    service.select_checkpoint(service.models.titles()[0])
    return service, TestClient(build_app(service, flags))


@pytest.fixture(scope="module")
def client(app):
    return app[1]


SMALL = {"prompt": "a cat", "width": 64, "height": 64, "steps": 1, "seed": 3}
BOMB = b64(bomb_png())

# (route, body, the field the message must name, a phrase it must contain)
HOSTILE = [
    ("txt2img", {**SMALL, "width": 100_000}, "width", "between 64 and 8192"),
    ("txt2img", {**SMALL, "width": 4104}, "width", "at most 4096"),
    ("txt2img", {**SMALL, "height": -64}, "height", "between 64 and 8192"),
    ("txt2img", {**SMALL, "width": 65}, "width", "multiple of 8"),
    ("txt2img", {**SMALL, "steps": 0}, "steps", "between 1 and 500"),
    ("txt2img", {**SMALL, "steps": 151}, "steps", "at most 150"),
    ("txt2img", {**SMALL, "steps": 10**12}, "steps", "between 1 and 500"),
    ("txt2img", {**SMALL, "batch_size": 17}, "batch_size", "at most 16"),
    ("txt2img", {**SMALL, "n_iter": 101}, "n_iter", "at most 100"),
    ("txt2img", {**SMALL, "seed": 2**64}, "seed", "between -1 and"),
    ("txt2img", {**SMALL, "cfg_scale": 1e300}, "cfg_scale", "between 0 and 100"),
    ("txt2img", {**SMALL, "prompt": "a" * 20_001}, "prompt", "at most 20000 are allowed"),
    ("txt2img", {**SMALL, "negative_prompt": "(" * 20_001}, "negative_prompt", "at most 20000"),
    ("txt2img", {**SMALL, "prompt": ["a", "list"]}, "prompt", "valid string"),
    ("txt2img", {**SMALL, "sampler_name": "../../etc/passwd"}, "sampler_name", "../../etc/passwd"),
    ("txt2img", {**SMALL, "scheduler": "<script>"}, "scheduler", "<script>"),
    ("txt2img", {**SMALL, "width": 1024, "enable_hr": True, "hr_scale": 8}, "hr_scale", "8192x512"),
    ("txt2img", {**SMALL, "enable_hr": True, "hr_upscaler": "../ESRGAN/x.pth"}, "hr_upscaler", "must be one of"),
    ("txt2img", {**SMALL, "enable_hr": True, "hr_checkpoint_name": "../../../x.ckpt"}, "hr_checkpoint_name", "not found"),
    ("txt2img", {**SMALL, "refiner_checkpoint": "/etc/passwd"}, "refiner_checkpoint", "not found"),
    ("txt2img", {**SMALL, "override_settings": {"limit_max_steps": 500}}, "limit_max_steps", "cannot be changed"),
    ("txt2img", {**SMALL, "override_settings": {"limit_max_upload_mb": 4096}}, "limit_max_upload_mb", "cannot be changed"),
    ("txt2img", {**SMALL, "override_settings": {"api_enable_requests": True}}, "api_enable_requests", "cannot be changed"),
    ("txt2img", {**SMALL, "override_settings": {"outdir_txt2img_samples": "/tmp/hanga-evil"}},
     "outdir_txt2img_samples", "inside the data folder"),
    ("txt2img", {**SMALL, "override_settings": {"outdir_samples": "../../evil"}}, "outdir_samples", "without '..'"),
    ("txt2img", {**SMALL, "override_settings": {"sd_model_checkpoint": "../../../etc/passwd"}},
     "override_settings.sd_model_checkpoint", "not found"),
    ("txt2img", {**SMALL, "override_settings": {"sd_vae": "../../x.safetensors"}}, "override_settings.sd_vae", "not found"),
    ("txt2img", {**SMALL, "save_images": True, "override_settings": {"directories_filename_pattern": "../../x",
                                                                     "save_to_dirs": True}},
     "directories_filename_pattern", "outside the output folder"),
    ("txt2img", {**SMALL, "alwayson_scripts": {"../../evil": {"args": []}}}, "alwayson_scripts", "not found"),
    ("txt2img", {**SMALL, "script_name": "../../evil.py"}, "script_name", "evil.py"),
    ("img2img", {**SMALL, "init_images": [BOMB]}, "init_images.0", "megapixels"),
    ("img2img", {**SMALL, "init_images": [b64(png())], "mask": BOMB}, "mask", "megapixels"),
    ("img2img", {**SMALL, "init_images": ["not base64 at all!"]}, "init_images.0", "not valid base64"),
    ("img2img", {**SMALL, "init_images": [b64(b"#!/bin/sh\nrm -rf /\n")]}, "init_images.0", "not a readable"),
    ("img2img", {**SMALL, "init_images": ["http://127.0.0.1:22/"]}, "init_images.0", "api_enable_requests"),
    ("img2img", {**SMALL, "init_images": ["file:///etc/passwd"]}, "init_images.0", "base64"),
    ("img2img", {**SMALL, "init_images": [b64(png())] * 2, "batch_size": 3}, "init_images", "one per image"),
    ("img2img", {**SMALL, "init_images": []}, "init_images", "at least one"),
    ("png-info", {"image": BOMB}, "image", "megapixels"),
    ("extra-single-image", {"image": BOMB, "upscaling_resize": 2}, "image", "megapixels"),
    ("options", {"outdir_samples": "/etc"}, "outdir_samples", "inside the data folder"),
    ("options", {"outdir_img2img_grids": "outputs/../../../elsewhere"}, "outdir_img2img_grids", "without '..'"),
    ("options", {"sd_model_checkpoint": "../../secret.ckpt"}, "sd_model_checkpoint", "not found"),
    ("options", {"sd_vae": "/etc/passwd"}, "sd_vae", "not found"),
    ("options", {"limit_max_side": 100_000}, "limit_max_side", "between 64 and 8192"),
    ("options", {"CLIP_stop_at_last_layers": "twelve"}, "CLIP_stop_at_last_layers", "must be int"),
]


def test_there_are_at_least_thirty_hostile_inputs():
    assert len(HOSTILE) >= 30


@pytest.mark.parametrize("route, body, field, phrase", HOSTILE, ids=[f"{i:02d}-{h[0]}-{h[2]}" for i, h in enumerate(HOSTILE)])
def test_hostile_request_is_refused_naming_the_field(client, app, route, body, field, phrase):
    before = app[0].settings.data()
    response = client.post(f"/sdapi/v1/{route}", json=body)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    error = response.json()
    message = error["errors"] if isinstance(error.get("errors"), str) else json.dumps(error["detail"])
    assert field in message and phrase in message, message[:500]
    assert len(response.text) < 10_000  # the hostile body is not echoed back whole
    assert app[0].settings.data() == before  # a refused POST /options changes nothing


def test_nan_and_non_json_bodies_are_refused(client):
    response = client.post("/sdapi/v1/txt2img", content=b'{"prompt": "x", "cfg_scale": NaN, "steps": 1}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 422 and "cfg_scale" in response.json()["errors"]
    for raw in (b"[1, 2, 3]", b"{not json", b"\xff\xfe\x00"):
        response = client.post("/sdapi/v1/txt2img", content=raw, headers={"content-type": "application/json"})
        assert response.status_code in (400, 422) and response.json()["detail"], raw


def test_oversized_bodies_are_refused_before_they_are_read(client, app):
    service = app[0]
    service.settings.set("limit_max_upload_mb", 1)
    try:
        response = client.post("/sdapi/v1/png-info", json={"image": "A" * (2 * 2**20)})
        assert response.status_code == 413 and "limit_max_upload_mb" in response.json()["detail"]

        def chunks():  # no Content-Length: counted as it arrives
            for _ in range(4):
                yield b"A" * 2**19

        response = client.post("/sdapi/v1/png-info", content=chunks(), headers={"content-type": "application/json"})
        assert response.status_code == 413 and "at most 1 MB" in response.json()["detail"]
        # The page's uploads go through the same gate.
        response = client.post("/gradio_api/upload", files={"files": ("big.png", b"\x89PNG" + bytes(2 * 2**20))})
        assert response.status_code == 413
    finally:
        service.settings.set("limit_max_upload_mb", 50)
    assert client.post("/sdapi/v1/txt2img", json=SMALL).status_code == 200  # and the server goes on


def test_limits_follow_the_settings(client, app):
    service = app[0]
    assert client.post("/sdapi/v1/txt2img", json={**SMALL, "steps": 3}).status_code == 200
    service.settings.update({"limit_max_steps": 2, "limit_max_side": 128})
    try:
        response = client.post("/sdapi/v1/txt2img", json={**SMALL, "steps": 3})
        assert response.status_code == 422 and "steps: must be at most 2" in response.json()["errors"]
        assert "Settings → Security and limits" in response.json()["errors"]
        response = client.post("/sdapi/v1/txt2img", json={**SMALL, "enable_hr": True, "hr_resize_x": 192, "hr_resize_y": 64})
        assert response.status_code == 422 and "192x192" in response.json()["errors"]
    finally:
        service.settings.update({"limit_max_steps": 150, "limit_max_side": 4096})
    assert client.post("/sdapi/v1/txt2img", json={**SMALL, "steps": 3}).status_code == 200


def test_folder_settings_inside_the_data_folder_are_accepted_over_the_api(client, app, data):
    service = app[0]
    response = client.post("/sdapi/v1/txt2img", json={**SMALL, "save_images": True,
                                                      "override_settings": {"outdir_txt2img_samples": "outputs/api-mine"}})
    assert response.status_code == 200, response.text
    assert list((data / "outputs" / "api-mine").rglob("*.png"))
    assert client.post("/sdapi/v1/options", json={"outdir_grids": "outputs/grids-here"}).status_code == 200
    assert service.settings.get("outdir_grids") == "outputs/grids-here"
    link = data / "outputs" / "leads-out"
    link.symlink_to(data.parent, target_is_directory=True)
    response = client.post("/sdapi/v1/options", json={"outdir_grids": "outputs/leads-out/x"})
    assert response.status_code == 422 and "outdir_grids" in response.json()["errors"]
    # The person at the Settings page may still choose any folder (it is their machine).
    service.settings.set("outdir_grids", str(data.parent / "elsewhere"))
    service.settings.set("outdir_grids", "")


def test_file_route_and_gradio_files_serve_nothing_outside_their_folders(client, data):
    secret = data.parent / "secret.txt"
    secret.write_text("do not serve")
    (data / "outputs").mkdir(exist_ok=True)
    (data / "outputs" / "link.png").symlink_to(secret)
    for path in ("/file=../../../../etc/passwd", f"/file={secret}", "/file=/etc/passwd",
                 f"/file={data / 'outputs' / 'link.png'}", "/file=%2e%2e/%2e%2e/etc/passwd",
                 f"/gradio_api/file={secret}", "/gradio_api/file=/etc/passwd",
                 f"/gradio_api/file={data / 'outputs' / 'link.png'}", f"/gradio_api/file={data / 'config.json'}"):
        response = client.get(path)
        assert response.status_code in (403, 404), (path, response.status_code)
        assert "do not serve" not in response.text and "root:" not in response.text


def test_name_fields_never_load_a_file_outside_their_folder(app, data, tmp_path):
    """Networks named in a prompt, VAE and checkpoint names are looked up among the files of their
    folders, so ``..`` or an absolute path finds nothing (and a pickle put outside never runs)."""
    service = app[0]
    marker = tmp_path / "MARKER"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    outside = data / "escape.pt"
    torch.save({"w": Payload()}, outside)
    base = Txt2ImgRequest(prompt="a cat", width=64, height=64, steps=1, seed=7)
    plain = service.txt2img(base)
    for prompt in ("a cat <lora:../escape:1>", "a cat <hypernet:../escape:1>", f"a cat <lora:{outside.with_suffix('')}:1>",
                   "a cat <lora:../../data/escape:1>", "a cat <hypernet:..\\escape:1>"):
        try:
            outcome = service.txt2img(Txt2ImgRequest(prompt=prompt, width=64, height=64, steps=1, seed=7))
        except InvalidRequest as error:  # a LoRA that is not there is refused by name
            assert str(error).startswith(("prompt: LoRA", "prompt: hypernetwork")) and "not found" in str(error)
            continue
        assert torch.equal(torch.tensor(list(outcome.processed.images[0].getdata())),
                           torch.tensor(list(plain.processed.images[0].getdata()))), prompt
        assert "escape" not in outcome.result.images[0].infotext.split("\n")[-1]  # no network hash of it
    (data / "embeddings").mkdir(exist_ok=True)
    service.txt2img(Txt2ImgRequest(prompt="../escape ../../data/escape escape", width=64, height=64, steps=1))
    assert not marker.exists()
    for field, overrides in (("override_settings.sd_vae", {"sd_vae": str(outside)}),
                             ("override_settings.sd_model_checkpoint", {"sd_model_checkpoint": str(outside)})):
        with pytest.raises(InvalidRequest, match=field.replace(".", r"\.")):
            service.txt2img(base, override_settings=overrides)
    assert not marker.exists()


def test_extension_and_gallery_names_stay_in_their_folders(app, data, tmp_path):
    from modules.service.extensions.install import install_from_url
    from modules.service.gallery import Gallery, GalleryError

    for dirname in ("../evil", "/tmp/evil", ".hidden", "a/../../b", "..\\evil"):
        with pytest.raises(InvalidRequest, match="dirname"):
            install_from_url("https://example.invalid/x.git", data / "extensions", tmp_path / "tmp", [], dirname=dirname)
    assert not (data / "evil").exists() and not (tmp_path / "tmp").exists()
    gallery = Gallery.for_paths(app[0].paths)
    (data / "outputs").mkdir(exist_ok=True)
    victim = data / "precious.png"
    victim.write_bytes(png())
    for relpath in ("../precious.png", str(victim), "txt2img-images/../../precious.png"):
        with pytest.raises(GalleryError):
            gallery.delete(relpath)
    assert victim.exists()


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    raw = bomb_png()
    assert len(raw) < 1_000_000
    with pytest.raises(ImageTooLarge, match="10000x10000"):
        read_image(raw, name="the upload")
    path = tmp_path / "bomb.png"
    path.write_bytes(raw)
    with pytest.raises(ImageTooLarge, match="bomb.png"):
        read_image(path, name="bomb.png")
    assert read_image(raw, max_pixels=10_000 * 10_000).size == (10_000, 10_000)  # genuine: it does decode
    with pytest.raises(ImageTooLarge):  # Pillow's own limit (about 179 MP) holds even above ours
        read_image(bomb_png(14_000, 14_000), max_pixels=10**9)


def test_img2img_batch_skips_a_bomb_and_goes_on(app, data, tmp_path, caplog):
    from modules.core.generation.request import Img2ImgRequest
    from modules.service.batch import img2img_batch

    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "a-bomb.png").write_bytes(bomb_png())
    (folder / "b-fine.png").write_bytes(png())
    request = Img2ImgRequest(init_images=(Image.new("RGB", (64, 64)),), width=64, height=64, steps=1, seed=1)
    outcomes = img2img_batch(app[0], request, str(folder), str(tmp_path / "out"))
    assert len(outcomes) == 1 and "a-bomb.png" in caplog.text and "megapixels" in caplog.text
    assert [p.name[-10:] for p in (tmp_path / "out").glob("*.png")] == ["b-fine.png"]


def test_out_of_memory_frees_memory_advises_and_the_server_goes_on(client, app, monkeypatch):
    import weakref

    import modules.service.generation as generation

    held = []

    def exhausted(*args, **kwargs):
        activations = torch.ones(1024, 1024)
        held.append(weakref.ref(activations))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 8.00 GiB total capacity)")

    monkeypatch.setattr(generation, "run_txt2img", exhausted)
    response = client.post("/sdapi/v1/txt2img", json={**SMALL, "batch_size": 2})
    assert response.status_code == 503
    message = response.json()["errors"]
    assert message.startswith("Out of GPU memory while generating 64x64, batch size 2 (CUDA out of memory. Tried")
    assert "--medvram" in message and "smaller batch size" in message and "smaller width and height" in message
    assert held and held[0]() is None  # the failed job's tensors were let go
    monkeypatch.undo()
    assert client.post("/sdapi/v1/txt2img", json=SMALL).status_code == 200


def test_hide_ui_dir_config_locks_the_folder_settings(data):
    flags = parse_flags(["--api", "--data-dir", str(data), "--skip-torch-cuda-test", "--use-cpu", "all",
                         "--hide-ui-dir-config"])
    service = webui.create_service(flags)
    locked = TestClient(build_app(service, flags))
    for route, body in (("options", {"outdir_samples": "outputs/x"}),
                        ("txt2img", {**SMALL, "override_settings": {"outdir_txt2img_samples": "outputs/x"}})):
        response = locked.post(f"/sdapi/v1/{route}", json=body)
        assert response.status_code == 422 and "--hide-ui-dir-config" in response.json()["errors"]
    labels = {c.get("props", {}).get("label") for c in locked.get("/config").json()["components"]}
    assert "Output directory for images; if empty, per-tab directories" not in labels
    assert "Always save all generated images" in labels  # the rest of the Settings page is there
