"""Textual-inversion files from the embeddings folder: each §5.7 format is read, a wrong width is
skipped, the prompt uses the vectors, "TI hashes" names what the prompts used, and a changed file
is read again."""

from __future__ import annotations

import base64
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from safetensors.torch import save_file

from modules.core.conditioning.embedding_files import embedding_in_image, embedding_vectors
from modules.core.generation.request import Txt2ImgRequest
from modules.core.infotext import parse_infotext

WIDTH = 64  # the tiny text encoder's


def vectors(count=2, width=WIDTH, seed=0):
    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed))


def webui(vec):
    return {"string_to_token": {"*": 265}, "string_to_param": {"*": vec}, "name": "x", "step": 100,
            "sd_checkpoint": "abc", "sd_checkpoint_name": "model"}


def test_every_format_gives_its_vectors():
    vec = vectors()
    assert torch.equal(embedding_vectors(webui(vec)), vec)
    assert torch.equal(embedding_vectors({"<concept>": vec[0]}), vec[:1])  # a 1-D concept is one vector
    pair = embedding_vectors({"clip_l": vectors(width=768), "clip_g": vectors(width=1280)})
    assert set(pair) == {"clip_l", "clip_g"}
    with pytest.raises(ValueError, match="not an embedding"):
        embedding_vectors({"a": vec, "b": vec})


def image_with_embedding(name, vec) -> Image.Image:
    payload = {"string_to_param": {"*": {"TORCHTENSOR": vec.tolist()}}, "name": name}
    info = PngInfo()
    info.add_text("sd-ti-embedding", base64.b64encode(json.dumps(payload).encode()).decode())
    image = Image.new("RGB", (16, 16))
    image.info["pnginfo"] = info
    return image, info


def test_an_embedding_carried_in_a_png(tmp_path):
    vec = vectors(seed=3)
    image, info = image_with_embedding("in-a-picture", vec)
    image.save(tmp_path / "card.png", pnginfo=info)
    with Image.open(tmp_path / "card.png") as opened:
        data = embedding_in_image(opened)
    assert data["name"] == "in-a-picture"
    torch.testing.assert_close(embedding_vectors(data), vec)


REQUEST = Txt2ImgRequest(prompt="a photo of a cat", negative_prompt="blurry", seed=2, steps=3, width=64, height=64,
                         sampler_name="Euler")


def generate(service, prompt, negative="blurry"):
    from dataclasses import replace

    result = service.txt2img(replace(REQUEST, prompt=prompt, negative_prompt=negative), save_images=False).result
    return np.asarray(result.images[0].image).astype(int), result.infotexts[0]


@pytest.fixture
def folder(service, data_dir):
    path = data_dir / "embeddings"
    (path / "sub").mkdir(parents=True)
    torch.save(webui(vectors(seed=1)), path / "sub" / "mystyle.pt")
    save_file({"emb_params": vectors(seed=2)}, str(path / "concept.safetensors"))
    save_file({"clip_l": vectors(width=768), "clip_g": vectors(width=1280)}, str(path / "xl-only.safetensors"))
    torch.save(webui(vectors(width=1024)), path / "sd2-only.pt")
    image, info = image_with_embedding("pictured", vectors(seed=4))
    image.save(path / "card.png", pnginfo=info)
    Image.new("RGB", (8, 8)).save(path / "mystyle.preview.png")
    return path


def test_prompt_names_pick_their_vectors_and_ti_hashes_lists_the_used_ones(service, folder):
    plain, plain_text = generate(service, "a photo of a cat")
    styled, text = generate(service, "a photo of a cat, mystyle", negative="concept")
    assert not np.array_equal(plain, styled)
    assert "TI hashes" not in plain_text
    params = parse_infotext(text)
    hashes = dict(pair.split(": ") for pair in params["TI hashes"].split(", "))
    assert set(hashes) == {"mystyle", "concept"} and all(len(value) == 12 for value in hashes.values())
    line = text.split("\n")[-1]
    assert line.index("TI hashes") > line.index("Model: ")
    pictured, _ = generate(service, "a photo of a cat, pictured")
    assert not np.array_equal(pictured, plain) and not np.array_equal(pictured, styled)
    assert set(service.embeddings.skipped) == {"xl-only", "sd2-only"}


def test_a_changed_file_is_read_again(service, folder):
    first, _ = generate(service, "mystyle")
    path = folder / "sub" / "mystyle.pt"
    torch.save(webui(vectors(seed=9)), path)
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + 5))
    second, _ = generate(service, "mystyle")
    assert not np.array_equal(first, second)
