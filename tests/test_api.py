"""/sdapi/v1 slice, wired exactly as ``webui.py`` wires it (flags → service → app)."""

from __future__ import annotations

import base64
import io
import json
import shutil

import pytest
from fastapi.testclient import TestClient
from PIL import Image

import webui
from modules.core.flags import parse_flags
from modules.core.infotext import parse_infotext
from modules.ui.server import build_app

# A1111's Processed.js() keys, in order (a1111-compat.md §8, §11.1).
INFO_KEYS = [
    "prompt", "all_prompts", "negative_prompt", "all_negative_prompts", "seed", "all_seeds", "subseed",
    "all_subseeds", "subseed_strength", "width", "height", "sampler_name", "cfg_scale", "steps", "batch_size",
    "restore_faces", "face_restoration_model", "sd_model_name", "sd_model_hash", "sd_vae_name", "sd_vae_hash",
    "seed_resize_from_w", "seed_resize_from_h", "denoising_strength", "extra_generation_params",
    "index_of_first_image", "infotexts", "styles", "job_timestamp", "clip_skip",
    "is_using_inpainting_conditioning", "version",
]


def make_client(data_dir, *extra) -> TestClient:
    flags = parse_flags(["--api", "--data-dir", str(data_dir), "--skip-torch-cuda-test", "--use-cpu", "all", *extra])
    return TestClient(build_app(webui.create_service(flags), flags))


@pytest.fixture(scope="module")
def api_data(tmp_path_factory, tiny_checkpoint):
    folder = tmp_path_factory.mktemp("api") / "data"
    (folder / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, folder / "models" / "Stable-diffusion" / tiny_checkpoint.name)
    return folder


@pytest.fixture(scope="module")
def client(api_data):
    return make_client(api_data)


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_txt2img_returns_pngs_with_infotext_and_a1111_info(client, api_data):
    body = {"prompt": "a cat", "negative_prompt": "dog", "width": 64, "height": 64, "steps": 4, "seed": 11,
            "batch_size": 2, "sampler_name": "Euler a", "url": "ignored", "clip_skip": None, "hr_checkpoint_name": None}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    info = json.loads(data["info"])
    assert list(info) == INFO_KEYS
    assert info["all_seeds"] == [11, 12] and info["sampler_name"] == "Euler a" and info["clip_skip"] == 1
    assert info["sd_model_name"] == "tiny-sd1" and len(info["sd_model_hash"]) == 10
    assert isinstance(info["job_timestamp"], str) and len(info["job_timestamp"]) == 14
    assert len(data["images"]) == 2
    for b64, infotext in zip(data["images"], info["infotexts"]):
        assert not b64.startswith("data:")
        image = decode(b64)
        assert image.format == "PNG" and image.size == (64, 64)
        assert image.info["parameters"] == infotext
    params = parse_infotext(info["infotexts"][1])
    assert params["Seed"] == "12" and params["Negative prompt"] == "dog" and params["Sampler"] == "Euler a"
    assert data["parameters"]["prompt"] == "a cat" and data["parameters"]["steps"] == 4
    assert "url" not in data["parameters"]
    assert not (api_data / "outputs").exists()  # the API does not save unless asked


def test_api_defaults_are_a1111s(client):
    response = client.post("/sdapi/v1/txt2img", json={"width": 64, "height": 64, "seed": 1})
    info = json.loads(response.json()["info"])
    assert info["steps"] == 50 and info["sampler_name"] == "Euler" and info["cfg_scale"] == 7
    assert "Steps: 50, Sampler: Euler, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 64x64" in info["infotexts"][0]


def test_legacy_sampler_names_and_scheduler_labels(client):
    for body in ({"sampler_name": "DPM++ 2M Karras"}, {"sampler_index": "k_dpmpp_2m", "scheduler": "karras"}):
        response = client.post("/sdapi/v1/txt2img", json={**body, "width": 64, "height": 64, "steps": 3, "seed": 5})
        text = json.loads(response.json()["info"])["infotexts"][0]
        assert "Sampler: DPM++ 2M, Schedule type: Karras" in text


