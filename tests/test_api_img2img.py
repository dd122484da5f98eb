"""/sdapi/v1/img2img and the hires and script fields of /sdapi/v1/txt2img, wired as webui.py wires them."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from PIL import Image, ImageDraw

from modules.core.infotext import parse_infotext
from tests.test_api import INFO_KEYS, api_data, client, decode  # noqa: F401  (fixtures)


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def source() -> Image.Image:
    image = Image.new("RGB", (64, 64), (30, 120, 200))
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=(220, 60, 40))
    return image


def mask() -> Image.Image:
    image = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(image).rectangle((20, 20, 44, 44), fill=255)
    return image


BODY = dict(prompt="a red cat", seed=5, steps=3, width=64, height=64, sampler_name="Euler")


def test_img2img_returns_images_info_and_echoes_parameters_without_the_inputs(client):
    response = client.post("/sdapi/v1/img2img", json={**BODY, "init_images": [b64(source())], "denoising_strength": 0.5})
    assert response.status_code == 200, response.text
    body = response.json()
    info = json.loads(body["info"])
    assert list(info) == INFO_KEYS
    assert info["denoising_strength"] == 0.5
    assert body["parameters"]["init_images"] is None
    image = decode(body["images"][0])
    assert image.size == (64, 64)
    assert parse_infotext(image.info["parameters"])["Denoising strength"] == "0.5"


def test_img2img_inpaint_with_api_defaults_keeps_the_outside(client):
    response = client.post("/sdapi/v1/img2img", json={**BODY, "init_images": [b64(source())], "mask": b64(mask()),
                                                      "mask_blur": 0})
    assert response.status_code == 200, response.text
    body = response.json()
    image = np.asarray(decode(body["images"][0]).convert("RGB")).astype(int)
    keep = np.asarray(mask()) == 0
    assert np.array_equal(image[keep], np.asarray(source()).astype(int)[keep])
    params = parse_infotext(json.loads(body["info"])["infotexts"][0])
    # A1111's API defaults: masked content "fill", inpaint area "Only masked", padding 0.
    assert params["Masked content"] == "fill" and params["Inpaint area"] == "Only masked"
    assert params["Masked area padding"] == "0"


def test_img2img_bad_input_names_the_field(client):
    for body, field in (
        ({**BODY}, "init_images"),
        ({**BODY, "init_images": ["not base64 at all!"]}, "init_images"),
        ({**BODY, "init_images": [b64(source())], "mask": "???"}, "mask"),
        ({**BODY, "init_images": [b64(source())], "inpainting_fill": 9}, "inpainting_fill"),
        ({**BODY, "init_images": [b64(source())], "script_name": "nope"}, "script_name"),
    ):
        response = client.post("/sdapi/v1/img2img", json=body)
        assert response.status_code == 422, body
        assert response.json()["detail"].startswith(field), response.json()
    assert client.get("/sdapi/v1/sd-models").status_code == 200  # still up


def test_txt2img_hires_fields(client):
    response = client.post("/sdapi/v1/txt2img", json={**BODY, "enable_hr": True, "hr_scale": 1.5,
                                                      "hr_second_pass_steps": 2, "hr_upscaler": "Nearest"})
    assert response.status_code == 200, response.text
    image = decode(response.json()["images"][0])
    assert image.size == (96, 96)
    params = parse_infotext(image.info["parameters"])
    assert (params["Hires upscale"], params["Hires upscaler"], params["Denoising strength"]) == ("1.5", "Nearest", "0.75")
    assert json.loads(response.json()["info"])["denoising_strength"] == 0.75


def test_txt2img_runs_a_script_by_name_with_positional_args(client):
    body = {**BODY, "script_name": "x/y/z plot",  # A1111 matches the title case-insensitively
            "script_args": [4, "1-2", None, 0, "", None, 0, "", None, True, False, False, False, False, False, False, 0, False]}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert info["index_of_first_image"] == 1
    grid = parse_infotext(info["infotexts"][0])
    assert grid["Script"] == "X/Y/Z plot" and grid["X Type"] == "Steps"