def test_save_images_writes_the_same_png(client, api_data):
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "saved", "width": 64, "height": 64, "steps": 3, "seed": 9, "save_images": True})
    returned = decode(response.json()["images"][0])
    files = list((api_data / "outputs" / "txt2img-images").rglob("*-9-saved.png"))
    assert len(files) == 1
    with Image.open(files[0]) as on_disk:
        assert on_disk.info["parameters"] == returned.info["parameters"]
        assert on_disk.tobytes() == returned.tobytes()


def test_invalid_fields_are_422_with_the_field_named(client):
    response = client.post("/sdapi/v1/txt2img", json={"width": 100})
    assert response.status_code == 422
    assert response.json()["detail"] == "width: must be a multiple of 8; got 100"
    response = client.post("/sdapi/v1/txt2img", json={"steps": "many"})
    assert response.status_code == 422
    response = client.post("/sdapi/v1/txt2img", json={"width": 64, "height": 64, "override_settings": {"randn_source": "dice"}})
    assert response.status_code == 422 and "randn_source" in response.json()["detail"]


def test_sd_models_lists_titles_and_hashes(client, api_data):
    models = client.get("/sdapi/v1/sd-models").json()
    assert len(models) == 1
    model = models[0]
    assert set(model) == {"title", "model_name", "hash", "sha256", "filename", "config"}
    assert model["model_name"] == "tiny-sd1" and model["filename"].endswith("tiny-sd1.safetensors")
    assert model["title"] == f"tiny-sd1.safetensors [{model['hash']}]" and model["sha256"].startswith(model["hash"])


def test_png_info_reads_back_parameters(client):
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "round trip", "width": 64, "height": 64, "steps": 3, "seed": 21})
    b64 = response.json()["images"][0]
    for payload in (b64, "data:image/png;base64," + b64):
        info = client.post("/sdapi/v1/png-info", json={"image": payload}).json()
        assert info["info"].startswith("round trip\nSteps: 3")
        assert info["parameters"]["Seed"] == "21" and info["parameters"]["Prompt"] == "round trip"
    bad = client.post("/sdapi/v1/png-info", json={"image": "bm90IGFuIGltYWdl"})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("image:")


def test_get_on_post_route_is_405_and_unknown_route_404(client):
    assert client.get("/sdapi/v1/txt2img").status_code == 405
    assert client.get("/sdapi/v1/no-such-thing").status_code == 404


def test_api_auth(api_data):
    secured = make_client(api_data, "--api-auth", "alice:s3cret,bob:pw")
    anonymous = secured.get("/sdapi/v1/sd-models")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Basic"
    assert secured.get("/sdapi/v1/sd-models", auth=("alice", "wrong")).status_code == 401
    assert secured.get("/sdapi/v1/sd-models", auth=("bob", "pw")).status_code == 200

    import base64

    def basic(user: str, password: str) -> dict:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    accented = make_client(api_data, "--api-auth", "zoë:pässwört")  # non-ASCII: compared as bytes, no 500
    assert accented.get("/sdapi/v1/sd-models", headers=basic("zoë", "pässwört")).status_code == 200
    assert accented.get("/sdapi/v1/sd-models", headers=basic("zoë", "passwort")).status_code == 401


def test_credentials_are_compared_pair_by_pair_in_full():
    from modules.service.api.auth import credentials_match

    pairs = [("alice", "s3cret"), ("bob", "pw")]
    assert credentials_match(pairs, "bob", "pw") and credentials_match(pairs, "alice", "s3cret")
    assert not credentials_match(pairs, "alice", "pw") and not credentials_match(pairs, "bob", "s3cret")
    assert not credentials_match(pairs, "", "") and not credentials_match([], "alice", "s3cret")
    assert credentials_match([("émile", "ça-va")], "émile", "ça-va") and not credentials_match([("émile", "ça-va")], "emile", "ça-va")


def test_api_is_absent_without_the_flag(api_data):
    flags = parse_flags(["--data-dir", str(api_data), "--skip-torch-cuda-test"])
    plain = TestClient(build_app(webui.create_service(flags), flags))
    assert plain.get("/sdapi/v1/sd-models").status_code == 404
